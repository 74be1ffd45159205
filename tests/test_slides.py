"""The lectures as slideshows: every cell's slide metadata, and the rules that set it.

RISE (JupyterLab) and the site's reveal.js slides (book/_ext/slides.py) both read
``cell.metadata.slideshow.slide_type``. The decks are checked here cheaply, on the notebooks'
JSON (no execution, no browser): every cell has a slide type, each lecture starts with a slide,
each section starts one, the number of views is one a lecture can present, set-up cells are
skipped and never make up a view. tests/test_book.py shows the exported slides in chromium.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from rlcourse.teaching import slides

REPO = Path(__file__).resolve().parents[1]
LECTURES = sorted((REPO / "course").glob("[0-9][0-9]_*.ipynb"))
MIN_VIEWS, MAX_VIEWS = 8, 40   # slides + subslides: what a lecturer steps through in 60-90 minutes
FIX = "run `make slides` (python -m rlcourse.teaching.slides course/*.ipynb) and review the result"


def views(nb: nbformat.NotebookNode) -> list[list[int]]:
    """Cell indices of each view (a slide or subslide and the cells that continue it), hidden ones included."""
    out: list[list[int]] = []
    for i, cell in enumerate(nb.cells):
        if slides.slide_type(cell) in ("slide", "subslide") or not out:
            out.append([])
        out[-1].append(i)
    return out


def test_there_are_eight_lectures() -> None:
    assert len(LECTURES) == 8, [p.name for p in LECTURES]


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_lecture_is_a_sensible_deck(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    missing = [i for i, c in enumerate(nb.cells) if slides.slide_type(c) not in slides.SLIDE_TYPES]
    assert not missing, f"{path.name}: cells {missing} have no (valid) slide type; {FIX}"
    types = [slides.slide_type(c) for c in nb.cells]
    assert types[0] == "slide" and slides.heading_level(nb.cells[0]) == 1, f"{path.name} must open with its title slide"

    for i, cell in enumerate(nb.cells):
        level = slides.heading_level(cell)
        if level in (1, 2):
            assert types[i] == "slide", f"{path.name} cell {i} starts a section but is {types[i]!r}"
        if level:
            assert types[i] not in ("skip", "notes"), f"{path.name} cell {i}: a heading must be shown"
        if slides.is_setup(cell):
            assert types[i] == "skip", f"{path.name} cell {i} is set-up code (imports, seeds) but is shown"
    assert slides.split_sections(nb) == 0, f"{path.name}: a Markdown cell has a section heading inside; {FIX}"

    decks = views(nb)
    assert MIN_VIEWS <= len(decks) <= MAX_VIEWS, f"{path.name} has {len(decks)} slides+subslides"
    for view in decks:
        shown = [i for i in view if types[i] not in ("skip", "notes")]
        assert shown, f"{path.name}: the view at cell {view[0]} shows nothing"
        assert not all(slides.is_setup(nb.cells[i]) for i in shown), f"{path.name}: cells {shown} are only set-up"
    sections = [i for i, t in enumerate(types) if t == "slide"]
    assert len(sections) >= 5, f"{path.name}: only {len(sections)} slides (sections)"
    # The self-check quiz is part of the deck, not hidden.
    quiz = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "quiz(" in c.source]
    assert quiz and all(types[i] not in ("skip", "notes") for i in quiz), f"{path.name}: quiz cells {quiz}"
    rise = nb.metadata.get("rise", {})
    assert rise.get("scroll") is True, f"{path.name}: RISE should scroll long slides; {FIX}"
    assert rise.get("theme") == "white", f"{path.name}: RISE's other themes load fonts from the network; {FIX}"


# --------------------------------------------------------------------------- the rules
def _nb(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    make = {"md": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    return nbformat.v4.new_notebook(cells=[make[kind](src) for kind, src in cells])


def test_assign_follows_the_content() -> None:
    nb = _nb(("md", "# Lecture 9 — Title\n\nWhat you will learn."),
             ("code", "import numpy as np\nimport torch\ntorch.manual_seed(0)\nWORK = 1"),
             ("md", "## 1. First\n\nText.\n\n```bash\n# a shell comment, not a heading\n```\n\nMore.\n\n## 2. Second\n\nText."),
             ("code", "x = np.arange(3)\nplt.plot(x); plt.show()"),
             ("code", "# Check: the sum is right.\nassert x.sum() == 3"),
             ("code", "show(0.5)   # static copy for the printed notes"),
             ("md", "word " * 400),
             ("md", "**Try it yourself**\n1. Change it."))
    changed = slides.assign(nb)
    sources = [c.source.splitlines()[0] if c.source else "" for c in nb.cells]
    types = [slides.slide_type(c) for c in nb.cells]
    # "## 2. Second" was split off its cell (the shell comment in the fence was not a heading).
    assert sources[2] == "## 1. First" and "# a shell comment" in nb.cells[2].source
    assert sources[3] == "## 2. Second"
    assert changed == len(nb.cells) == 9
    # The printed notes' static copy of a plot stays (widgets do not render in RISE); it fits here.
    assert types == ["slide", "skip", "slide", "slide", "-", "fragment", "-", "notes", "subslide"], types
    assert nb.metadata["rise"]["scroll"] is True


def test_assign_keeps_chosen_types_unless_reset() -> None:
    nb = _nb(("md", "# Title"), ("md", "## 1. A section"), ("code", "x = 1"))
    nb.cells[2].metadata["slideshow"] = {"slide_type": "fragment"}   # chosen by hand
    assert slides.assign(nb) == 2
    assert [slides.slide_type(c) for c in nb.cells] == ["slide", "slide", "fragment"]
    assert slides.assign(nb) == 0                                  # nothing left to fill
    assert slides.assign(nb, reset=True) == 3
    assert slides.slide_type(nb.cells[2]) == "-"


def test_a_cell_that_does_not_fit_starts_a_subslide() -> None:
    long_code = "\n".join(f"y{i} = {i}" for i in range(8)) + "\nplt.show()"
    nb = _nb(("md", "# Title"), ("md", "## 1. Section\n\n" + "A line of explanation. " * 60), ("code", long_code),
             ("md", "Short reading of the plot."))
    slides.assign(nb)
    assert [slides.slide_type(c) for c in nb.cells] == ["slide", "slide", "subslide", "-"]


def test_main_fills_a_notebook_in_place(tmp_path: Path) -> None:
    path = tmp_path / "lecture.ipynb"
    nbformat.write(_nb(("md", "# Title"), ("code", "import os")), path)
    assert slides.main([str(path)]) == 0
    assert [slides.slide_type(c) for c in nbformat.read(path, as_version=4).cells] == ["slide", "skip"]
