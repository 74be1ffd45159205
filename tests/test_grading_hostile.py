"""Hostile submissions through the real pipeline (``rlcourse grade lab1_dqn``, lab 1 because it
trains fastest): they must not get points their tests did not give, nor change the grading of
the students after them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grading_helpers import copy_course, example, grade_batch, points, with_cell

LAB, NOTEBOOK = "lab1_dqn", "lab1_dqn.ipynb"

# Prints a number from inside the tested function: nbgrader reads the first result value of a
# test cell as its score, even when an error follows it.
DISPLAYHOOK_HUBER = '''
import pathlib
pathlib.Path("copied_solution.txt").write_text("a file the notebook wrote next to itself")
pathlib.Path("loot").mkdir(exist_ok=True)
pathlib.Path("loot/gradebook_copy.db").write_text("")

def huber_loss(predictions, targets, delta):
    import sys
    sys.displayhook(2.0)
    return ((predictions - targets) ** 2).mean() * 0.0
'''.strip()

# Overwrites the course's pass marks (found by walking up from the grading folder) and leaves
# a friendlier pins file next to itself; the function itself is the correct one.
TAMPERING = '''
import pathlib
for _folder in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]:
    _pins = _folder / "autograder" / "pinned_metrics.json"
    if _pins.is_file():
        _pins.write_text("{}")
        break
pathlib.Path("autograder").mkdir(exist_ok=True)
pathlib.Path("autograder/pinned_metrics.json").write_text("{}")
'''.strip()


def _source(nb: Any, grade_id: str) -> str:
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    course = copy_course(tmp_path_factory.mktemp("course"))
    complete = example(course, "example_complete", LAB, NOTEBOOK)
    partial = example(course, "example_partial", LAB, NOTEBOOK)
    pins_before = (course / "autograder" / "pinned_metrics.json").read_bytes()
    students = {
        "a_tampering": with_cell(complete, "epsilon_greedy",                  # graded first
                                 TAMPERING + "\n\n" + _source(complete, "epsilon_greedy")),
        "displayhook": with_cell(complete, "huber_loss", DISPLAYHOOK_HUBER),
        # epsilon-greedy answered, its test cell deleted: nbgrader must put the cell back and grade it.
        "deleted_test_cell": with_cell(partial, "test_epsilon_greedy", None),
    }
    result = grade_batch(course, LAB, students, NOTEBOOK, expect_exit=1)
    result["pins_before"] = pins_before
    return result


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_printed_number_does_not_score_a_failing_test(graded: dict[str, Any]) -> None:
    row = graded["summary"]["displayhook"]
    assert row["status"] == "graded"
    assert points(row, ["test_epsilon_greedy", "test_td_targets", "test_huber", "test_training"]) == {
        "test_epsilon_greedy": 2.0, "test_td_targets": 3.0, "test_huber": 0.0, "test_training": 0.0}


@pytest.mark.slow
def test_a_deleted_test_cell_is_restored_and_graded(graded: dict[str, Any]) -> None:
    row = graded["summary"]["deleted_test_cell"]
    assert row["status"] == "graded"
    assert points(row, ["test_epsilon_greedy", "test_td_targets", "test_huber", "test_training"]) == {
        "test_epsilon_greedy": 2.0, "test_td_targets": 0.0, "test_huber": 0.0, "test_training": 0.0}
    graded_nb = graded["course"] / "autograder" / "autograded" / "deleted_test_cell" / LAB / NOTEBOOK
    assert "test_epsilon_greedy" in graded_nb.read_text()


@pytest.mark.slow
def test_feedback_returns_only_the_feedback_pages(graded: dict[str, Any]) -> None:
    # nbgrader copies every file of the graded folder into the feedback; what the notebook
    # wrote there while it ran must not go back to the student.
    folder = graded["course"] / "autograder" / "feedback" / "displayhook" / LAB
    assert sorted(p.name for p in folder.iterdir()) == ["lab1_dqn.html"]


@pytest.mark.slow
def test_tampering_with_the_pins_is_undone_and_scores_zero(graded: dict[str, Any]) -> None:
    row = graded["summary"]["a_tampering"]
    assert row["status"] == "tampered" and float(row["score"]) == 0.0
    assert "pinned_metrics.json (restored)" in row["detail"]
    course: Path = graded["course"]
    assert (course / "autograder" / "pinned_metrics.json").read_bytes() == graded["pins_before"]
    json.loads(graded["pins_before"])  # (the original was valid JSON)
    assert "a_tampering" not in graded["grades"] or float(graded["grades"]["a_tampering"]["score"]) == 0.0
    assert "not graded: lab1_dqn/a_tampering: tampered" in graded["proc"].stdout


@pytest.mark.slow
def test_students_after_the_tampering_are_graded_against_the_real_pins(graded: dict[str, Any]) -> None:
    row = graded["summary"]["example_complete"]
    assert row["status"] == "graded" and float(row["score"]) == float(row["max_score"]) == 10.0
    # Only notebooks were copied in; the tampering student's own fake pins file is its own
    # folder's business and was never read by anyone else.
    submitted = graded["course"] / "autograder" / "submitted" / "a_tampering" / LAB
    assert sorted(p.name for p in submitted.iterdir()) == [NOTEBOOK]


def test_drop_test_cell_results_keeps_errors_and_other_cells() -> None:
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from rlcourse.grading.sanitize import DropTestCellResults

    result = new_output("execute_result", data={"text/plain": "4.0"}, execution_count=1)
    error = new_output("error", ename="AssertionError", evalue="wrong", traceback=[])
    test = new_code_cell("check()", metadata={"nbgrader": {"grade": True, "solution": False, "points": 4}},
                         outputs=[result, error])
    answer = new_code_cell("x", metadata={"nbgrader": {"grade": True, "solution": True, "points": 1}},
                           outputs=[result])
    plain = new_code_cell("1 + 1", outputs=[result])
    nb, _ = DropTestCellResults()(new_notebook(cells=[test, answer, plain]), {})
    assert [o.output_type for o in nb.cells[0].outputs] == ["error"]
    assert [o.output_type for o in nb.cells[1].outputs] == ["execute_result"]
    assert [o.output_type for o in nb.cells[2].outputs] == ["execute_result"]
