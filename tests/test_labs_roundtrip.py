"""Every lab through the real grading pipeline: ``rlcourse grade LAB`` (which runs ``python -m
nbgrader ...``) in a temporary copy of the course, over the lab's three example students.

* ``example_complete`` (the source notebook's answers in the release) gets every point;
* ``example_partial`` (only the first solution cell answered) gets exactly the points of the
  first test cell and nothing else;
* ``example_empty`` (the release as handed out) gets zero.

Wrong parts are rejected by their checks in-process (``tests/test_checks_<lab>.py``), and the
pipeline's own behaviours (hostile cells, tampering, timeouts) are tested once in
``tests/test_grading_pipeline.py`` and ``tests/test_grading_hostile.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from rlcourse.grading import release

from grading_helpers import copy_course, grade_batch, points

REPO = Path(__file__).resolve().parents[1]
LABS = release.list_labs(REPO)


def graded_cells(lab: str) -> tuple[dict[str, float], str]:
    """``({test cell: points}, the test cell right after the first solution cell)`` of ``lab``'s source."""
    nb = nbformat.read(REPO / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    cells: dict[str, float] = {}
    first_test, seen_solution = None, False
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        seen_solution = seen_solution or bool(meta.get("solution"))
        if meta.get("grade") and cell.cell_type == "code":
            cells[meta["grade_id"]] = float(meta["points"])
            if seen_solution and first_test is None:
                first_test = meta["grade_id"]
    assert first_test is not None, f"{lab} has no test cell after a solution cell"
    return cells, first_test


def test_every_lab_has_a_training_cell_and_ten_points() -> None:
    for lab in LABS:
        cells, _ = graded_cells(lab)
        assert "test_training" in cells and sum(cells.values()) == 10, (lab, cells)


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_round_trip(lab: str, tmp_path: Path) -> None:
    notebook = f"{lab}.ipynb"
    course = copy_course(tmp_path)
    graded = grade_batch(course, lab, {}, notebook)
    summary, grades = graded["summary"], graded["grades"]
    full, first_test = graded_cells(lab)

    assert set(summary) == {"example_complete", "example_partial", "example_empty"}
    for student, row in summary.items():
        assert row["status"] == "graded", row
        assert float(row["max_score"]) == 10
        assert float(grades[student]["score"]) == float(row["score"]), student
        html = (course / row["feedback"]).read_text()
        for needle in ("HIDDEN TESTS", "_checks.", "rlcourse.grading"):
            assert needle not in html, f"{student}'s feedback shows {needle!r}"
    assert points(summary["example_complete"], list(full)) == full, summary["example_complete"]
    assert points(summary["example_partial"], list(full)) == {**dict.fromkeys(full, 0.0),
                                                              first_test: full[first_test]}
    assert set(points(summary["example_empty"], list(full)).values()) == {0.0}, summary["example_empty"]
    # The complete example runs clean while graded: no cell shows an error (e.g. an ungraded
    # demo calling a reference implementation that grading withholds).
    autograded = nbformat.read(course / "autograder" / "autograded" / "example_complete" / lab / notebook, 4)
    errors = {cell.metadata.get("nbgrader", {}).get("grade_id", i): out.get("ename")
              for i, cell in enumerate(autograded.cells) if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"}
    assert not errors, f"{lab}: cells of the complete example end with errors while graded: {errors}"
    assert graded["before"] == graded["after"], "grading modified a submission"
