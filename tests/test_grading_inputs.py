"""Nothing lost, nothing repeated: bad submissions, failing tasks and re-runs of ``rlcourse grade``.

* ``collect()`` checks every submission before nbgrader sees it: invalid JSON, non-UTF-8 bytes,
  a wrong file name, links and other non-regular files each end with a status and a reason;
  missing or duplicated cells and huge stored output are graded, with a note in ``flags``.
* A task that fails (its worker died, it raised) is tried once more; a second failure is `error`.
* A re-run reuses the outcome of a submission graded before with the same notebook, pins,
  source notebook and grading code; ``--regrade`` grades it again.

The round trip through the real CLI grades lab 1's *empty* example (its functions raise
NotImplementedError, so nothing trains) and bad submissions that never reach a kernel.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import nbformat
import pytest
from grading_helpers import REPO, copy_course, digest, example, grade_batch, with_cell

from rlcourse.grading import pipeline

LAB = "lab1_dqn"
NOTEBOOK = f"{LAB}.ipynb"
EMPTY = REPO / "autograder" / "examples" / "example_empty" / LAB / NOTEBOOK


def _mangled(nb: nbformat.NotebookNode, extra: str = "") -> bytes:
    """``nb`` with the test cells ``test_td_loss`` and ``test_training`` deleted (the latter follows a
    locked cell, which nbgrader's own add_missing_cells cannot handle) and the test cell
    ``test_epsilon_greedy`` pasted again at the end (same grade id, same cell id: written as JSON,
    nbformat would renumber it), then a markdown cell ``extra``."""
    nb = with_cell(with_cell(nb, "test_td_loss", None), "test_training", None)
    twice = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_epsilon_greedy")
    nb.cells.append(json.loads(json.dumps(twice)))
    if extra:
        nb.cells.append(nbformat.v4.new_markdown_cell(extra))
    return json.dumps(nb, indent=1).encode()


def _submit(source: Path, student: str, files: dict[str, bytes]) -> Path:
    folder = source / student / LAB
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# --------------------------------------------------------------------------- collect
def test_collect_gives_every_bad_input_a_status_and_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small limits, same code paths: output above 1 MB is removed, a file above 24 MB is not read.
    monkeypatch.setattr(pipeline, "STRIP_OUTPUTS_BYTES", 2**20)
    monkeypatch.setattr(pipeline, "MAX_NOTEBOOK_BYTES", 24 * 2**20)
    course, source, outside = tmp_path / "course", tmp_path / "incoming", tmp_path / "outside"
    good = EMPTY.read_bytes()
    nb = nbformat.reads(good.decode(), as_version=4)
    _submit(source, "good", {NOTEBOOK: good})
    _submit(source, "bad_json", {NOTEBOOK: good[:-100]})
    _submit(source, "latin1", {NOTEBOOK: b'{"cells": [], "note": "caf\xe9"}'})
    _submit(source, "not_a_notebook", {NOTEBOOK: b"[1, 2, 3]"})
    _submit(source, "wrong_name", {"Lab1.ipynb": good})
    _submit(source, "two_wrong", {"a.ipynb": good, "b.ipynb": good})
    _submit(source, "extra", {NOTEBOOK: good, "lab1_dqn-Copy1.ipynb": good})
    _submit(source, "no_notebook", {"answers.txt": b"see attachment"})
    _submit(source, "mangled", {NOTEBOOK: _mangled(nb)})
    huge = nbformat.from_dict(json.loads(good))
    code = next(c for c in huge.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * (2 * 2**20))]
    _submit(source, "huge", {NOTEBOOK: nbformat.writes(huge).encode()})
    with open(_submit(source, "too_large", {}) / NOTEBOOK, "wb") as f:
        f.truncate(25 * 2**20)  # sparse: costs nothing
    # Links and other non-regular files: never followed, never read.
    _submit(outside, "secret", {NOTEBOOK: good.replace(b"NotImplementedError", b"SECRET_MARKER")})
    (_submit(source, "linked_notebook", {}) / NOTEBOOK).symlink_to(outside / "secret" / LAB / NOTEBOOK)
    os.mkfifo(_submit(source, "fifo", {}) / NOTEBOOK)  # reading it would block
    (source / "linked_student").symlink_to(outside / "secret")
    (source / "linked_lab").mkdir()
    (source / "linked_lab" / LAB).symlink_to(outside / "secret" / LAB)
    before = digest(source)

    notes: dict[str, str] = {}
    students, rejected = pipeline.collect(course, LAB, source, pipeline.expected_cells(REPO, LAB), notes)

    assert students == ["extra", "good", "huge", "mangled"]
    status = {o.student: (o.status, o.detail) for o in rejected}
    expect = {
        "bad_json": ("invalid_notebook", "is not valid JSON"),
        "latin1": ("invalid_notebook", "is not UTF-8 text (byte 0xe9"),
        "not_a_notebook": ("invalid_notebook", "is not a Jupyter notebook"),
        "too_large": ("invalid_notebook", "25 MB, more than the 24 MB"),
        "wrong_name": ("missing_notebook", f"found Lab1.ipynb: rename it to {NOTEBOOK}"),
        "two_wrong": ("missing_notebook", "found a.ipynb, b.ipynb"),
        "no_notebook": ("missing_notebook", "holds no notebook"),
        "linked_notebook": ("missing_notebook", "is a symbolic link; not read"),
        "fifo": ("missing_notebook", "is not a regular file; not read"),
        "linked_student": ("invalid_submission", "linked_student is a symbolic link; not followed"),
        "linked_lab": ("invalid_submission", f"linked_lab/{LAB} is a symbolic link; not followed"),
    }
    assert sorted(status) == sorted(expect)
    for student, (want_status, reason) in expect.items():
        assert status[student][0] == want_status and reason in status[student][1], (student, status[student])
    assert notes["extra"] == f"ignored lab1_dqn-Copy1.ipynb (only {NOTEBOOK} is graded)"
    assert "test_td_loss, test_training missing (put back" in notes["mangled"]
    assert "test_epsilon_greedy duplicated" in notes["mangled"]
    assert "stored output, removed before grading" in notes["huge"]
    assert "good" not in notes

    # The originals are untouched; only the notebooks to grade are copied, nothing from outside.
    assert digest(source) == before
    submitted = course / pipeline.SUBMITTED_RELPATH
    assert sorted(p.parent.name for p in submitted.glob(f"*/{LAB}")) == students
    assert all(sorted(os.listdir(submitted / s / LAB)) == [NOTEBOOK] for s in students)
    assert (submitted / "good" / LAB / NOTEBOOK).read_bytes() == good
    assert not any(b"SECRET_MARKER" in p.read_bytes() for p in submitted.rglob("*") if p.is_file())
    # The copy to grade of "mangled": the deleted test cells are back where the lab has them, and
    # only the last copy of the pasted cell is an nbgrader cell.
    repaired = json.loads((submitted / "mangled" / LAB / NOTEBOOK).read_text())
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in repaired["cells"]]
    assert ids.count("test_epsilon_greedy") == 1 and ids[-1] == "test_epsilon_greedy"
    assert ids.index("test_training") == ids.index("parameters") + 1
    assert ids.index("test_td_loss") == ids.index("td_loss") + 1
    stripped = nbformat.read(submitted / "huge" / LAB / NOTEBOOK, as_version=4)
    assert len(stripped.cells) == len(huge.cells) and all(not c.get("outputs") for c in stripped.cells)


def test_collect_keeps_an_identical_copy_and_puts_a_rejected_ones_aside(tmp_path: Path) -> None:
    course, source = tmp_path / "course", tmp_path / "incoming"
    expected = pipeline.expected_cells(REPO, LAB)
    _submit(source, "alice", {NOTEBOOK: EMPTY.read_bytes()})
    _submit(source, "bob", {NOTEBOOK: EMPTY.read_bytes()})
    assert pipeline.collect(course, LAB, source, expected) == (["alice", "bob"], [])
    (source / "bob" / LAB / NOTEBOOK).write_bytes(b"not json")
    students, rejected = pipeline.collect(course, LAB, source, expected)
    assert students == ["alice"] and [(o.student, o.status) for o in rejected] == [("bob", "invalid_notebook")]
    submitted = course / pipeline.SUBMITTED_RELPATH
    assert (submitted / "alice" / LAB / NOTEBOOK).read_bytes() == EMPTY.read_bytes()
    assert not (submitted / "bob" / LAB).exists()
    # Only bob's earlier copy was put aside: alice's identical one stayed where it was.
    aside = course / pipeline.WORK_RELPATH / "replaced"
    assert [p.relative_to(aside).parts[1:] for p in aside.rglob(NOTEBOOK)] == [("bob", LAB, NOTEBOOK)]


def test_collect_in_place_keeps_the_original_of_a_stripped_copy(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "STRIP_OUTPUTS_BYTES", 2**20)
    course = tmp_path / "course"
    submitted = course / pipeline.SUBMITTED_RELPATH
    huge = nbformat.read(EMPTY, as_version=4)
    next(c for c in huge.cells if c.cell_type == "code").outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="x" * (2 * 2**20))]
    original = nbformat.writes(huge).encode()
    _submit(submitted, "alice", {NOTEBOOK: original})
    notes: dict[str, str] = {}
    assert pipeline.collect(course, LAB, submitted, pipeline.expected_cells(REPO, LAB), notes) == (["alice"], [])
    assert len((submitted / "alice" / LAB / NOTEBOOK).read_bytes()) < 2**20
    [kept] = (course / pipeline.WORK_RELPATH / "replaced").rglob(NOTEBOOK)
    assert kept.read_bytes() == original and "removed before grading" in notes["alice"]


# --------------------------------------------------------------------------- a task that fails
class KilledWorker(Exception):
    """Named like distributed's: the task's worker process died."""


class _Executor:
    """Runs no task: each submit returns the next of ``results`` (an outcome, or an exception raised)."""

    description = "stub"

    def __init__(self, results: list[Any], events: list[str]) -> None:
        self.results, self.events = list(results), events

    def capacity(self) -> int:
        return 1

    def submit(self, course_dir: str, lab: str, student: str, *args: Any, **kwargs: Any) -> Future:
        self.events.append(f"submit {student}")
        future: Future = Future()
        result = self.results.pop(0)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
        return future

    def wait(self, futures: list[Future], timeout: float) -> set[Future]:
        return {f for f in futures if f.done()}

    def stop(self) -> None:
        pass


class _Guard:
    """Sees no change."""

    def start(self) -> None:
        pass

    def check(self, busy: set[tuple[str, str]]) -> tuple[list[str], bool]:
        return [], False

    def accept(self, lab: str, student: str) -> None:
        pass


class _Graded:
    """Records when a submission stops being done and becomes done."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def forget(self, student: str) -> None:
        self.events.append(f"forget {student}")

    def remember(self, out: pipeline.Outcome) -> None:
        self.events.append(f"remember {out.student}")


def _batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: _Executor,
           recorded: list[pipeline.Outcome], events: list[str]) -> pipeline._Batch:
    """A batch of lab 1 with a fresh SQLite gradebook, the ``executor`` stub and a guard that sees nothing."""
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with pipeline._gradebook(db_url):
        pass  # creates the gradebook's tables
    return pipeline._Batch(tmp_path, LAB, executor, _Guard(), db_url, 60, recorded.append, None,
                           notes={"alice": "ignored x.ipynb"}, graded=_Graded(events))


def _run_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               results: list[Any]) -> tuple[list[pipeline.Outcome], list[str]]:
    recorded: list[pipeline.Outcome] = []
    events: list[str] = []
    _batch(tmp_path, monkeypatch, _Executor(results, events), recorded, events).run(["alice"])
    return recorded, events


def test_a_failed_task_is_tried_once_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second = pipeline.Outcome(LAB, "alice", status="autograde_failed", detail="a cell failed")
    recorded, events = _run_batch(tmp_path, monkeypatch, [KilledWorker("worker died"), second])
    assert [o.status for o in recorded] == ["retry", "autograde_failed"]
    assert recorded[0].detail.startswith("to be tried again: its Dask worker process died")
    assert recorded[1].detail == "a cell failed" and recorded[1].flags == "ignored x.ipynb"
    # Not done while it runs, and not done after a result other than `graded`.
    assert events == ["forget alice", "submit alice", "forget alice", "submit alice"]


def test_a_task_that_fails_twice_is_recorded_as_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [KilledWorker("worker died"), RuntimeError("course not visible")]
    recorded, events = _run_batch(tmp_path, monkeypatch, failures)
    assert [o.status for o in recorded] == ["retry", "error"]
    detail = recorded[1].detail
    assert detail.startswith("failed twice (tried again once): the grading task failed: RuntimeError")
    assert "the first time: its Dask worker process died" in detail
    assert events.count("submit alice") == 2


# --------------------------------------------------------------------------- the real CLI
@pytest.mark.slow
def test_bad_inputs_end_with_a_status_and_a_rerun_grades_only_what_changed(tmp_path: Path) -> None:
    course = copy_course(tmp_path / "course")
    examples = course / "autograder" / "examples"
    for student in ("example_complete", "example_partial"):  # they train: minutes
        shutil.rmtree(examples / student)
    empty = example(course, "example_empty", LAB, NOTEBOOK)
    good = EMPTY.read_bytes()
    _submit(examples, "bad_json", {NOTEBOOK: good[: len(good) // 2]})
    _submit(examples, "latin1", {NOTEBOOK: good.replace(b"NotImplementedError", b"NotImplemented\xe9rror")})
    _submit(examples, "wrong_name", {"Lab1.ipynb": good})
    _submit(tmp_path / "outside", "secret", {NOTEBOOK: good})
    (_submit(examples, "linked", {}) / NOTEBOOK).symlink_to(tmp_path / "outside" / "secret" / LAB / NOTEBOOK)
    done = course / pipeline.DONE_RELPATH / LAB

    _submit(examples, "mangled", {NOTEBOOK: _mangled(empty)})
    # Named, or a re-run would grade autograder/submitted/ (it then holds submissions).
    source = ["--submissions", str(examples)]
    first = grade_batch(course, LAB, {}, NOTEBOOK, expect_exit=1, args=source)
    rows = first["summary"]
    assert {s: r["status"] for s, r in rows.items()} == {
        "bad_json": "invalid_notebook", "latin1": "invalid_notebook", "wrong_name": "missing_notebook",
        "linked": "missing_notebook", "example_empty": "graded", "mangled": "graded"}
    assert "not valid JSON" in rows["bad_json"]["detail"] and "not UTF-8" in rows["latin1"]["detail"]
    assert "rename it" in rows["wrong_name"]["detail"] and "symbolic link" in rows["linked"]["detail"]
    # The deleted test cells are put back and graded, and the last copy of the pasted one is graded.
    assert [rows["mangled"][c] for c in ("test_td_loss", "test_training", "test_epsilon_greedy")] == ["0", "0", "0"]
    assert "test_td_loss, test_training missing" in rows["mangled"]["flags"]
    assert "test_epsilon_greedy duplicated" in rows["mangled"]["flags"]
    assert first["after"] == first["before"]
    assert sorted(p.name for p in done.iterdir()) == ["example_empty.json", "mangled.json"]

    # Re-run: the unchanged submission keeps its outcome, the changed one is graded again.
    _submit(examples, "mangled", {NOTEBOOK: _mangled(empty, "I ran out of time.")})
    second = grade_batch(course, LAB, {}, NOTEBOOK, expect_exit=1, args=source)
    rows2 = second["summary"]
    assert rows2["example_empty"]["detail"].startswith("unchanged since ")
    assert "not graded again" in second["proc"].stdout
    for column in ("status", "score", "started", "finished", "feedback", "worker"):
        assert rows2["example_empty"][column] == rows["example_empty"][column]
    assert (course / rows2["example_empty"]["feedback"]).is_file()
    assert "example_empty" in second["grades"]
    assert rows2["mangled"]["status"] == "graded" and rows2["mangled"]["finished"] > rows["mangled"]["finished"]
    assert not rows2["mangled"]["detail"]

    # --regrade grades it again all the same.
    shutil.rmtree(examples / "mangled")
    third = grade_batch(course, LAB, {}, NOTEBOOK, expect_exit=1, args=[*source, "--regrade"])
    rows3 = third["summary"]
    assert rows3["example_empty"]["status"] == "graded" and not rows3["example_empty"]["detail"]
    assert rows3["example_empty"]["finished"] > rows2["example_empty"]["finished"]


class _Interrupted(_Executor):
    """Its task never finishes by itself: Ctrl+C arrives while it runs, and stop() ends it."""

    def submit(self, course_dir: str, lab: str, student: str, *args: Any, **kwargs: Any) -> Future:
        self.events.append(f"submit {student}")
        self.future: Future = Future()
        return self.future

    def wait(self, futures: list[Future], timeout: float) -> set[Future]:
        if not self.future.done():
            raise KeyboardInterrupt
        return {f for f in futures if f.done()}

    def stop(self) -> None:
        self.future.set_exception(pipeline.GradingStopped("the batch was interrupted"))


def test_an_interrupted_batch_leaves_its_running_submission_not_done(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[pipeline.Outcome] = []
    events: list[str] = []
    batch = _batch(tmp_path, monkeypatch, _Interrupted([], events), recorded, events)
    with pytest.raises(KeyboardInterrupt):
        batch.run(["alice"])
    # Its earlier record was deleted before it started, and nothing marked it done since (the CLI
    # test below shows a `graded` outcome remembered and reused).
    assert events == ["forget alice", "submit alice"] and recorded == []
