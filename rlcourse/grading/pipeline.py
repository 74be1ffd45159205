"""``rlcourse grade [LAB]`` / ``make grade``: the instructor's grading pipeline.

For every lab (default: all labs in ``solutions/``)::

    1. generate   nbgrader generate_assignment   (gradebook entry, checksums, hidden tests)
    2. collect    <submissions>/<student>/<lab>/*.ipynb  ->  autograder/submitted/<student>/<lab>/
                  (copies; the originals are only read)
    3. autograde  nbgrader autograde --student S, one subprocess per student with a
                  wall-clock limit: a failing or hanging submission is recorded, the batch goes on
    4. feedback   nbgrader generate_feedback --student S (hidden tests redacted, see feedback.py)
    5. export     nbgrader export -> autograder/grades.csv
                  + autograder/summary.csv: one row per graded submission with its status,
                  score, per-test-cell points, seconds and log file

Every step runs nbgrader's own command line (``python -m nbgrader ...``) with the course's
``autograder/nbgrader_config.py``. Submissions come from ``--submissions``, else from
``autograder/submitted/`` if it holds any for the lab, else from ``autograder/examples/``
(three synthetic students, so a fresh clone has something to grade).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcourse.grading.feedback import contains_hidden_tests
from rlcourse.grading.release import (
    EXAMPLES_RELPATH,
    find_course_dir,
    nbgrader_command,
    nbgrader_env,
    resolve_labs,
    run_nbgrader,
)

SUBMITTED_RELPATH = Path("autograder") / "submitted"
FEEDBACK_RELPATH = Path("autograder") / "feedback"
WORK_RELPATH = Path("autograder") / ".work"
GRADES_RELPATH = Path("autograder") / "grades.csv"
SUMMARY_RELPATH = Path("autograder") / "summary.csv"


@dataclass
class Outcome:
    """What happened to one submission."""

    lab: str
    student: str
    status: str = "pending"  # graded | timeout | autograde_failed | feedback_failed
    score: float = 0.0
    max_score: float = 0.0
    cells: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    feedback: str = ""
    log: str = ""
    detail: str = ""


# --------------------------------------------------------------------------- processes
def run_with_timeout(cmd: list[str], timeout: float, log_path: Path, cwd: Path,
                     env: dict[str, str] | None = None) -> tuple[int | None, float]:
    """Run ``cmd`` writing stdout+stderr to ``log_path``; returns ``(exit status, seconds)``.

    The status is ``None`` if the wall-clock ``timeout`` expired. Then the process and every
    process it started are killed: Jupyter starts kernels in a session of their own, so
    killing the process group alone would leave a student's kernel running.
    """
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _kill_tree(proc.pid, psutil)
            proc.wait()
            log.write(f"\n[rlcourse grade] stopped after the wall-clock limit of {timeout:g} s\n")
    return code, time.perf_counter() - start


def _kill_tree(pid: int, psutil: Any) -> None:
    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


# --------------------------------------------------------------------------- steps
def choose_submissions(course_dir: Path, lab: str, submissions: str | os.PathLike | None) -> Path:
    """The folder of ``<student>/<lab>/*.ipynb`` to grade (see the module docstring)."""
    if submissions is not None:
        folder = Path(submissions).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"submissions folder {folder} does not exist")
        return folder
    submitted = course_dir / SUBMITTED_RELPATH
    if any(submitted.glob(f"*/{lab}/*.ipynb")):
        return submitted
    return course_dir / EXAMPLES_RELPATH


def collect(course_dir: Path, lab: str, source: Path) -> list[str]:
    """Copy every ``source/<student>/<lab>/`` folder into nbgrader's submitted folder.

    Returns the student ids, sorted. The originals are only read; a stale copy of the same
    student is replaced so that nothing from an earlier batch leaks into this one.
    """
    submitted = course_dir / SUBMITTED_RELPATH
    students = sorted({p.parent.parent.name for p in source.glob(f"*/{lab}/*.ipynb")
                       if not p.parent.parent.name.startswith(".")})
    for student in students:
        _check_student_id(student)
    for student in students:
        if source.resolve() == submitted.resolve():
            continue
        target = submitted / student / lab
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source / student / lab, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return students


def _check_student_id(student: str) -> None:
    # nbgrader rejects some characters in ids (they become path and glob parts).
    if any(ch in student for ch in "+*?[]/\\ ") or student.startswith("."):
        raise ValueError(f"submission folder {student!r} is not a valid student id (no spaces, +, *, ?, [, ], /)")


def autograde(course_dir: Path, lab: str, student: str, timeout: float) -> Outcome:
    """``nbgrader autograde LAB --student S --force`` in its own process, with a wall-clock limit."""
    log_path = course_dir / WORK_RELPATH / "logs" / lab / f"{student}.autograde.log"
    cmd = nbgrader_command(course_dir, "autograde", lab, f"--student={student}", "--force")
    code, seconds = run_with_timeout(cmd, timeout, log_path, course_dir, env=nbgrader_env())
    out = Outcome(lab, student, seconds=round(seconds, 1), log=str(log_path.relative_to(course_dir)))
    if code is None:
        out.status, out.detail = "timeout", f"stopped after {timeout:g} s"
    elif code != 0:
        out.status, out.detail = "autograde_failed", _last_error(log_path)
    else:
        out.status = "graded"
    return out


def _last_error(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if "ERROR" in ln]
    return lines[-1][:300] if lines else "nbgrader exited with an error (see the log)"


def read_scores(course_dir: Path, out: Outcome) -> None:
    """Fill ``out`` with the submission's total and per-test-cell scores from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    db_url = "sqlite:///" + str(course_dir / "autograder" / "gradebook.db")
    with Gradebook(db_url) as gb:
        try:
            submission = gb.find_submission(out.lab, out.student)
        except MissingEntry:
            return
        out.max_score = float(submission.max_score)
        if out.status != "graded":
            # A half-finished autograde leaves half-written grades; the submission scores 0.
            gb.remove_submission(out.lab, out.student)
            return
        out.score = float(submission.score)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.max_score > 0:
                    out.cells[grade.name] = None if grade.score is None else float(grade.score)


def feedback(course_dir: Path, out: Outcome) -> None:
    """``nbgrader generate_feedback`` for one graded submission; then check nothing hidden leaked."""
    log_path = course_dir / WORK_RELPATH / "logs" / out.lab / f"{out.student}.feedback.log"
    cmd = nbgrader_command(course_dir, "generate_feedback", out.lab, f"--student={out.student}", "--force")
    code, _ = run_with_timeout(cmd, 300, log_path, course_dir, env=nbgrader_env())
    folder = course_dir / FEEDBACK_RELPATH / out.student / out.lab
    pages = sorted(folder.glob("*.html"))
    if code != 0 or not pages:
        out.status, out.detail = "feedback_failed", _last_error(log_path)
        return
    for page in pages:
        if contains_hidden_tests(page.read_text(errors="replace")):
            page.unlink()
            out.status, out.detail = "feedback_failed", f"{page.name} contained hidden tests; deleted"
            return
    out.feedback = ", ".join(str(p.relative_to(course_dir)) for p in pages)


def write_summary(path: Path, outcomes: list[Outcome]) -> None:
    """One row per submission: status, score, points of every test cell, seconds, files."""
    cells: list[str] = []
    for o in outcomes:
        cells += [c for c in o.cells if c not in cells]
    header = ["lab", "student", "status", "score", "max_score", *cells, "seconds", "feedback", "log", "detail"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for o in outcomes:
            w.writerow([o.lab, o.student, o.status, f"{o.score:g}", f"{o.max_score:g}",
                        *("" if o.cells.get(c) is None else f"{o.cells[c]:g}" for c in cells),
                        f"{o.seconds:.1f}", o.feedback, o.log, o.detail])


# --------------------------------------------------------------------------- pipeline
def grade(
    lab: str | None = None,
    submissions: str | os.PathLike | None = None,
    course_dir: str | os.PathLike | None = None,
    timeout: float = 900,
) -> int:
    """Grade every submission of ``lab`` (default: every lab); see the module docstring.

    Args:
        lab: a lab id such as ``"lab2_ppo"``; ``None`` grades all labs.
        submissions: folder of ``<student>/<lab>/<notebook>.ipynb``.
        course_dir: the course root (default: the repository).
        timeout: wall-clock seconds one submission may take to autograde.

    Returns:
        0 if every submission was graded, 1 if some timed out or could not be graded
        (they are listed in the summary with their status and log), so CI notices.
    """
    from tqdm.auto import tqdm

    from rlcourse.grading.pins import check_pins_current

    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    root = find_course_dir(course_dir)
    labs = resolve_labs(root, lab)
    quiet = bool(os.environ.get("RLCOURSE_NO_PROGRESS"))
    outcomes: list[Outcome] = []
    # Grades against a pass mark measured with other hyperparameters would be silently wrong.
    check_pins_current(root, labs)
    for name in labs:
        source = choose_submissions(root, name, submissions)
        print(f"[{name}] generating the assignment (nbgrader generate_assignment)", flush=True)
        run_nbgrader(root, "generate_assignment", name, "--force",
                     f"--CourseDirectory.release_directory={root / WORK_RELPATH / 'release'}")
        students = collect(root, name, source)
        print(f"[{name}] {len(students)} submission(s) from {source}", flush=True)
        bar = tqdm(students, desc=f"autograde {name}", unit="student", disable=quiet or not students)
        for student in bar:
            bar.set_postfix_str(student)
            out = autograde(root, name, student, timeout)
            read_scores(root, out)
            if out.status == "graded":
                feedback(root, out)
            else:
                # Never leave an earlier batch's feedback looking like this one's.
                shutil.rmtree(root / FEEDBACK_RELPATH / student / name, ignore_errors=True)
            outcomes.append(out)
            tqdm.write(f"  {student:<24} {out.status:<16} {out.score:g}/{out.max_score:g}  ({out.seconds:.0f} s)")
    grades_csv = root / GRADES_RELPATH
    run_nbgrader(root, "export", f"--to={grades_csv}")
    summary_csv = root / SUMMARY_RELPATH
    write_summary(summary_csv, outcomes)
    print(f"wrote {grades_csv.relative_to(root)} and {summary_csv.relative_to(root)}; "
          f"feedback in {FEEDBACK_RELPATH}/", flush=True)
    bad = [o for o in outcomes if o.status != "graded"]
    for o in bad:
        print(f"not graded: {o.lab}/{o.student}: {o.status}: {o.detail} (log: {o.log})", flush=True)
    return 1 if bad else 0
