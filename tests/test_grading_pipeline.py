"""The grading pipeline's own behaviours, in-process and fast (the same for every lab, so tested
once, on lab 2's files): pins lookup, unknown labs, collecting submissions, feedback redaction,
process limits and nbgrader's start-up. Round trips through the real CLI are in
tests/test_labs_roundtrip.py (every lab) and tests/test_grading_hostile.py (hostile cells).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import nbformat
import pytest

from rlcourse.grading import common, pipeline
from rlcourse.grading.feedback import RedactHiddenTests

from grading_helpers import digest

REPO = Path(__file__).resolve().parents[1]
LAB = "lab2_ppo"
NOTEBOOK = f"{LAB}.ipynb"


def test_find_pins_walks_up_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(common.PINS_ENV_VAR, raising=False)
    pins = tmp_path / "course" / "autograder" / "pinned_metrics.json"
    pins.parent.mkdir(parents=True)
    pins.write_text(json.dumps({LAB: {"marker": 1}}))
    deep = tmp_path / "course" / "autograder" / "autograded" / "alice" / LAB
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert common.find_pins() == pins
    assert common.load_pins(LAB) == {"marker": 1}
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({LAB: {"marker": 2}}))
    monkeypatch.setenv(common.PINS_ENV_VAR, str(other))
    assert common.load_pins(LAB) == {"marker": 2}
    monkeypatch.setenv(common.PINS_ENV_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match=common.PINS_ENV_VAR):
        common.find_pins()


def test_pin_rejects_an_unknown_lab(run_cli: Callable) -> None:
    proc = run_cli(["pin", "lab9_nope"], cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "lab9_nope" in proc.stderr


def test_grade_rejects_an_unknown_lab_and_a_missing_folder(run_cli: Callable, tmp_path: Path) -> None:
    proc = run_cli(["grade", "lab9_nope"], cwd=REPO)
    assert proc.returncode == 2 and "unknown lab 'lab9_nope'" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.choose_submissions(REPO, LAB, tmp_path / "missing")


def test_collect_copies_submissions_and_replaces_stale_copies(tmp_path: Path) -> None:
    course, source = tmp_path / "course", tmp_path / "incoming"
    for student in ("alice", "bob"):
        (source / student / LAB).mkdir(parents=True)
        (source / student / LAB / NOTEBOOK).write_text(f"{student}'s work")
    (source / "carol" / "other_lab").mkdir(parents=True)  # another lab: not collected
    (source / "carol" / "other_lab" / "x.ipynb").write_text("{}")
    stale = course / pipeline.SUBMITTED_RELPATH / "alice" / LAB / "old_file.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier batch")
    before = digest(source)
    assert pipeline.collect(course, LAB, source) == (["alice", "bob"], [])
    assert digest(source) == before
    copied = course / pipeline.SUBMITTED_RELPATH
    assert (copied / "bob" / LAB / NOTEBOOK).read_text() == "bob's work"
    assert not stale.exists()
    # The earlier copy is kept aside, not deleted.
    assert [p.read_text() for p in (course / pipeline.WORK_RELPATH / "replaced").rglob("old_file.txt")] == [
        "from an earlier batch"]


def test_collect_copies_only_notebooks_and_skips_ids_nbgrader_would_mangle(tmp_path: Path) -> None:
    course, source = tmp_path / "course", tmp_path / "incoming"
    work = source / "alice" / LAB
    (work / "autograder").mkdir(parents=True)
    (work / NOTEBOOK).write_text("alice's work")
    # Files that would sit next to the notebook while it is graded: fake pins, a fake package.
    (work / "autograder" / "pinned_metrics.json").write_text('{"lab2_ppo": {"training": {"threshold": -1e9}}}')
    (work / "rlcourse").mkdir()
    (work / "rlcourse" / "__init__.py").write_text("")
    (work / "link.ipynb").symlink_to(work / NOTEBOOK)
    for bad in ("bad name", "smith,john", "~root", "x'y"):
        (source / bad / LAB).mkdir(parents=True)
        (source / bad / LAB / NOTEBOOK).write_text("{}")
    students, rejected = pipeline.collect(course, LAB, source)
    assert students == ["alice"]
    assert sorted(o.student for o in rejected) == sorted(["bad name", "smith,john", "~root", "x'y"])
    assert all(o.status == "invalid_id" and "not a valid student id" in o.detail for o in rejected)
    copied = course / pipeline.SUBMITTED_RELPATH / "alice" / LAB
    assert sorted(p.name for p in copied.iterdir()) == [NOTEBOOK]


# --------------------------------------------------------------------------- feedback redaction
def test_redaction_removes_hidden_tests_and_their_traceback() -> None:
    cell = nbformat.v4.new_code_cell(
        "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(3) == 0.123456\n### END HIDDEN TESTS",
        metadata={"nbgrader": {"grade": True, "grade_id": "t", "points": 1, "locked": True, "solution": False,
                               "schema_version": 3}},
    )
    cell.outputs = [nbformat.v4.new_output(
        "error", ename="AssertionError", evalue="values differ",
        traceback=["----", "      1 assert f(1) == 2", "----> 3 assert f(3) == 0.123456"])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = RedactHiddenTests().preprocess(nb, {})
    text = json.dumps(nb)
    assert "0.123456" not in text and "HIDDEN" not in text
    assert nb.cells[0].source == "assert f(1) == 2"
    assert nb.cells[0].outputs[0]["traceback"] == ["AssertionError: values differ"]


# --------------------------------------------------------------------------- processes
def test_run_with_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    """A hanging submission is stopped, kernel included (Jupyter starts kernels in their own session)."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    code, seconds = pipeline.run_with_timeout([sys.executable, "-c", script], 3, tmp_path / "log.txt", tmp_path)
    assert code is None and seconds < 300     # returned long before the 600 s sleeps: no hang
    assert "wall-clock limit" in (tmp_path / "log.txt").read_text()
    import psutil

    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_run_with_timeout_returns_the_exit_status(tmp_path: Path) -> None:
    code, _ = pipeline.run_with_timeout([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], 60,
                                        tmp_path / "log.txt", tmp_path)
    assert code == 3 and "hi" in (tmp_path / "log.txt").read_text()


def test_nbgrader_command_starts_nbgrader_without_the_slow_import_and_alembic_process(tmp_path: Path) -> None:
    import sqlite3

    from rlcourse.grading import nbgrader_alembic_head, release

    # The course's config file runs inside the nbgrader process: it reports what that process
    # loaded, after what every nbgrader command does (load and validate a notebook).
    seen = tmp_path / "seen.json"
    (tmp_path / "autograder").mkdir()
    (tmp_path / release.CONFIG_RELPATH).write_text(textwrap.dedent(f"""
        import json, sys
        import nbformat, nbgrader.api, rlcourse.grading
        nbformat.validate(nbformat.v4.new_notebook())
        with open({str(seen)!r}, "w") as f:
            json.dump([sys.modules.get("rfc3987_syntax") is None, "jsonschema" in sys.modules,
                       nbgrader.api.get_alembic_version is rlcourse.grading.nbgrader_alembic_head], f)
        get_config().CourseDirectory.db_url = "sqlite:///{tmp_path / 'gradebook.db'}"
    """))
    # No `alembic` executable on PATH: a new gradebook must get its revision in-process.
    env = {**release.nbgrader_env(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(release.nbgrader_command(tmp_path, "db", "student", "add", "alice"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(seen.read_text()) == [True, True, True]
    with sqlite3.connect(tmp_path / "gradebook.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(nbgrader_alembic_head(),)]


def test_the_in_process_alembic_revision_is_what_nbgrader_gets_from_alembic_heads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """nbgrader's own get_alembic_version, with ``alembic -c INI heads`` run by alembic's command
    function in this process (what the executable runs, without a new Python: 2.6 s)."""
    import io

    import nbgrader.api
    from alembic import command
    from alembic.config import Config

    from rlcourse.grading import nbgrader_alembic_head

    def alembic_cli(argv: list[str]) -> bytes:
        assert argv[0] == "alembic" and argv[1] == "-c" and argv[3:] == ["heads"], argv
        out = io.StringIO()
        command.heads(Config(argv[2], stdout=out))
        return out.getvalue().encode()

    monkeypatch.setattr(nbgrader.api.sp, "check_output", alembic_cli)
    expected = nbgrader.api.get_alembic_version()
    assert len(expected) == 12 and nbgrader_alembic_head() == expected


def test_grading_warns_when_the_pins_come_from_another_machine(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from rlcourse.machine import versions

    here = versions()
    (tmp_path / "autograder").mkdir()
    (tmp_path / common.PINS_RELPATH).write_text(json.dumps({
        "lab_same": {"versions": here},
        "lab_other": {"versions": {**here, "cpu": "Some Other CPU", "torch": "1.0"}},
    }))
    pipeline.warn_other_machine(tmp_path, ["lab_same", "lab_other"])
    out = capsys.readouterr().out
    assert "lab_same" not in out
    assert "warning: lab_other was pinned on another machine" in out
    assert "cpu: pinned 'Some Other CPU'" in out and "torch: pinned '1.0'" in out and "rlcourse pin lab_other" in out
