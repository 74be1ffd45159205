"""Grading several submissions at once (``rlcourse grade --workers N``, Dask) and on PostgreSQL.

These tests grade a tiny synthetic course (one notebook, one test cell, no training) whose
students sleep, answer wrongly, tamper with the pins or try to kill their Dask worker. (A worker
that really dies is tested with a stub executor in ``test_grading_inputs.py``: from inside the
sandbox a submission cannot reach its worker.) The PostgreSQL
test grades the tiny lab with two workers into a server it starts itself (lab round trips with the
real labs are in test_labs_roundtrip.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from rlcourse.grading import common


REPO = Path(__file__).resolve().parents[1]
TINY = "tiny"


# --------------------------------------------------------------------------- a tiny course
def _cell(source: str, grade_id: str, **roles: Any) -> nbformat.NotebookNode:
    meta = {"grade": False, "solution": False, "locked": False, "grade_id": grade_id, "schema_version": 3, **roles}
    return new_code_cell(textwrap.dedent(source).strip(), metadata={"nbgrader": meta})


def tiny_source() -> nbformat.NotebookNode:
    """One solution cell, one test cell worth 1 point (it is also the lab's graded cell)."""
    return new_notebook(cells=[
        _cell("SEED = 0", "parameters", locked=True),
        _cell("""
            def answer():
                ### BEGIN SOLUTION
                return 42
                ### END SOLUTION
        """, "answer", solution=True),
        _cell("assert answer() == 42", common.TRAINING_CELL, grade=True, locked=True, points=1),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def tiny_course(root: Path) -> Path:
    """A course with the repository's nbgrader configuration and one lab, ``tiny``."""
    (root / "solutions" / TINY).mkdir(parents=True)
    (root / "autograder").mkdir()
    shutil.copyfile(REPO / "autograder" / "nbgrader_config.py", root / "autograder" / "nbgrader_config.py")
    nb = tiny_source()
    nbformat.write(nb, root / "solutions" / TINY / f"{TINY}.ipynb")
    from rlcourse.machine import versions

    pins = {TINY: {"protocol": common.protocol(nb), "versions": versions()}}
    (root / common.PINS_RELPATH).write_text(json.dumps(pins))
    return root


def submission(answer_body: str) -> nbformat.NotebookNode:
    """The tiny lab with its solution cell answered by ``answer_body`` (module-level code allowed)."""
    nb = tiny_source()
    nb.cells[1].source = textwrap.dedent(answer_body).strip()
    return nb


RIGHT_SLOW = """
    import time
    time.sleep(4)
    def answer():
        return 42
"""
WRONG_SLOW = """
    import time
    time.sleep(4)
    def answer():
        return 0
"""
# Without the sandbox the kernel's grandparent is the Dask worker process; inside it, the
# sandbox's own init, so the kill ends only this submission's kernel.
KILLS_ITS_WORKER = """
    import os, psutil
    psutil.Process().parent().parent().kill()
    os._exit(1)
"""
# Overwrites the course's pins (a student who knows where the course lives on the grading machine).
TAMPERS_WITH_PINS = """
    import pathlib
    pathlib.Path({pins!r}).write_text("{{}}")
    def answer():
        return 42
"""


def write_submissions(folder: Path, students: dict[str, nbformat.NotebookNode], lab: str = TINY) -> Path:
    for student, nb in students.items():
        (folder / student / lab).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / student / lab / f"{lab}.ipynb")
    return folder


def read_csv(path: Path, key: str) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row[key]: row for row in csv.DictReader(f)}


def interval(row: dict[str, str]) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(row["started"]), dt.datetime.fromisoformat(row["finished"])


def overlap(a: dict[str, str], b: dict[str, str]) -> float:
    """Seconds during which both submissions were being graded."""
    (s1, f1), (s2, f2) = interval(a), interval(b)
    return (min(f1, f2) - max(s1, s2)).total_seconds()


def grade_tiny(run_cli: Callable, course: Path, subs: Path, *args: str) -> tuple[subprocess.CompletedProcess,
                                                                               dict[str, dict[str, str]]]:
    proc = run_cli(["grade", TINY, "--course-dir", str(course), "--submissions", str(subs), "--timeout", "300",
                    *args], cwd=course, timeout=900)
    summary = read_csv(course / "autograder" / "summary.csv", "student")
    return proc, summary


# --------------------------------------------------------------------------- the tiny course
@pytest.mark.slow  # ~40-70 s: four sandboxed submissions on a fresh Dask cluster
def test_dask_grades_in_parallel_and_a_submission_cannot_kill_its_worker(run_cli: Callable, tmp_path: Path) -> None:
    course = tiny_course(tmp_path / "course")
    subs = write_submissions(tmp_path / "incoming", {
        "ann": submission(RIGHT_SLOW), "cat": submission(WRONG_SLOW),  # graded at the same time
        "dan": submission(KILLS_ITS_WORKER),                           # tries to kill its worker
        "bad name": submission(RIGHT_SLOW),                           # not a usable student id
    })
    proc, summary = grade_tiny(run_cli, course, subs, "--workers", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "a local Dask cluster of 2" in proc.stdout
    assert {s: r["status"] for s, r in summary.items()} == {
        "ann": "graded", "cat": "graded", "dan": "graded", "bad name": "invalid_id"}, summary
    assert (summary["ann"]["score"], summary["cat"]["score"], summary["dan"]["score"]) == ("1", "0", "0")
    # Two worker processes graded ann and cat during the same seconds.
    assert summary["ann"]["worker"] != summary["cat"]["worker"]
    assert overlap(summary["ann"], summary["cat"]) > 2, (summary["ann"], summary["cat"])
    # The course's gradebook got the merged results; the per-task copies are gone.
    grades = read_csv(course / "autograder" / "grades.csv", "student_id")
    assert {s: float(r["score"]) for s, r in grades.items()} == {"ann": 1.0, "cat": 0.0, "dan": 0.0}
    assert not list((course / "autograder" / ".work" / "gradebooks").rglob("*.db"))
    assert (course / summary["ann"]["feedback"]).is_file() and (course / summary["dan"]["feedback"]).is_file()


@pytest.mark.slow
def test_tampering_beside_another_submission_regrades_both_alone(run_cli: Callable, tmp_path: Path) -> None:
    """Without the sandbox (a trusted class) the guard is the defence: serially the tampering one is
    caught at once; in parallel both are suspects, graded again alone at the end: the results are
    the same, the innocent one loses nothing. (In the sandbox the write fails: test_grading_hostile.)"""
    results = {}
    for workers in ("1", "2"):
        course = tiny_course(tmp_path / f"course{workers}")
        pins = (course / common.PINS_RELPATH).read_bytes()
        tampers = TAMPERS_WITH_PINS.format(pins=str(course / common.PINS_RELPATH))
        students = {"ann": submission(RIGHT_SLOW), "ben": submission(tampers)}
        subs = write_submissions(tmp_path / f"incoming{workers}", students)
        proc, summary = grade_tiny(run_cli, course, subs, "--workers", workers, "--no-sandbox")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert (course / common.PINS_RELPATH).read_bytes() == pins
        results[workers] = summary
        grades = read_csv(course / "autograder" / "grades.csv", "student_id")
        assert {s: float(r["score"]) for s, r in grades.items()} == {"ann": 1.0, "ben": 0.0}
        assert summary["ben"]["status"] == "tampered" and "pinned_metrics.json (restored)" in summary["ben"]["detail"]
        assert summary["ann"]["status"] == "graded" and summary["ann"]["score"] == "1"
    assert results["2"]["ann"]["detail"].startswith("graded again alone: something changed while ann, ben were ")
    assert overlap(results["2"]["ann"], results["2"]["ben"]) < 0       # the final runs did not overlap
    same = ["status", "score", "max_score", common.TRAINING_CELL]
    assert {s: [r[c] for c in same] for s, r in results["1"].items()} == \
        {s: [r[c] for c in same] for s, r in results["2"].items()}


@pytest.mark.slow  # two CLI start-ups with the grading imports
def test_grade_rejects_bad_dask_and_db_options(run_cli: Callable, tmp_path: Path) -> None:
    course = tiny_course(tmp_path / "course")
    proc = run_cli(["grade", TINY, "--course-dir", str(course), "--db", "mysql://x@y/z"], cwd=course)
    assert proc.returncode == 2 and "--db expects" in proc.stderr
    proc = run_cli(["grade", TINY, "--course-dir", str(course), "--workers", "2", "--scheduler", "tcp://h:1"],
                   cwd=course)
    assert proc.returncode == 2 and "--scheduler" in proc.stderr


# --------------------------------------------------------------------------- PostgreSQL
def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own (initdb + pg_ctl in a temporary folder, a free port on
    127.0.0.1, trust authentication) with an empty database; stopped afterwards.

    The server refuses to run as root: as root it runs as the ``postgres`` user (created by the
    Debian package) via ``runuser``, in a folder that user owns.
    """
    bindir = _postgres_bin()
    if bindir is None:
        why = "PostgreSQL's server (initdb, pg_ctl) is not installed"
        if os.environ.get("CI") or shutil.which("apt-get"):
            pytest.fail(f"{why}; run `make setup` (it installs the Debian package postgresql)")
        pytest.skip(f"{why} and this machine has no apt-get to install it")
    folder = Path(tempfile.mkdtemp(prefix="rlcourse_pg_"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, cwd=folder)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off", "start")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE grading")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/grading"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_grade_into_postgres(run_cli: Callable, postgres_url: str, tmp_path: Path) -> None:
    """``rlcourse grade tiny --workers 2 --db postgresql://...``: two submissions graded during the
    same seconds, both written into one PostgreSQL gradebook (no SQLite file in the course)."""
    course = tiny_course(tmp_path / "course")
    subs = write_submissions(tmp_path / "incoming", {"ann": submission(RIGHT_SLOW), "cat": submission(WRONG_SLOW)})
    before = {p: p.read_bytes() for p in subs.rglob("*.ipynb")}
    proc, summary = grade_tiny(run_cli, course, subs, "--workers", "2", "--db", postgres_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a local Dask cluster of 2" in proc.stdout
    expected = {"ann": 1.0, "cat": 0.0}
    assert {s: (r["status"], float(r["score"])) for s, r in summary.items()} == \
        {s: ("graded", v) for s, v in expected.items()}, summary
    assert summary["ann"]["worker"] != summary["cat"]["worker"]
    assert overlap(summary["ann"], summary["cat"]) > 2, (summary["ann"], summary["cat"])
    assert {s: float(r["score"]) for s, r in read_csv(course / "autograder" / "grades.csv", "student_id").items()} \
        == expected
    assert not (course / "autograder" / "gradebook.db").exists()
    from nbgrader.api import Gradebook

    from rlcourse.grading.pipeline import check_db_url

    with Gradebook(check_db_url(postgres_url)) as gb:   # (postgresql:// gets the psycopg2 driver)
        assert {s.student.id: s.score for s in gb.assignment_submissions(TINY)} == expected
        assert gb.find_assignment(TINY).max_score == 1
        cells = {g.name: g.score for nb in gb.find_submission(TINY, "cat").notebooks for g in nb.grades}
        assert cells == {common.TRAINING_CELL: 0.0}
    assert {p: p.read_bytes() for p in subs.rglob("*.ipynb")} == before, "grading modified a submission"
