"""``rlcourse grade [LAB]`` / ``make grade``: the instructor's grading pipeline.

For every lab (default: all labs in ``solutions/``)::

    1. generate   nbgrader generate_assignment   (gradebook entry, checksums, hidden tests)
    2. collect    <submissions>/<student>/<lab>/*.ipynb  ->  autograder/submitted/<student>/<lab>/
                  (notebooks only; the originals are only read, earlier copies kept aside)
    3. autograde  nbgrader autograde --student S, one subprocess per student with a
                  wall-clock limit: a failing or hanging submission is recorded, the batch goes on;
                  the grading inputs are compared before and after (see "tampering" below)
    4. feedback   nbgrader generate_feedback --student S (hidden tests redacted, see feedback.py;
                  only the HTML pages are kept)
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
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcourse.grading.feedback import contains_hidden_tests
from rlcourse.grading.common import PINS_ENV_VAR, PINS_RELPATH, check_pins_current
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
GRADEBOOK_RELPATH = Path("autograder") / "gradebook.db"


@dataclass
class Outcome:
    """What happened to one submission."""

    lab: str
    student: str
    status: str = "pending"  # graded | timeout | autograde_failed | feedback_failed | tampered | invalid_id
    score: float = 0.0
    max_score: float = 0.0
    cells: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    feedback: str = ""
    log: str = ""
    detail: str = ""


def warn_other_machine(course_dir: Path, labs: list[str]) -> None:
    """Print a warning for each lab pinned on another CPU or with other library versions: the same
    code and seeds train differently there, so a correct solution can land elsewhere than the
    reference seeds did (the pass mark's margin is meant to absorb that; re-pin to be sure)."""
    from rlcourse.grading.common import machine_differences

    pinned = json.loads((course_dir / PINS_RELPATH).read_text())
    for lab in labs:
        differences = machine_differences(pinned[lab].get("versions", {}))
        if differences:
            print(f"warning: {lab} was pinned on another machine ({'; '.join(differences)}); training results "
                  f"can differ here. `rlcourse pin {lab}` re-measures the reference on this machine.", flush=True)


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
        except BaseException:
            # Ctrl+C reaches only us (the child runs in a session of its own): stop it too.
            _kill_tree(proc.pid, psutil)
            raise
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


def collect(course_dir: Path, lab: str, source: Path) -> tuple[list[str], list[Outcome]]:
    """Copy the notebooks of every ``source/<student>/<lab>/`` into nbgrader's submitted folder.

    Returns the student ids to grade (sorted) and an outcome for every folder that cannot be
    graded (an id nbgrader would mangle). Only ``*.ipynb`` files are copied: a data file or a
    package folder in a submission would otherwise sit next to the notebook while it runs
    (an ``autograder/pinned_metrics.json`` or an ``rlcourse/`` there would be found first).
    Symbolic links are not followed. The originals are only read; an earlier copy of the same
    submission is moved to ``autograder/.work/replaced/<time>/`` rather than deleted.
    """
    submitted = course_dir / SUBMITTED_RELPATH
    names = sorted({p.parent.parent.name for p in source.glob(f"*/{lab}/*.ipynb")
                    if not p.parent.parent.name.startswith(".")})
    students, rejected = [], []
    for student in names:
        problem = _student_id_problem(student)
        if problem:
            rejected.append(Outcome(lab, student, status="invalid_id", detail=problem))
        else:
            students.append(student)
    if source.resolve() == submitted.resolve():
        return students, rejected
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for student in students:
        target = submitted / student / lab
        if target.exists():
            backup = course_dir / WORK_RELPATH / "replaced" / stamp / student / lab
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(target), backup)
        target.mkdir(parents=True)
        for nb in sorted((source / student / lab).glob("*.ipynb")):
            if nb.is_file() and not nb.is_symlink():
                shutil.copyfile(nb, target / nb.name)
    return students, rejected


STUDENT_ID = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9_.@-]*")


def _student_id_problem(student: str) -> str:
    """Why ``student`` cannot be a grading id, or ``""``. nbgrader turns ids into paths, globs
    and shell-like arguments (``~x``, quotes and trailing blanks change), and writes them
    into grades.csv unquoted, so only letters, digits and ``_ . @ -`` are accepted."""
    if STUDENT_ID.fullmatch(student):
        return ""
    return (f"submission folder {student!r} is not a valid student id "
            "(letters, digits, _ . @ - only; not starting with '.'); rename it and grade again")


def autograde(course_dir: Path, lab: str, student: str, timeout: float) -> Outcome:
    """``nbgrader autograde LAB --student S --force`` in its own process, with a wall-clock limit."""
    log_path = course_dir / WORK_RELPATH / "logs" / lab / f"{student}.autograde.log"
    cmd = nbgrader_command(course_dir, "autograde", lab, f"--student={student}", "--force")
    env = nbgrader_env()
    # The hidden checks read the course's pins, never a file found near the submission.
    env[PINS_ENV_VAR] = str(course_dir / PINS_RELPATH)
    code, seconds = run_with_timeout(cmd, timeout, log_path, course_dir, env=env)
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


def _gradebook_url(course_dir: Path) -> str:
    return "sqlite:///" + str(course_dir / GRADEBOOK_RELPATH)


def read_scores(course_dir: Path, out: Outcome) -> None:
    """Fill ``out`` with the submission's total and per-test-cell scores from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(_gradebook_url(course_dir)) as gb:
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
    # nbgrader copies every other file of the graded folder into the feedback, so whatever a
    # notebook wrote there while it ran (a copy of a solution, say) would go back to the student.
    for extra in sorted(folder.iterdir()) if folder.is_dir() else []:
        if extra.is_dir() and not extra.is_symlink():
            shutil.rmtree(extra)
        elif extra.suffix != ".html" or extra.is_symlink():
            extra.unlink()
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


# --------------------------------------------------------------------------- tampering
# A submission runs as the instructor's user, and nbgrader runs the hidden tests in the same
# kernel, so a hostile notebook can reach files outside its folder. These checks cannot stop
# that (run `make grade` in a container or as a separate user for that), but they make sure
# it cannot change *other* submissions' grades unnoticed: the grading inputs are compared
# before and after every submission, the pins and the gradebook are put back, and a change
# that cannot be undone stops the batch.
def _tree_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for root in paths:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        else:
            files = []
        for f in files:
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _protected_files(course_dir: Path) -> list[Path]:
    import rlcourse

    return [course_dir / "solutions", course_dir / "labs", course_dir / SUBMITTED_RELPATH,
            course_dir / EXAMPLES_RELPATH, course_dir / "autograder" / "nbgrader_config.py",
            Path(rlcourse.__file__).resolve().parent]


def _gradebook_snapshot(course_dir: Path, lab: str, student: str) -> dict[tuple[str, ...], Any]:
    """Every other submission's score and every lab's source and test cells, from the gradebook."""
    from nbgrader.api import Gradebook

    snap: dict[tuple[str, ...], Any] = {}
    with Gradebook(_gradebook_url(course_dir)) as gb:
        for assignment in gb.assignments:
            for nb in assignment.notebooks:
                for cell in nb.source_cells:
                    snap[("source", assignment.name, nb.name, cell.name)] = cell.source
                for cell in nb.grade_cells:
                    snap[("points", assignment.name, nb.name, cell.name)] = cell.max_score
            for sub in gb.assignment_submissions(assignment.name):
                if (assignment.name, sub.student.id) != (lab, student):
                    snap[("score", assignment.name, sub.student.id)] = sub.score
    return snap


class _Guard:
    """Compares the grading inputs before and after one submission (see above)."""

    def __init__(self, course_dir: Path, pins_copy: Path) -> None:
        self.root, self.pins_copy = course_dir, pins_copy
        self.pins, self.db = course_dir / PINS_RELPATH, course_dir / GRADEBOOK_RELPATH
        self.db_copy = course_dir / WORK_RELPATH / "gradebook.before.db"

    def before(self, lab: str, student: str) -> None:
        self.files = _tree_digest(_protected_files(self.root))
        self.grades = _gradebook_snapshot(self.root, lab, student)
        shutil.copyfile(self.db, self.db_copy)

    def after(self, out: Outcome) -> bool:
        """Record what the submission changed in ``out`` (undone where possible); ``True`` if
        something could not be undone, so the batch must stop."""
        changed = []
        if self.pins.read_bytes() != self.pins_copy.read_bytes():
            shutil.copyfile(self.pins_copy, self.pins)
            changed.append(f"{PINS_RELPATH} (restored)")
        if _gradebook_snapshot(self.root, out.lab, out.student) != self.grades:
            shutil.copyfile(self.db_copy, self.db)
            changed.append("other submissions' records in the gradebook (restored)")
        files_changed = _tree_digest(_protected_files(self.root)) != self.files
        if files_changed:
            changed.append("files outside its folder (solutions, labs, submissions, config or the "
                           "rlcourse package): NOT restored")
        if changed:
            out.status, out.score, out.cells = "tampered", 0.0, {}
            out.detail = "changed " + "; ".join(changed)
            _remove_submission(self.root, out.lab, out.student)
        return files_changed


def _remove_submission(course_dir: Path, lab: str, student: str) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(_gradebook_url(course_dir)) as gb:
        try:
            gb.remove_submission(lab, student)
        except MissingEntry:
            pass


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

    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    root = find_course_dir(course_dir)
    labs = resolve_labs(root, lab)
    quiet = bool(os.environ.get("RLCOURSE_NO_PROGRESS"))
    outcomes: list[Outcome] = []
    summary_csv = root / SUMMARY_RELPATH
    # Grades against a pass mark measured for another graded run would be silently wrong.
    check_pins_current(root, labs)
    warn_other_machine(root, labs)
    pins_copy = root / WORK_RELPATH / "pinned_metrics.batch.json"
    pins_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / PINS_RELPATH, pins_copy)
    guard = _Guard(root, pins_copy)
    for name in labs:
        source = choose_submissions(root, name, submissions)
        print(f"[{name}] generating the assignment (nbgrader generate_assignment)", flush=True)
        run_nbgrader(root, "generate_assignment", name, "--force",
                     f"--CourseDirectory.release_directory={root / WORK_RELPATH / 'release'}")
        students, rejected = collect(root, name, source)
        outcomes += rejected
        print(f"[{name}] {len(students)} submission(s) from {source}", flush=True)
        bar = tqdm(students, desc=f"autograde {name}", unit="student", disable=quiet or not students)
        for student in bar:
            bar.set_postfix_str(student)
            guard.before(name, student)
            out = autograde(root, name, student, timeout)
            read_scores(root, out)
            must_stop = guard.after(out)
            if out.status == "graded":
                feedback(root, out)
            else:
                # Never leave an earlier batch's feedback looking like this one's.
                shutil.rmtree(root / FEEDBACK_RELPATH / student / name, ignore_errors=True)
            outcomes.append(out)
            write_summary(summary_csv, outcomes)      # after every submission: a crash loses nothing
            tqdm.write(f"  {student:<24} {out.status:<16} {out.score:g}/{out.max_score:g}  ({out.seconds:.0f} s)")
            if must_stop:
                raise RuntimeError(f"{name}/{student} {out.detail}; grading stopped. Check `git status` and the "
                                   f"submission originals, then grade again ({summary_csv} lists what was graded).")
    grades_csv = root / GRADES_RELPATH
    run_nbgrader(root, "export", f"--to={grades_csv}")
    write_summary(summary_csv, outcomes)
    print(f"wrote {grades_csv.relative_to(root)} and {summary_csv.relative_to(root)}; "
          f"feedback in {FEEDBACK_RELPATH}/", flush=True)
    bad = [o for o in outcomes if o.status != "graded"]
    for o in bad:
        print(f"not graded: {o.lab}/{o.student}: {o.status}: {o.detail} (log: {o.log})", flush=True)
    return 1 if bad else 0
