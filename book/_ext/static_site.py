"""Sphinx extension for the course site (book/_config.yml loads it): offline, static, student-safe.

* MathJax from a pip-installed copy (the ``sphinx-mathjax-offline`` package ships MathJax 3),
  served from ``_static/mathjax/``: the site renders math without network access, also from
  ``file://``. The SVG output needs no web fonts.
* ipywidgets outputs rendered from the widget state the execution saved in the notebook: an
  ``interact`` shows the plot its Output widget held when the lecture ran, text widgets show
  their text, choices list their options. Without this, a static page would load the widget
  manager from a CDN, or show nothing.
* Search works from ``file://`` too (results without snippets there, which need fetch()).
* No sphinx-thebe assets on the pages (unused; they point at a CDN).
* The build fails when a page holds an nbgrader solution or hidden-test marker.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

import myst_nb.sphinx_
from myst_nb.core.render import MimeData, NbElementRenderer, get_mime_priority

MATHJAX_FILE = "tex-svg.js"
RENDERER_NAME = "rlcourse-static"
# Markers of nbgrader's instructor notebooks (solutions/): none may reach the site.
FORBIDDEN_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MODEL_PREFIX = "IPY_MODEL_"
LOCAL_IFRAME = re.compile(r"<iframe[^>]*src=[\"']https?://(localhost|127\.0\.0\.1)[:/]", re.I)


def mathjax_source() -> Path:
    """MathJax's single-file TeX-to-SVG bundle inside the installed sphinx-mathjax-offline."""
    try:
        files = importlib.metadata.files("sphinx-mathjax-offline") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == MATHJAX_FILE:
            return Path(f.locate())
    raise ExtensionError("sphinx-mathjax-offline is not installed (pip install -e '.[book]')")


def _tex_delimiters(text: str) -> str:
    """HTMLMath's ``$...$`` / ``$$...$$`` as the ``\\(...\\)`` / ``\\[...\\]`` the site's MathJax typesets."""
    text = re.sub(r"\$\$(.+?)\$\$", r"\\[\1\\]", text, flags=re.S)
    return re.sub(r"(?<!\\)\$(.+?)(?<!\\)\$", r"\\(\1\\)", text, flags=re.S)


class StaticWidgetRenderer(NbElementRenderer):
    """myst-nb's renderer, with ipywidgets drawn from their saved state instead of by JavaScript."""

    def render_nb_finalise(self, metadata: dict) -> None:
        # The base class embeds the widget state and the CDN widget manager; both are replaced here.
        pass

    def render_text_html(self, data: MimeData) -> list[nodes.Element]:
        # An IFrame of a server the lecture started (TensorBoard on localhost) died with the
        # build's kernel: on the site it would be a broken frame, so say what was there.
        if LOCAL_IFRAME.search(data.string):
            return [nodes.paragraph(text="[A live view of a local server (TensorBoard) is shown here when the "
                                         "notebook runs in Jupyter.]", classes=["rlcourse-live-only"])]
        return super().render_text_html(data)

    def render_widget_view(self, data: MimeData) -> list[nodes.Element]:
        notebook = self.renderer.nb_client.notebook
        state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        model_id = json.loads(data.string).get("model_id") if isinstance(data.content, str) else data.content.get("model_id")
        found = self._widget(state, model_id, data, depth=0)
        if not found:
            return []
        box = nodes.container(classes=["rlcourse-static-widget"])
        box.extend(found)
        return [box]

    # ------------------------------------------------------------------ one widget, recursively
    def _widget(self, state: dict, model_id: str | None, data: MimeData, depth: int,
                controls: list[str] | None = None) -> list[nodes.Element]:
        """Docutils nodes for one widget and its children.

        Inside an ``interact`` (``controls`` is a list), the controls' settings are collected
        for a caption ("shown for γ = 0.9") instead of being drawn; elsewhere (a quiz, a panel)
        text widgets show their text and choice widgets list their options.
        """
        model = state.get(model_id or "")
        if model is None or depth > 20:
            return []
        name, st = model.get("model_name", ""), model.get("state", {})
        if self._hidden(state, st):
            return []
        out: list[nodes.Element] = []
        if name == "OutputModel":
            for i, output in enumerate(st.get("outputs", [])):
                out.extend(self._output(output, data, i))
        elif name in ("HTMLModel", "HTMLMathModel"):
            if st.get("value"):
                value = _tex_delimiters(st["value"]) if name == "HTMLMathModel" else st["value"]
                out.append(nodes.raw(text=f'<div class="rlcourse-widget-html tex2jax_process">{value}</div>',
                                     format="html"))
        elif name == "LabelModel":
            if st.get("value"):
                out.append(nodes.paragraph(text=st["value"]))
        elif controls is not None and ("value" in st or "index" in st):  # a control of an interact
            labels = st.get("_options_labels")
            value = labels[st["index"]] if labels and isinstance(st.get("index"), int) else st.get("value")
            if isinstance(value, float):
                value = f"{value:.3g}"
            controls.append(f"{st.get('description') or '?'} = {value}")
        elif st.get("_options_labels"):  # RadioButtons, Dropdown, ToggleButtons, Select...
            if st.get("description"):
                out.append(nodes.paragraph(text=st["description"]))
            items = nodes.bullet_list(classes=["rlcourse-widget-options"])
            for label in st["_options_labels"]:
                items.append(nodes.list_item("", nodes.paragraph(text=str(label))))
            out.append(items)
        interact = "widget-interact" in st.get("_dom_classes", [])
        inner = [] if interact else controls
        for child in st.get("children", []):  # boxes (VBox, HBox, interact's container)
            if isinstance(child, str) and child.startswith(MODEL_PREFIX):
                out.extend(self._widget(state, child[len(MODEL_PREFIX):], data, depth + 1, inner))
        if interact:
            note = "Interactive in JupyterLab; shown here for " + (", ".join(inner) or "its defaults") + "."
            out.insert(0, nodes.paragraph(text=note, classes=["rlcourse-widget-caption"]))
        return out

    @staticmethod
    def _hidden(state: dict, widget_state: dict) -> bool:
        """A widget its code hid (layout display none / visibility hidden), e.g. a quiz's answer."""
        layout_ref = widget_state.get("layout", "")
        layout = state.get(layout_ref[len(MODEL_PREFIX):], {}) if isinstance(layout_ref, str) else {}
        lst = layout.get("state", {})
        return lst.get("display") == "none" or lst.get("visibility") == "hidden"

    def _output(self, output: dict, data: MimeData, index: int) -> list[nodes.Element]:
        """One output captured by an Output widget, rendered like a cell output."""
        kind = output.get("output_type")
        if kind == "stream":
            block = nodes.literal_block(text=output.get("text", ""), classes=["output", "stream"])
            return [block]
        if kind in ("display_data", "execute_result"):
            bundle = output.get("data", {})
            for mime in get_mime_priority("html", self.config.mime_priority_overrides):
                if mime in bundle and mime != data.mime_type:
                    return self.render_mime_type(MimeData(
                        mime, bundle[mime], cell_metadata=data.cell_metadata,
                        output_metadata=output.get("metadata", {}), cell_index=data.cell_index,
                        output_index=1000 + index, line=data.line))
        return []


def _register_renderer() -> None:
    """Make ``nb_render_plugin: rlcourse-static`` (book/_config.yml) resolve to StaticWidgetRenderer.

    myst-nb looks renderers up by entry point; this build-local one is put in front of that
    lookup instead, so the course package need not advertise a module that lives outside it.
    """
    if not hasattr(myst_nb.sphinx_, "load_renderer"):
        raise ExtensionError("this myst-nb has no myst_nb.sphinx_.load_renderer; update book/_ext/static_site.py")
    lookup = myst_nb.sphinx_.load_renderer
    if getattr(lookup, "rlcourse_static", False):
        return

    def load_renderer(name: str) -> type[NbElementRenderer]:
        return StaticWidgetRenderer if name == RENDERER_NAME else lookup(name)

    load_renderer.rlcourse_static = True  # type: ignore[attr-defined]
    myst_nb.sphinx_.load_renderer = load_renderer


def _offline_mathjax(app: Sphinx, config: Any) -> None:
    config.mathjax_path = f"mathjax/{MATHJAX_FILE}"  # relative: served from _static/


def _drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """No thebe on the pages: jupyter-book always loads sphinx-thebe, which points at a CDN and,
    added twice, declares ``THEBE_JS_URL`` twice (a JavaScript error on every page)."""
    def thebe(asset: Any) -> bool:
        text = f"{getattr(asset, 'filename', asset)} {getattr(asset, 'attributes', {}).get('body', '')}"
        return "thebe" in text.lower()

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not thebe(asset)]


def _finish(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mathjax_source(), target / MATHJAX_FILE)
    leaks = [f"{page.relative_to(app.outdir)}: {marker}"
             for page in Path(app.outdir).rglob("*") if page.suffix in (".html", ".ipynb", ".js", ".txt")
             for marker in FORBIDDEN_MARKERS if marker in page.read_text(errors="replace")]
    if leaks:
        raise ExtensionError("solution or hidden-test markers in the built site:\n" + "\n".join(leaks))


def setup(app: Sphinx) -> dict[str, Any]:
    mathjax_source()  # fail early, with the fix, when the package is missing
    _register_renderer()
    app.connect("config-inited", _offline_mathjax)
    app.connect("html-page-context", _drop_thebe)
    # Search result snippets are fetched pages, which a browser refuses under file://: there the
    # results come without snippets instead of with a "Failed to fetch" error each.
    app.add_js_file(None, body='if (location.protocol === "file:") DOCUMENTATION_OPTIONS.SHOW_SEARCH_SUMMARY = false;')
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
