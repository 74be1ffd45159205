"""Sphinx extension for the course site (book/_config.yml loads it): each lecture as reveal.js slides.

At the end of an HTML build, every executed lecture (``course/*.ipynb``) is exported with
nbconvert's SlidesExporter next to its page, as ``course/<name>.slides.html``, and the
lecture page gets a "Slides" link under its title. The slides use the cells'
``metadata.slideshow.slide_type`` (the same metadata RISE uses in JupyterLab).

* No second execution: the outputs come from the build's jupyter-cache
  (``_build/.jupyter_cache``, ``execute_notebooks: cache``), merged into the lecture as it is
  now, so its current slide metadata counts. (``_build/jupyter_execute/`` is no substitute:
  myst-nb writes it without outputs when the cache had them.) Without a cache entry, the
  notebook in ``jupyter_execute/`` is used (other execution modes run it in place).
* Offline, from ``file://`` and from ``python -m http.server``: reveal.js is the copy the
  ``sphinx-revealjs`` package ships (copied to ``_static/revealjs/``), MathJax the site's own
  (``_static/mathjax/``, see static_site.py); the template (slides.html.j2) loads neither
  jQuery, RequireJS, Mermaid nor the widget manager from a CDN, as nbconvert's would.
* ipywidgets outputs become the outputs they held when the lecture ran: an ``interact``
  shows its plot, a quiz its questions and options (static; live in JupyterLab).
"""

from __future__ import annotations

import html
import importlib.metadata
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

LECTURE_PREFIX = "course/"        # pages under this folder that are notebooks get slides
SLIDES_SUFFIX = ".slides.html"
TEMPLATE = Path(__file__).with_name("slides.html.j2")
# The part of reveal.js the slides load (the theme's CSS imports its fonts from fonts/).
REVEAL_FILES = ("dist/reveal.js", "dist/reveal.css", "dist/theme/white.css",
                "dist/theme/fonts/source-sans-pro", "plugin/notes/notes.js")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MODEL_PREFIX = "IPY_MODEL_"


def reveal_source() -> Path:
    """The reveal.js folder (``dist/``, ``plugin/``) inside the installed sphinx-revealjs."""
    try:
        files = importlib.metadata.files("sphinx-revealjs") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.as_posix().endswith("revealjs/dist/reveal.js"):
            return Path(f.locate()).parents[1]
    raise ExtensionError("sphinx-revealjs (it ships reveal.js) is not installed (pip install -e '.[book]')")


def slides_name(docname: str) -> str:
    """``course/01_x`` -> ``01_x.slides.html``: the slides' file name, next to the page."""
    return docname.rsplit("/", 1)[-1] + SLIDES_SUFFIX


def _lecture_docnames(app: Sphinx) -> list[str]:
    """Docnames of the pages that get slides: the notebooks under ``course/``."""
    return sorted(d for d in app.env.found_docs
                  if d.startswith(LECTURE_PREFIX) and str(app.env.doc2path(d)).endswith(".ipynb"))


# --------------------------------------------------------------------------- widgets, statically
def _hidden(state: dict, widget_state: dict) -> bool:
    """A widget its code hid (layout display none / visibility hidden), e.g. a quiz's answer."""
    ref = widget_state.get("layout", "")
    layout = state.get(ref[len(MODEL_PREFIX):], {}) if isinstance(ref, str) else {}
    return layout.get("state", {}).get("display") == "none" or layout.get("state", {}).get("visibility") == "hidden"


def _html_output(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"text/html": text})


def widget_outputs(state: dict, model_id: str | None, depth: int = 0) -> list[nbformat.NotebookNode]:
    """Plain outputs for one widget and its children, from the widget state the execution saved.

    An Output widget gives the outputs it captured (an ``interact``'s plot); HTML and Label
    widgets their text; choice widgets (a quiz's options) a list. Controls (sliders, buttons,
    text boxes) and hidden widgets give nothing.
    """
    model = state.get(model_id or "")
    if model is None or depth > 20:
        return []
    name, st = model.get("model_name", ""), model.get("state", {})
    if _hidden(state, st):
        return []
    out: list[nbformat.NotebookNode] = []
    if name == "OutputModel":
        out.extend(nbformat.from_dict(o) for o in st.get("outputs", []))
    elif name in ("HTMLModel", "HTMLMathModel") and st.get("value"):
        out.append(_html_output(st["value"]))
    elif name == "LabelModel" and st.get("value"):
        out.append(_html_output(f"<p>{html.escape(st['value'])}</p>"))
    elif st.get("_options_labels"):  # RadioButtons, Dropdown, ToggleButtons, Select...
        items = "".join(f"<li>{html.escape(str(label))}</li>" for label in st["_options_labels"])
        title = f"<p>{html.escape(st['description'])}</p>" if st.get("description") else ""
        out.append(_html_output(f'{title}<ul class="rlcourse-widget-options">{items}</ul>'))
    for child in st.get("children", []):  # boxes (VBox, HBox, interact's container)
        if isinstance(child, str) and child.startswith(MODEL_PREFIX):
            out.extend(widget_outputs(state, child[len(MODEL_PREFIX):], depth + 1))
    return out


def without_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with every widget view replaced by :func:`widget_outputs` and no widget state left
    (nbconvert would otherwise load the widget manager from a CDN)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
            else:
                outputs.extend(widget_outputs(state, view.get("model_id")))
        cell.outputs = outputs
    return nb


# --------------------------------------------------------------------------- export
def export_slides(nb: nbformat.NotebookNode, target: Path, static_prefix: str) -> None:
    """Write the executed notebook ``nb`` as reveal.js slides to ``target``.

    ``static_prefix`` is the site's ``_static`` folder relative to ``target``'s folder; the
    slides load reveal.js and MathJax from there and nothing from the network.
    """
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        template_file=TEMPLATE.name, extra_template_paths=[str(TEMPLATE.parent)],
        reveal_url_prefix=f"{static_prefix}/revealjs", mathjax_url=f"{static_prefix}/mathjax/tex-svg.js",
        reveal_theme="white", reveal_transition="none", reveal_number="c/t", reveal_width="1280", reveal_height="720",
        exclude_input_prompt=True, exclude_output_prompt=True)
    first = nb.cells[0].source.strip().splitlines() if nb.cells and nb.cells[0].source.strip() else [target.stem]
    title = first[0].lstrip("# ")  # the lecture's title: the slides' <title>
    body, _ = exporter.from_notebook_node(without_widgets(nb), resources={"metadata": {"name": title}})
    # What the page loads (src=, stylesheets), not where its links point: a lecture may link to a
    # web page, or print a TensorBoard URL, without the slides needing the network.
    leaks = (re.findall(r"""\bsrc=["'](?:https?:)?//[^"']+""", body)
             + re.findall(r"""<link\b[^>]*\bhref=["'](?:https?:)?//[^"']+""", body))
    if leaks:
        raise ExtensionError(f"{target.name} would load from the network: {sorted(set(leaks))[:5]}")
    target.write_text(body, encoding="utf-8")


def executed_notebook(source: Path, cache: Path | None, executed: Path) -> nbformat.NotebookNode:
    """The lecture ``source`` with the outputs of its execution in this build.

    From the jupyter-cache at ``cache`` when it holds this notebook's code (cell metadata stays
    the source's), else the notebook myst-nb wrote to ``executed``, else ``source`` unexecuted.
    """
    notebook = nbformat.read(source, as_version=4)
    if cache is not None and cache.exists():
        from jupyter_cache import get_cache

        try:
            return get_cache(str(cache)).merge_match_into_notebook(notebook, cell_meta=())[1]
        except KeyError:  # not cached (changed since, or another execution mode)
            pass
    return nbformat.read(executed, as_version=4) if executed.exists() else notebook


def _copy_reveal(static: Path) -> None:
    source, target = reveal_source(), static / "revealjs"
    for rel in REVEAL_FILES:
        src, dst = source / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)


def _write_slides(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    cache_path = getattr(app.config, "nb_execution_cache_path", "") or outdir.parent / ".jupyter_cache"
    _copy_reveal(outdir / "_static")
    for docname in _lecture_docnames(app):
        source = Path(app.env.doc2path(docname))
        executed = outdir.parent / "jupyter_execute" / f"{docname}.ipynb"
        target = outdir / Path(docname).parent / slides_name(docname)
        inputs = [p for p in (source, executed, Path(cache_path), TEMPLATE, Path(__file__)) if p.exists()]
        if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
            continue  # nothing changed since the last build
        nb = executed_notebook(source, Path(cache_path), executed)
        export_slides(nb, target, "../" * docname.count("/") + "_static")


def _add_slides_link(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """A "Slides" link under the lecture page's title."""
    if pagename not in _lecture_docnames(app) or "body" not in context:
        return
    link = (f'<p class="rlcourse-slides-link"><a class="reference external" href="{slides_name(pagename)}">'
            "Slides</a> for presenting this lecture (reveal.js: arrow keys to move, <kbd>S</kbd> for "
            "speaker notes, <kbd>F</kbd> for full screen)</p>")
    context["body"] = re.sub(r"(</h1>)", r"\1" + link.replace("\\", r"\\"), context["body"], count=1)


def setup(app: Sphinx) -> dict[str, Any]:
    reveal_source()  # fail early, with the fix, when the package is missing
    app.connect("html-page-context", _add_slides_link)
    app.connect("build-finished", _write_slides)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
