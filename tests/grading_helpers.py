"""Helpers shared by the nbgrader round-trip tests of every lab (``tests/test_grading_*.py``).

A round trip grades a batch of submissions through the real command line (``rlcourse grade
LAB``, which runs ``python -m nbgrader ...``) in a temporary copy of the course, so the
repository's own ``autograder/`` state is never touched.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[1]
NBGRADER_STATE = {"submitted", "autograded", "feedback", "gradebook.db", "grades.csv", "summary.csv", ".work"}


def copy_course(dest: Path) -> Path:
    """The course as a fresh clone has it (no nbgrader state)."""
    shutil.copytree(REPO / "solutions", dest / "solutions", ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    shutil.copytree(REPO / "labs", dest / "labs")
    shutil.copytree(REPO / "autograder", dest / "autograder",
                    ignore=lambda d, names: [n for n in names if n in NBGRADER_STATE])
    return dest


def with_cell(nb: nbformat.NotebookNode, grade_id: str, source: str | None) -> nbformat.NotebookNode:
    """A copy of ``nb`` with cell ``grade_id``'s source replaced (``None``: the cell deleted)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    cells = []
    found = False
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            found = True
            if source is None:
                continue
            cell.source = source
        cells.append(cell)
    assert found, f"no cell with grade_id {grade_id!r}"
    nb.cells = cells
    return nb


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (to prove grading never modifies a submission)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def example(course: Path, student: str, lab: str, notebook: str) -> nbformat.NotebookNode:
    """One of the committed synthetic submissions (``example_complete`` / ``_partial`` / ``_empty``)."""
    return nbformat.read(course / "autograder" / "examples" / student / lab / notebook, as_version=4)


def grade_batch(course: Path, lab: str, students: dict[str, nbformat.NotebookNode], notebook: str,
                timeout: int = 1800, expect_exit: int = 0, args: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Add ``students`` to the course copy's examples and run ``rlcourse grade LAB [ARGS]`` over all of them.

    Without ``--workers`` in ``args`` the batch is graded one submission at a time (``--workers 1``):
    ``make test`` already runs two tests at once, one per core.

    Returns ``summary`` (autograder/summary.csv rows by student), ``grades`` (grades.csv rows),
    ``proc``, ``seconds``, and the examples' digests ``before`` and ``after`` grading.
    """
    examples = course / "autograder" / "examples"
    for student, nb in students.items():
        (examples / student / lab).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, examples / student / lab / notebook)
    before = digest(examples)
    env = dict(os.environ, RLCOURSE_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    env.pop("RLCOURSE_PINNED_METRICS", None)
    start = time.perf_counter()
    # A generous per-submission limit: a training cell that takes a minute on a quiet 2-core
    # machine takes many more when the machine is shared; a timeout here would be a false alarm.
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("rlcourse")), "grade", lab, "--course-dir", str(course),
         "--timeout", str(timeout), *([] if "--workers" in args else ["--workers", "1"]), *args],
        cwd=course, env=env, capture_output=True, text=True, timeout=7200, stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == expect_exit, f"rlcourse grade exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    with open(course / "autograder" / "summary.csv", newline="") as f:
        summary = {row["student"]: row for row in csv.DictReader(f)}
    with open(course / "autograder" / "grades.csv", newline="") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f)}
    print(f"\n[{lab} grading batch: {seconds:.0f} s]\n{proc.stdout}")
    return {"course": course, "proc": proc, "summary": summary, "grades": grades, "before": before,
            "after": digest(examples), "examples": examples, "seconds": seconds}


def shows_number(text: str, value: float) -> bool:
    """Whether ``text`` contains ``value`` written in any way (58, 58.0, 58.00, 5.8e1)."""
    import math
    import re

    return any(math.isclose(float(tok), float(value), rel_tol=1e-9, abs_tol=1e-12)
               for tok in re.findall(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", text))


def points(row: dict[str, str], cells: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Per-test-cell points of one summary row."""
    return {cell: float(row[cell]) for cell in cells}


def serve_pins(monkeypatch: Any, folder: Path, lab: str, pins: dict[str, Any],
               config_dict: str | None = "rlcourse.grading.common.config_dict") -> dict[str, Any]:
    """Serve ``lab``'s ``pins`` from a copy in ``folder`` (the pipeline's env variable) and make the
    agent-config check see the pinned config (``config_dict`` names where the check looks it up;
    ``None``: the check sees the agent's real config)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pinned_metrics.json"
    path.write_text(json.dumps({lab: pins}))
    monkeypatch.setenv("RLCOURSE_PINNED_METRICS", str(path))
    if config_dict is not None:
        monkeypatch.setattr(config_dict, lambda cfg: dict(pins["agent_config"]))
    return pins


MODES = ("in_process", "graded")


def check_verdict(entry: Any, *args: Any, mode: str, folder: Path) -> str | None:
    """Run a hidden check's entry point the way ``mode`` does: ``"in_process"`` (both halves in
    this process, as in the instructor's notebook) or ``"graded"`` (cases written, the sandbox
    half with the grading folder set, records reloaded as tensors only, judged). Returns
    ``None`` when the check passes, else the failure message."""
    from rlcourse.grading import judge

    if mode == "graded":
        return judge.simulate(entry.check, *args, folder=folder)
    try:
        entry(*args)
    except AssertionError as exc:
        return str(exc)
    return None
