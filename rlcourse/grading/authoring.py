"""Writing nbgrader source notebooks from Python (used by ``solutions/<lab>/build_notebook.py``).

A lab's build script keeps each cell as a Python string and assembles the notebook with
these helpers, so a lab can be edited and reviewed as plain Python. The committed notebook
stays the source of truth for nbgrader; after changing a build script, run it, then
``make labs`` (student version) and, if the graded training changed, ``make pin``.
"""

from __future__ import annotations

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNEL_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def nbgrader_metadata(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
                      points: int = 0) -> dict:
    """The ``metadata`` of a cell in nbgrader's schema 3 (``points`` only on graded cells)."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def md(grade_id: str, text: str) -> nbformat.NotebookNode:
    """A read-only markdown cell."""
    return new_markdown_cell(text.strip("\n"), metadata=nbgrader_metadata(grade_id, locked=True))


def code(grade_id: str, text: str, **flags: bool | int) -> nbformat.NotebookNode:
    """A code cell; ``solution=True`` for student cells, ``grade=True, locked=True, points=N`` for tests."""
    return new_code_cell(text.strip("\n"), metadata=nbgrader_metadata(grade_id, **flags))


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with an ipykernel kernelspec and cell ids derived from the grade ids
    (stable ids keep diffs of the committed notebook small)."""
    nb = new_notebook()
    nb.metadata = dict(KERNEL_METADATA)
    nb.cells = cells
    ids = [cell.metadata["nbgrader"]["grade_id"] for cell in cells]
    duplicated = {i for i in ids if ids.count(i) > 1}
    if duplicated:
        raise ValueError(f"grade ids must be unique in a notebook: {sorted(duplicated)}")
    for cell in nb.cells:
        cell["id"] = cell.metadata["nbgrader"]["grade_id"].replace("_", "-")
    return nb


def write(nb: nbformat.NotebookNode, path: str | os.PathLike) -> None:
    """Validate and write ``nb`` to ``path``, and say so."""
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"wrote {path}")
