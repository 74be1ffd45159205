"""Slide metadata for the lectures: each notebook is also a slideshow (RISE in JupyterLab, reveal.js on the site).

Every cell carries ``metadata.slideshow.slide_type``, the field both RISE and nbconvert's
reveal.js export read:

* ``slide`` — a new slide (left/right arrows): the title cell and every ``#``/``##`` section;
* ``subslide`` — a new view below the current slide (up/down; space walks through all):
  a ``###`` heading, "Try it yourself", a correction box, or a cell that would not fit on the
  view it follows (see :func:`estimated_height`);
* ``-`` — stays on the current view: code with the text that introduces it, the text that
  reads its plot;
* ``fragment`` — appears on the next key press within the view (short checks);
* ``skip`` — not shown: set-up cells (imports, seeds, constants);
* ``notes`` — speaker notes (press S in reveal.js): long discussions without a heading, which
  a lecturer says rather than shows.

:func:`assign` fills in the cells that have no slide type yet (hand-chosen ones are kept) and
first splits a Markdown cell whose section heading is not at its top, so every section starts a
slide. Run ``make slides`` (or ``python -m rlcourse.teaching.slides course/*.ipynb``) after adding
cells to a lecture; ``--reset`` re-derives every cell's type from these rules.

ipywidgets do not render inside RISE's slideshow (jupyterlab-rise 0.43 cannot load the widget
manager: upstream issue jupyterlab-contrib/rise#119; an ``interact`` shows its text repr). So
the static copy that follows each interactive plot (made for the printed notes) stays in the
deck, and a lecturer moves the sliders in the notebook, which RISE shows beside the slides.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Sequence

import nbformat

SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")
# What a view holds before it scrolls: reveal.js slides here are 1280 x 720 px (book/_ext/slides.py).
VIEW_HEIGHT_PX = 720
NOTES_MIN_CHARS = 1800        # a heading-less Markdown cell this long, after code, is speaker notes
# Notebook-level RISE settings: long views scroll rather than being cut off; the white theme has
# its fonts inside RISE (the default "simple" theme fetches them from Google Fonts: not offline).
RISE_SETTINGS = {"scroll": True, "transition": "none", "theme": "white"}

_HEADING = re.compile(r"^(#{1,3}) \S")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A set-up line: an import, a seed, a thread count, a module-level constant.
_SETUP_LINE = re.compile(r"^(import \w|from [\w.]+ import |torch\.(set_num_threads|manual_seed)\(|"
                         r"np\.random\.seed\(|[A-Z][A-Z0-9_]* = )")
_CORRECTION = re.compile(r"^>\s*\*\*(A |Another )?[Cc]orrection")
_FIGURE = re.compile(r"plt\.show\(|plt\.subplots\(|\.plot\(|interact\(|display\(|Video\(|IFrame\(")


def slide_type(cell: nbformat.NotebookNode) -> str | None:
    """The cell's slide type, or None when it has none."""
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")


def heading_level(cell: nbformat.NotebookNode) -> int:
    """1-3 for a Markdown cell that starts with a ``#``/``##``/``###`` heading, else 0."""
    if cell.cell_type != "markdown":
        return 0
    match = _HEADING.match(cell.source.lstrip("\n"))
    return len(match.group(1)) if match else 0


def is_setup(cell: nbformat.NotebookNode) -> bool:
    """A code cell of imports, seeds and constants only: plumbing, nothing to present."""
    if cell.cell_type != "code":
        return False
    lines = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(lines) and all(_SETUP_LINE.match(line) or line.startswith((" ", "\t", ")")) for line in lines)


def estimated_height(cell: nbformat.NotebookNode) -> int:
    """Rough height in px of the cell on a 1280 px wide slide, outputs included (cells here carry none,
    so a figure is guessed from the code). Used only to decide where a view is full."""
    if cell.cell_type == "markdown":
        height, fenced = 0, False
        for line in cell.source.splitlines():
            fenced ^= bool(_FENCE.match(line))
            if not line.strip():
                height += 12
            elif _HEADING.match(line) and not fenced:
                height += 56
            elif line.strip().startswith("$$") and not fenced:
                height += 64
            else:
                height += 30 * max(1, math.ceil(len(line) / 110))
        return height
    if cell.cell_type == "code":
        lines = cell.source.splitlines()
        height = 24 * len(lines) + 30
        if _FIGURE.search(cell.source):
            height += 340
        height += 26 * min(6, cell.source.count("print("))
        return height
    return 0


def split_sections(nb: nbformat.NotebookNode) -> int:
    """Split every Markdown cell at a ``#``/``##``/``###`` heading that is not its first line (outside code
    fences), so each section can start its own slide. Returns how many cells were added."""
    added, i = 0, 0
    while i < len(nb.cells):
        cell = nb.cells[i]
        i += 1
        if cell.cell_type != "markdown":
            continue
        lines, fenced, cut = cell.source.split("\n"), False, None
        for n, line in enumerate(lines):
            fenced ^= bool(_FENCE.match(line))
            if n > 0 and not fenced and _HEADING.match(line) and "\n".join(lines[:n]).strip():
                cut = n
                break
        if cut is None:
            continue
        cell.source = "\n".join(lines[:cut]).rstrip()
        rest = nbformat.v4.new_markdown_cell("\n".join(lines[cut:]))
        nb.cells.insert(i, rest)  # the loop looks at it next: it may hold a further heading
        added += 1
    return added


def rule(cells: Sequence[nbformat.NotebookNode], index: int, view_height: int) -> str:
    """The slide type the rules give cell ``index``, given the height already on the current view."""
    cell, previous = cells[index], cells[index - 1] if index else None
    level = heading_level(cell)
    if index == 0 or level in (1, 2):
        return "slide"
    if level == 3:
        return "subslide"
    if cell.cell_type == "code":
        if is_setup(cell):
            return "skip"
        if cell.source.lstrip().lower().startswith("# check") and len(cell.source.splitlines()) <= 6:
            return "fragment"
    if cell.cell_type == "markdown":
        text = cell.source.lstrip()
        if text.startswith("**Try it yourself**") or _CORRECTION.match(text):
            return "subslide"
        if len(text) >= NOTES_MIN_CHARS and previous is not None and previous.cell_type == "code":
            return "notes"
    if view_height and view_height + estimated_height(cell) > VIEW_HEIGHT_PX:
        return "subslide"
    return "-"


def assign(nb: nbformat.NotebookNode, reset: bool = False) -> int:
    """Give every cell of ``nb`` a slide type; keep the ones it has unless ``reset``.

    Also splits Markdown cells at inner section headings (:func:`split_sections`) and sets the
    notebook's RISE settings. Returns the number of cells whose slide type was set.
    """
    split_sections(nb)
    rise = nb.metadata.setdefault("rise", {})
    for key, value in RISE_SETTINGS.items():
        rise.setdefault(key, value)
    changed, view_height = 0, 0
    for index, cell in enumerate(nb.cells):
        current = None if reset else slide_type(cell)
        if current not in SLIDE_TYPES:
            current = rule(nb.cells, index, view_height)
            cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = current
            changed += 1
        if current in ("slide", "subslide"):
            view_height = estimated_height(cell)
        elif current in ("-", "fragment"):
            view_height += estimated_height(cell)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlcourse.teaching.slides NOTEBOOK...``: fill in missing slide types, in place."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--reset", action="store_true", help="re-derive every cell's slide type from the rules")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)  # read, change, write at once: others may edit the file too
        before = len(nb.cells)
        changed = assign(nb, reset=args.reset)
        if changed or len(nb.cells) != before:
            nbformat.write(nb, path)
        print(f"{path}: {changed} slide types set, {len(nb.cells) - before} cells split off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
