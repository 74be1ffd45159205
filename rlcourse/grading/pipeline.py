"""``rlcourse grade [LAB]`` / ``make grade``: the instructor's grading pipeline.

For every lab (default: all labs in ``solutions/``)::

    1. generate   nbgrader generate_assignment   (gradebook entry, checksums, hidden tests)
    2. collect    <submissions>/<student>/<lab>/<lab>.ipynb  ->  autograder/submitted/<student>/<lab>/
                  (the lab's notebook only; the originals are only read, earlier copies kept
                  aside); a bad input ends here with a status and a reason (see "bad inputs")
       skip       a submission graded before with the same content keeps its outcome (see "re-runs")
    3. grade      one task per submission (:func:`grade_submission`), several at once:
                  autograde  nbgrader autograde --student S in its own process with a
                             wall-clock limit: a failing or hanging submission is recorded,
                             the batch goes on
                  scores     the submission's total and per-test-cell points, from the gradebook
                  feedback   nbgrader generate_feedback --student S (hidden tests redacted, see
                             feedback.py; only the HTML pages are kept)
                  the grading inputs are compared while the batch runs (see "tampering" below);
                  a task that fails (its worker dies, it raises) is tried once more, and a
                  second failure is recorded: status ``error``, "failed twice" in ``detail``
    4. export     nbgrader export -> autograder/grades.csv
                  + autograder/summary.csv: one row per submission with its status, score,
                  per-test-cell points, seconds, log file, and when and where it was graded;
                  rewritten as each result arrives, so an interrupted batch keeps what it graded

Every step runs nbgrader's own command line (``python -m nbgrader ...``) with the course's
``autograder/nbgrader_config.py``. Submissions come from ``--submissions``, else from
``autograder/submitted/`` if it holds any for the lab, else from ``autograder/examples/``
(three synthetic students, so a fresh clone has something to grade).

Bad inputs. :func:`collect` checks each submission before nbgrader sees it, reading only regular
files (no link followed, nothing outside the submissions folder read) and never writing the
originals; the batch goes on. ``invalid_submission``: the student's or the lab's folder is a
link or not a folder. ``missing_notebook``: no ``<lab>.ipynb`` (a wrongly named notebook is
named in ``detail``), or it is a link, a FIFO or another non-regular file. ``invalid_notebook``:
not UTF-8, not JSON, not a version 4 notebook, or larger than ``MAX_NOTEBOOK_BYTES`` (not read).
Graded with a note in ``flags``: other notebooks in the folder (ignored), test cells deleted (put
back from the lab and graded), cells pasted twice (the last copy is graded), stored output
over ``STRIP_OUTPUTS_BYTES`` (removed from the copy; autograde clears it anyway). Only the copy
is repaired, where nbgrader 0.9 would otherwise stop with a traceback.

Re-runs. When a submission's outcome is settled with status ``graded``,
``autograder/.work/done/<lab>/<student>.json`` records it with its key: the digests of the
submitted notebook, of the lab's pins entry, of its source notebook and of the grading code
(the ``rlcourse`` package and the nbgrader configuration), the sandbox setting and the
gradebook. A later batch reuses that outcome (its summary row, with "unchanged since <time>,
not graded again" in ``detail``; its gradebook records and feedback stay) while the key holds
and the records and feedback are still there. The record is deleted when the submission's
grading starts, so an interrupted batch leaves records only for what it completed.
``regrade=True`` (``rlcourse grade --regrade``) grades everything again.

Parallel and distributed grading. The tasks run on a Dask ``distributed`` cluster: by default
a ``LocalCluster`` with one single-threaded worker process per core (``workers``), or the
cluster of an existing scheduler (``scheduler="tcp://host:8786"``; every worker must see the
course folder at the same path, e.g. on a shared file system). ``workers=1`` grades in this
process, one submission after the other, without Dask. The parent process keeps at most one
task per worker thread in flight, merges results, checks for tampering and writes the summary.

The gradebook. nbgrader cannot autograde in parallel against one SQLite file (jupyter/nbgrader
#174; its FAQ: SQLite is not thread-safe), and SQLite over a network file system is unsafe
anyway. So with the default SQLite gradebook each task autogrades against a copy of it made
for that task (``autograder/.work/gradebooks/<lab>/<student>.db``), and the parent alone
writes ``autograder/gradebook.db``: it merges the submission's records from the copy when the
result arrives. With ``db="postgresql://..."`` every nbgrader command of the pipeline uses
that server (``CourseDirectory.db_url``) and the tasks write to it directly.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from rlcourse.grading.execute import REPORT_VAR, SANDBOX_VAR, WALL_VAR
from rlcourse.grading.feedback import contains_hidden_tests
from rlcourse.grading.common import PINS_ENV_VAR, PINS_RELPATH, check_pins_current
from rlcourse.grading.release import (
    CONFIG_RELPATH,
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
COPIES_RELPATH = WORK_RELPATH / "gradebooks"
NO_SANDBOX = "NOT SANDBOXED (--no-sandbox): student code ran unisolated, with the grader's rights"


@dataclass
class Outcome:
    """What happened to one submission."""

    lab: str
    student: str
    # graded | timeout | autograde_failed | feedback_failed | tampered | invalid_id
    # | invalid_submission | missing_notebook | invalid_notebook (see collect)
    # | error (the task itself failed twice, e.g. its worker died) | retry (failed once, to be tried again)
    # | regrade (to be graded again alone)
    status: str = "pending"
    score: float = 0.0
    max_score: float = 0.0
    cells: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    feedback: str = ""
    log: str = ""
    detail: str = ""
    started: float = 0.0    # when the task started and finished (Unix time, the worker's clock)
    finished: float = 0.0
    worker: str = ""        # host:pid of the process that graded it
    sandbox: str = ""       # how its code ran: "bubblewrap", or the opt-out warning
    reasons: str = ""       # why graded cells failed, "cell: reason; ..." (the grader's judge, the sandbox)
    flags: str = ""         # for a human to review, e.g. a near-copy of a reference implementation
    # What the task itself saw changed (its gradebook copy); judged by the parent, not written out.
    changed: list[str] = field(default_factory=list)


class GradingStopped(Exception):
    """A task was asked to stop (Ctrl+C or a stopped batch); its processes were killed."""


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
                     env: dict[str, str] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[int | None, float]:
    """Run ``cmd`` writing stdout+stderr to ``log_path``; returns ``(exit status, seconds)``.

    The status is ``None`` if the wall-clock ``timeout`` expired. Then the process and every
    process it started are killed: Jupyter starts kernels in a session of their own, so
    killing the process group alone would leave a student's kernel running. The same happens,
    and :class:`GradingStopped` is raised, when ``should_stop()`` (asked about once a second)
    turns true: a task on a Dask worker never sees the parent's Ctrl+C.
    """
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_dies_with_parent(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code: int | None = _wait(proc, timeout, should_stop)
        except subprocess.TimeoutExpired:
            code = None
            _kill_tree(proc.pid, psutil)
            proc.wait()
            log.write(f"\n[rlcourse grade] stopped after the wall-clock limit of {timeout:g} s\n")
        except GradingStopped:
            _kill_tree(proc.pid, psutil)
            proc.wait()
            log.write("\n[rlcourse grade] stopped: the batch was interrupted\n")
            raise
        except BaseException:
            # Ctrl+C reaches only us (the child runs in a session of its own): stop it too.
            _kill_tree(proc.pid, psutil)
            raise
    return code, time.perf_counter() - start


def _dies_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` killed (SIGKILL) when the thread that started it ends: a Dask worker that dies (killed
    by a submission, or out of memory) would otherwise leave its nbgrader process running, past
    any time limit; the kernel then exits too (ipykernel watches its parent). ``setpriv`` comes
    with util-linux; elsewhere the command runs as it is."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else list(cmd)


def _wait(proc: subprocess.Popen, timeout: float, should_stop: Callable[[], bool] | None) -> int:
    if should_stop is None:
        return proc.wait(timeout=timeout)
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            return proc.wait(timeout=min(1.0, left))
        except subprocess.TimeoutExpired:
            if should_stop():
                raise GradingStopped("the batch was interrupted") from None


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


# Stored output above this size is removed from the copy that is graded (autograde clears every
# output before it runs the notebook anyway); a file above the limit is not read at all.
STRIP_OUTPUTS_BYTES = 20 * 2**20
MAX_NOTEBOOK_BYTES = 512 * 2**20


def collect(course_dir: Path, lab: str, source: Path, expected: dict[str, list[dict[str, Any]]] | None = None,
            notes: dict[str, str] | None = None) -> tuple[list[str], list[Outcome]]:
    """Copy the notebooks of every ``source/<student>/<lab>/`` into nbgrader's submitted folder.

    Returns the student ids to grade (sorted) and an outcome for every folder that cannot be
    graded: ``invalid_id`` (an id nbgrader would mangle), ``invalid_submission`` (the student's
    or the lab's folder is a symbolic link or not a folder). Only ``*.ipynb`` files are copied:
    a data file or a package folder in a submission would otherwise sit next to the notebook
    while it runs (an ``autograder/pinned_metrics.json`` or an ``rlcourse/`` there would be found
    first). Symbolic links are not followed and nothing but regular files is read, so nothing
    outside ``source`` is. The originals are only read; an earlier copy of the same submission
    is moved to ``autograder/.work/replaced/<time>/`` rather than deleted (an identical one stays).

    With ``expected`` (:func:`expected_cells`: the lab's notebook names and their nbgrader
    cells) each submission is checked first (:func:`_check_notebook`), and only the expected
    notebooks are copied: ``missing_notebook`` (none of that name, or it is a link or not a
    regular file), ``invalid_notebook`` (not UTF-8, not JSON, not a notebook, too large). What
    grading gets round is written into ``notes`` (student -> text, for the summary's flags):
    other notebooks ignored, and what the copy to grade repairs (missing test cells put back,
    duplicated cells, stored output removed).
    """
    submitted = course_dir / SUBMITTED_RELPATH
    in_place = source.resolve() == submitted.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    students, rejected = [], []
    for student in _submission_folders(source, lab):
        problem = _student_id_problem(student)
        if problem:
            rejected.append(Outcome(lab, student, status="invalid_id", detail=problem))
            continue
        status, detail, files, note = _read_submission(source / student, lab, expected)
        if status:
            rejected.append(Outcome(lab, student, status=status, detail=detail))
        else:
            students.append(student)
            if note and notes is not None:
                notes[student] = note
        target = submitted / student / lab
        if in_place:
            # Grading the submitted folder itself: the original stays, unless its copy to grade differs.
            if files and any((target / name).read_bytes() != data for name, data in files.items()):
                _put_aside(course_dir, stamp, student, lab, copy=True)
                for name, data in files.items():
                    (target / name).write_bytes(data)
            continue
        if _holds(target, files):
            continue
        if target.exists() or target.is_symlink():
            _put_aside(course_dir, stamp, student, lab)
        if files:
            target.mkdir(parents=True)
            for name, data in files.items():
                (target / name).write_bytes(data)
    return students, rejected


def _submission_folders(source: Path, lab: str) -> list[str]:
    """The names in ``source`` that hold a submission of ``lab``: folders with a ``lab`` entry, and
    links (rejected later, never followed)."""
    names = []
    for entry in os.scandir(source):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() or (entry.is_dir(follow_symlinks=False) and os.path.lexists(Path(entry.path) / lab)):
            names.append(entry.name)
    return sorted(names)


def _read_submission(folder: Path, lab: str, expected: dict[str, list[dict[str, Any]]] | None
                     ) -> tuple[str, str, dict[str, bytes], str]:
    """``(status, detail, files, note)`` for the submission ``folder/lab``: a status and its reason if
    it cannot be graded, else the notebooks to grade (name -> bytes) and what grading gets round."""
    where = f"{folder.name}/{lab}"
    for path, name in ((folder, folder.name), (folder / lab, where)):
        if path.is_symlink():
            return "invalid_submission", f"{name} is a symbolic link; not followed", {}, ""
        if not path.is_dir():
            return "invalid_submission", f"{name} is not a folder", {}, ""
    entries = {e.name: e for e in os.scandir(folder / lab) if e.name.endswith(".ipynb")}
    regular = sorted(n for n, e in entries.items() if e.is_file(follow_symlinks=False))
    if expected is None:
        return "", "", {n: _read_regular(folder / lab / n) for n in regular}, ""
    files, notes = {}, []
    for name, lab_cells in expected.items():
        entry = entries.get(name)
        if entry is None:
            others = sorted(set(entries) - set(expected))
            found = f"; found {', '.join(others)}: rename it to {name}" if others else "; it holds no notebook"
            return "missing_notebook", f"no {name} in {where}/{found}", {}, ""
        if not entry.is_file(follow_symlinks=False):
            kind = "a symbolic link" if entry.is_symlink() else "not a regular file"
            return "missing_notebook", f"{where}/{name} is {kind}; not read", {}, ""
        size = entry.stat(follow_symlinks=False).st_size
        if size > MAX_NOTEBOOK_BYTES:
            return ("invalid_notebook", f"{name} is {size / 2**20:.0f} MB, more than the "
                    f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MB a notebook may have; not read", {}, "")
        try:
            data = _read_regular(folder / lab / name)
        except OSError as exc:
            return "missing_notebook", f"{where}/{name} cannot be read: {exc.strerror or exc}", {}, ""
        problem, data, note = _check_notebook(data, lab_cells)
        if problem:
            return "invalid_notebook", f"{name} {problem}", {}, ""
        files[name] = data
        notes += [f"{name}: {note}"] if note else []
    ignored = sorted(set(entries) - set(expected))
    if ignored:
        notes.append(f"ignored {', '.join(ignored)} (only {', '.join(expected)} is graded)")
    return "", "", files, "; ".join(notes)


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (never through a link, never blocking on a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        return f.read()


def _check_notebook(data: bytes, lab_cells: list[dict[str, Any]]) -> tuple[str, bytes, str]:
    """``(problem, data to grade, note)`` for a submitted notebook's bytes: why nbgrader cannot read
    it, or the bytes to grade and what grading gets round.

    The copy to grade is repaired where nbgrader would stop with a traceback (nbgrader 0.9's
    ``OverwriteCells.add_missing_cells`` fails on a cell whose grade id ``DeduplicateIds``
    removed, and on a missing test cell whose previous cell is not an answer or a test cell):
    of a duplicated cell (grade id) only the last copy keeps its nbgrader metadata, a missing
    test cell is put back from the lab (``lab_cells``, the release's nbgrader cells, in order)
    after the cell it follows there (nbgrader then restores its hidden tests and grades it),
    and stored output is removed from a large notebook (autograde clears it before it runs).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", data, ""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", data, ""
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(cells, list) or not all(
            isinstance(c, dict) and isinstance(c.get("cell_type"), str) and isinstance(c.get("metadata", {}), dict)
            and isinstance(c.get("source", ""), (str, list)) for c in cells):
        return "is not a Jupyter notebook (version 4: an object with a list of cells)", data, ""
    notes, repaired = [], False
    ids: list[str | None] = []
    for cell in cells:
        meta = cell.get("metadata", {})
        grade_id = meta["nbgrader"].get("grade_id") if isinstance(meta.get("nbgrader"), dict) else None
        if "nbgrader" in meta and not isinstance(grade_id, str):
            del meta["nbgrader"]  # nbgrader metadata without a grade id: not a cell nbgrader knows
            repaired = True
        ids.append(grade_id if isinstance(grade_id, str) else None)
    twice = sorted({g for g in ids if g is not None and ids.count(g) > 1})
    for i, grade_id in enumerate(ids):
        if grade_id in twice and grade_id in ids[i + 1:]:
            del cells[i]["metadata"]["nbgrader"]
            ids[i], repaired = None, True
    if twice:
        notes.append(f"cells {', '.join(twice)} duplicated (the last copy is graded)")
    missing = [c["metadata"]["nbgrader"]["grade_id"] for c in lab_cells
               if c["metadata"]["nbgrader"].get("grade") and c["metadata"]["nbgrader"]["grade_id"] not in ids]
    if missing:
        rank = {c["metadata"]["nbgrader"]["grade_id"]: k for k, c in enumerate(lab_cells)}
        for grade_id in missing:
            # After the submission's cell that comes last in the lab before this one (else first).
            earlier = [(rank[g], i) for i, g in enumerate(ids) if g in rank and rank[g] < rank[grade_id]]
            at = max(earlier)[1] + 1 if earlier else 0
            cells.insert(at, json.loads(json.dumps(lab_cells[rank[grade_id]])))
            ids.insert(at, grade_id)
        notes.append(f"cells {', '.join(missing)} missing (put back from the lab, and graded)")
        repaired = True
    if len(data) > STRIP_OUTPUTS_BYTES:
        for cell in cells:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        notes.append(f"{len(data) / 2**20:.0f} MB with its stored output, removed before grading")
        repaired = True
    if repaired:
        data = (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()
    return "", data, "; ".join(notes)


def _holds(target: Path, files: dict[str, bytes]) -> bool:
    """Whether the submitted folder ``target`` already holds exactly ``files`` (nothing to replace)."""
    if not files or target.is_symlink() or not target.is_dir():
        return False
    return (sorted(os.listdir(target)) == sorted(files)
            and all((target / n).is_file() and (target / n).read_bytes() == d for n, d in files.items()))


def _put_aside(course_dir: Path, stamp: str, student: str, lab: str, copy: bool = False) -> None:
    """Move (or copy) ``submitted/<student>/<lab>`` to ``.work/replaced/<stamp>/``: kept, not deleted."""
    target = course_dir / SUBMITTED_RELPATH / student / lab
    backup = course_dir / WORK_RELPATH / "replaced" / stamp / student / lab
    backup.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(target, backup, symlinks=True)
    else:
        shutil.move(str(target), backup)


def expected_cells(course_dir: Path, lab: str, release: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The lab's notebook names and their nbgrader cells (in order), from its release notebooks
    (``release``, default ``labs/<lab>``: the student's version of every cell)."""
    folder = release or course_dir / "labs" / lab
    expected = {}
    for path in sorted(folder.glob("*.ipynb")):
        expected[path.name] = [c for c in json.loads(path.read_text())["cells"]
                               if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")]
    if not expected:
        raise FileNotFoundError(f"no release notebook of {lab} in {folder}")
    return expected


STUDENT_ID = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9_.@-]*")


def _student_id_problem(student: str) -> str:
    """Why ``student`` cannot be a grading id, or ``""``. nbgrader turns ids into paths, globs
    and shell-like arguments (``~x``, quotes and trailing blanks change), and writes them
    into grades.csv unquoted, so only letters, digits and ``_ . @ -`` are accepted."""
    if STUDENT_ID.fullmatch(student):
        return ""
    return (f"submission folder {student!r} is not a valid student id "
            "(letters, digits, _ . @ - only; not starting with '.'); rename it and grade again")


def autograde(course_dir: Path, lab: str, student: str, timeout: float, *, db_url: str | None = None,
              should_stop: Callable[[], bool] | None = None, sandbox: bool = True) -> Outcome:
    """``nbgrader autograde LAB --student S --force`` in its own process, with a wall-clock limit,
    against the gradebook at ``db_url`` (default: the course's). The submission's code runs in
    the sandbox (``sandbox=False``: unisolated, for a trusted class); see execute.py."""
    log_path = course_dir / WORK_RELPATH / "logs" / lab / f"{student}.autograde.log"
    report = course_dir / WORK_RELPATH / "reports" / lab / f"{student}.jsonl"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    cmd = nbgrader_command(course_dir, "autograde", lab, f"--student={student}", "--force",
                           _db_option(db_url or gradebook_url(course_dir)))
    env = nbgrader_env()
    # The grader's judge reads the course's pins, never a file found near the submission.
    env[PINS_ENV_VAR] = str(course_dir / PINS_RELPATH)
    env[REPORT_VAR] = str(report)
    # The sandbox stops a little before the whole autograde would be killed: the cells that ran keep their points.
    env[WALL_VAR] = str(max(30.0, timeout - 60.0))
    env[SANDBOX_VAR] = "on" if sandbox else "off"
    code, seconds = run_with_timeout(cmd, timeout, log_path, course_dir, env=env, should_stop=should_stop)
    out = Outcome(lab, student, seconds=round(seconds, 1), log=str(log_path.relative_to(course_dir)))
    out.sandbox = "bubblewrap" if sandbox else NO_SANDBOX
    _read_report(report, out)
    if code is None:
        out.status, out.detail = "timeout", f"stopped after {timeout:g} s"
    elif code != 0:
        out.status, out.detail = "autograde_failed", _last_error(log_path)
    else:
        out.status = "graded"
    return out


def _read_report(path: Path, out: Outcome) -> None:
    """The grader's reasons and flags for the submission's notebooks (execute.py's report)."""
    if not path.is_file():
        return
    reasons, flags = [], []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        reasons += [f"{cell}: {reason}" for cell, reason in entry.get("reasons", {}).items()]
        flags += entry.get("flags", [])
        if entry.get("sandbox") == "off":
            out.sandbox = NO_SANDBOX
    out.reasons, out.flags = "; ".join(reasons), "; ".join(flags)


def _last_error(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if "ERROR" in ln]
    return lines[-1][:300] if lines else "nbgrader exited with an error (see the log)"


def read_scores(course_dir: Path, out: Outcome, db_url: str | None = None) -> None:
    """Fill ``out`` with the submission's total and per-test-cell scores from the gradebook."""
    from nbgrader.api import MissingEntry

    with _gradebook(db_url or gradebook_url(course_dir)) as gb:
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


def feedback(course_dir: Path, out: Outcome, db_url: str | None = None,
             should_stop: Callable[[], bool] | None = None) -> None:
    """``nbgrader generate_feedback`` for one graded submission; then check nothing hidden leaked."""
    log_path = course_dir / WORK_RELPATH / "logs" / out.lab / f"{out.student}.feedback.log"
    cmd = nbgrader_command(course_dir, "generate_feedback", out.lab, f"--student={out.student}", "--force",
                           _db_option(db_url or gradebook_url(course_dir)))
    code, _ = run_with_timeout(cmd, 300, log_path, course_dir, env=nbgrader_env(), should_stop=should_stop)
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


def _drop_feedback(course_dir: Path, lab: str, student: str) -> None:
    """Never leave an earlier batch's feedback looking like this one's."""
    shutil.rmtree(course_dir / FEEDBACK_RELPATH / student / lab, ignore_errors=True)


# --------------------------------------------------------------------------- one task
def grade_submission(course_dir: str, lab: str, student: str, timeout: float, db_url: str | None = None,
                     expected: str | None = None, stop: Any = None, sandbox: bool = True) -> Outcome:
    """One task of a batch, run by a Dask worker: autograde one submission, read its scores, write
    its feedback; returns its :class:`Outcome`.

    ``db_url`` is the gradebook the task writes (a SQLite copy made for it by the parent, or the
    PostgreSQL server); ``expected`` the digest of :func:`gradebook_records` of that copy without
    this submission, as the parent made it: if the copy's other records differ afterwards,
    ``Outcome.changed`` says so and the parent decides (see :class:`_Guard`). ``stop`` is the
    name of a ``distributed.Event`` (or a ``threading.Event``): once it is set the task kills its
    processes and raises :class:`GradingStopped`.
    """
    started = time.time()
    root = Path(course_dir)
    if not (root / CONFIG_RELPATH).is_file():
        raise FileNotFoundError(f"{root} is not a course folder on {socket.gethostname()}: every Dask worker "
                                "must see the course at the same path (a shared file system)")
    should_stop = _stop_check(stop)
    out = autograde(root, lab, student, timeout, db_url=db_url, should_stop=should_stop, sandbox=sandbox)
    read_scores(root, out, db_url)
    if expected is not None and _records_digest(gradebook_records(db_url, exclude=[(lab, student)])) != expected:
        out.changed.append("other submissions' records or the labs' cells in its gradebook copy")
    if out.status == "graded" and not out.changed:
        feedback(root, out, db_url, should_stop)
    else:
        _drop_feedback(root, lab, student)
    out.started, out.finished = started, time.time()
    out.worker = f"{socket.gethostname()}:{os.getpid()}"
    return out


def _stop_check(stop: Any) -> Callable[[], bool] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        from distributed import Event

        return Event(stop).is_set
    return stop.is_set


# --------------------------------------------------------------------------- gradebook
def gradebook_url(course_dir: Path, db: str | None = None) -> str:
    """The gradebook's SQLAlchemy URL: ``db``, else the course's SQLite file."""
    return db or "sqlite:///" + str(course_dir / GRADEBOOK_RELPATH)


def check_db_url(db: str) -> str:
    """``db`` if it is a SQLite or PostgreSQL URL nbgrader can use, else ``ValueError``.

    ``postgresql://`` gets the driver installed with the course (psycopg2): SQLAlchemy 2.1
    chose psycopg 3 for a URL without one.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db)
        backend = url.get_backend_name()
    except ArgumentError:
        backend = ""
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"--db expects a gradebook URL such as postgresql://user@host/grading or "
                         f"sqlite:////path/gradebook.db, got {_hide_password(db)!r}")
    if url.drivername == "postgresql":
        db = url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return db


def _hide_password(db: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(db).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", db)


def _is_sqlite(db_url: str) -> bool:
    return db_url.startswith("sqlite")


def _sqlite_path(db_url: str) -> Path:
    from sqlalchemy.engine import make_url

    return Path(make_url(db_url).database or "")


def _db_option(db_url: str) -> str:
    return f"--CourseDirectory.db_url={db_url}"


class _gradebook:
    """``with _gradebook(url) as gb``: an nbgrader ``Gradebook`` whose engine is disposed on exit
    (every ``Gradebook`` makes an engine; a PostgreSQL server would see its pooled connection
    stay open until the garbage collector finds it)."""

    def __init__(self, db_url: str) -> None:
        from nbgrader.api import Gradebook

        from rlcourse.grading import use_in_process_alembic

        use_in_process_alembic()  # a new gradebook without an `alembic` subprocess (2.6 s)
        self.gb = Gradebook(db_url)

    def __enter__(self) -> Any:
        return self.gb

    def __exit__(self, *exc: Any) -> None:
        self.gb.close()
        self.gb.engine.dispose()


def gradebook_records(db_url: str, exclude: Iterable[tuple[str, str]] = ()) -> dict[tuple[str, ...], Any]:
    """What no submission may change in the gradebook: every lab's cells (``("source", lab,
    notebook, cell)``: the source, ``("points", ...)``: a test cell's points) and every
    submission's grades (``("grade", lab, student, notebook, cell)``: auto, manual and extra
    points, needs-manual-grade; ``("submission", lab, student)``), without the submissions
    ``(lab, student)`` in ``exclude``. Three queries, whatever the size of the class."""
    from nbgrader.api import (Assignment, BaseCell, Grade, GradeCell, Notebook, SourceCell, SubmittedAssignment,
                              SubmittedNotebook)

    skip = set(exclude)
    records: dict[tuple[str, ...], Any] = {}
    with _gradebook(db_url) as gb:
        cells = (gb.db.query(Assignment.name, Notebook.name, SourceCell.name, SourceCell.source)
                 .select_from(SourceCell).join(Notebook, SourceCell.notebook_id == Notebook.id)
                 .join(Assignment, Notebook.assignment_id == Assignment.id))
        for lab, nb, cell, source in cells:
            records[("source", lab, nb, cell)] = source
        points = (gb.db.query(Assignment.name, Notebook.name, GradeCell.name, GradeCell.max_score)
                  .select_from(GradeCell).join(Notebook, GradeCell.notebook_id == Notebook.id)
                  .join(Assignment, Notebook.assignment_id == Assignment.id))
        for lab, nb, cell, max_score in points:
            records[("points", lab, nb, cell)] = max_score
        submissions = (gb.db.query(Assignment.name, SubmittedAssignment.student_id).select_from(SubmittedAssignment)
                       .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id))
        for lab, student in submissions:
            if (lab, student) not in skip:
                records[("submission", lab, student)] = True
        grades = (gb.db.query(Assignment.name, SubmittedAssignment.student_id, Notebook.name, BaseCell.name,
                              Grade.auto_score, Grade.manual_score, Grade.extra_credit, Grade.needs_manual_grade)
                  .select_from(Grade)
                  .join(SubmittedNotebook, Grade.notebook_id == SubmittedNotebook.id)
                  .join(SubmittedAssignment, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
                  .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
                  .join(Notebook, SubmittedNotebook.notebook_id == Notebook.id)
                  .join(BaseCell, Grade.cell_id == BaseCell.id))
        for lab, student, nb, cell, *values in grades:
            if (lab, student) not in skip:
                records[("grade", lab, student, nb, cell)] = tuple(values)
    return records


def _records_digest(records: dict[tuple[str, ...], Any]) -> str:
    return hashlib.sha256(json.dumps(sorted(records.items()), default=str).encode()).hexdigest()


def _owner(key: tuple[str, ...]) -> tuple[str, str] | None:
    """The submission ``(lab, student)`` a record belongs to; ``None`` for a lab's cells."""
    return (key[1], key[2]) if key[0] in ("grade", "submission") else None


def merge_submission(src_url: str, dst_url: str, lab: str, student: str) -> None:
    """Copy ``student``'s submission of ``lab`` (student record, timestamp, grades, comments,
    flags) from the gradebook at ``src_url`` into the one at ``dst_url``: the per-task copy's
    result into the course's gradebook (jupyter/nbgrader#174's "separate gradebooks, merged")."""
    import warnings

    from sqlalchemy.exc import SAWarning

    with _gradebook(src_url) as src, _gradebook(dst_url) as dst, warnings.catch_warnings():
        # nbgrader's add_submission makes SQLAlchemy warn about its autoflush (it does in
        # `nbgrader autograde` too); the rows are written all the same.
        warnings.simplefilter("ignore", SAWarning)
        sub = src.find_submission(lab, student)
        who = sub.student
        dst.update_or_create_student(student, first_name=who.first_name, last_name=who.last_name,
                                     email=who.email, lms_user_id=who.lms_user_id)
        target = dst.update_or_create_submission(lab, student)
        target.timestamp, target.extension = sub.timestamp, sub.extension
        for nb in sub.notebooks:
            into = dst.find_submission_notebook(nb.name, lab, student)
            into.flagged, into.late_submission_penalty = nb.flagged, nb.late_submission_penalty
            grades = {g.name: g for g in into.grades}
            for g in nb.grades:
                t = grades[g.name]
                t.auto_score, t.manual_score, t.extra_credit = g.auto_score, g.manual_score, g.extra_credit
                t.needs_manual_grade = g.needs_manual_grade
            comments = {c.name: c for c in into.comments}
            for c in nb.comments:
                comments[c.name].auto_comment, comments[c.name].manual_comment = c.auto_comment, c.manual_comment
        dst.db.commit()


def _remove_submission(db_url: str, lab: str, student: str, keep_student: bool = False) -> None:
    from nbgrader.api import MissingEntry

    with _gradebook(db_url) as gb:
        if keep_student:
            gb.update_or_create_student(student)
        try:
            gb.remove_submission(lab, student)
        except MissingEntry:
            pass


def _write_back(db_url: str, records: dict[tuple[str, ...], Any], keys: Iterable[tuple[str, ...]]) -> None:
    """Put the values of ``records`` back for ``keys`` (rows that still exist)."""
    with _gradebook(db_url) as gb:
        for key in keys:
            kind, value = key[0], records[key]
            if kind == "source":
                gb.find_source_cell(key[3], key[2], key[1]).source = value
            elif kind == "points":
                gb.find_grade_cell(key[3], key[2], key[1]).max_score = value
            elif kind == "grade":
                g = gb.find_grade(key[4], key[3], key[1], key[2])
                g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade = value
        gb.db.commit()


# --------------------------------------------------------------------------- tampering
# A submission runs as the instructor's user, and nbgrader runs the hidden tests in the same
# kernel, so a hostile notebook can reach files outside its folder. These checks cannot stop
# that (rlcourse/grading/sandbox.py can, or a container or a separate user), but they make sure
# it cannot change *other* submissions' grades unnoticed.
#
# Serially (workers=1) nothing changed from before parallel grading: the inputs are compared
# before and after every submission; a change to the pins or to the gradebook (other
# submissions' grades, the labs' cells) is put back and the submission is `tampered` (0 points);
# a changed file (solutions/, labs/, submitted/, examples/, the nbgrader config, the rlcourse
# package), which cannot be put back, stops the batch.
#
# With several submissions graded at once, what changed:
# * The comparisons are made when the batch starts and each time a result arrives (the files
#   against the batch's start; the pins against the batch's copy; the gradebook against its state
#   at the previous check, leaving out the records of the submissions being graded). A change is
#   undone as before, but it can come from any submission that was running since the previous
#   check. If that is only the one that just finished, it is `tampered` as before; otherwise every
#   one of them gets status `regrade` (scores dropped, feedback deleted) and is graded again at the
#   end of the batch *alone*, where a change again points at one submission. So an innocent
#   submission graded beside a hostile one loses nothing, and the hostile one is still caught.
# * Each task writes a gradebook copy of its own (SQLite), and only its own submission's records
#   are merged into the course's gradebook; the task checks that the copy's other records are
#   unchanged. A change there implicates every submission whose task overlapped that one's.
# * A changed file stops the batch as before: the submissions it may come from are `tampered`
#   (those still running are stopped), and grading stops with an error.
# * Not covered without the sandbox: a submission can change the files or gradebook copy of
#   another submission *being graded at the same time* in ways no comparison sees (its own
#   records, its autograded notebook). Grade a class you do not trust with workers=1.
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


def _protected_files(course_dir: Path, sandbox: bool = True) -> list[Path]:
    """The grading inputs a submission must not change. Sandboxed, none of them is even visible
    to it except the package, which it sees read-only (and which a developer may be editing
    while a batch runs); unsandboxed, the package is compared too."""
    import rlcourse

    files = [course_dir / "solutions", course_dir / "labs", course_dir / SUBMITTED_RELPATH,
             course_dir / EXAMPLES_RELPATH, course_dir / "autograder" / "nbgrader_config.py"]
    return files if sandbox else [*files, Path(rlcourse.__file__).resolve().parent]


GRADEBOOK_CHANGE = "other submissions' records or the labs' cells in the gradebook"


class _Guard:
    """Compares the grading inputs with their state at the last check and undoes changes (above)."""

    def __init__(self, course_dir: Path, db_url: str, pins_copy: Path, sandbox: bool = True) -> None:
        self.root, self.db_url, self.pins_copy, self.sandbox = course_dir, db_url, pins_copy, sandbox
        self.pins = course_dir / PINS_RELPATH
        self.backup = course_dir / WORK_RELPATH / "gradebook.checked.db" if _is_sqlite(db_url) else None
        self.files = ""
        self.records: dict[tuple[str, ...], Any] = {}

    def start(self) -> None:
        """At the start of a batch (after generate_assignment and collect)."""
        self.files = _tree_digest(_protected_files(self.root, self.sandbox))
        self.records = gradebook_records(self.db_url)
        self._save()

    def _save(self) -> None:
        if self.backup is not None:
            shutil.copyfile(_sqlite_path(self.db_url), self.backup)

    def check(self, busy: set[tuple[str, str]]) -> tuple[list[str], bool]:
        """What changed since the last check, undone where possible, leaving out the gradebook
        records of the ``busy`` submissions ``(lab, student)`` (being graded or just graded).
        Returns the changes and whether one of them could not be undone."""
        changed, fatal = [], False
        if self.pins.read_bytes() != self.pins_copy.read_bytes():
            shutil.copyfile(self.pins_copy, self.pins)
            changed.append(f"{PINS_RELPATH} (restored)")
        if self._gradebook_differs(busy):
            if self._restore_gradebook(busy):
                changed.append(f"{GRADEBOOK_CHANGE} (restored)")
            else:
                changed.append(f"{GRADEBOOK_CHANGE}: NOT restored (rows added or removed)")
                fatal = True
        if _tree_digest(_protected_files(self.root, self.sandbox)) != self.files:
            changed.append("files outside its folder (solutions, labs, submissions, config or the "
                           "rlcourse package): NOT restored")
            fatal = True
        return changed, fatal

    def _differences(self, now: dict[tuple[str, ...], Any], busy: set[tuple[str, str]]) -> set[tuple[str, ...]]:
        keys = {k for k in {*now, *self.records} if _owner(k) not in busy}
        return {k for k in keys if now.get(k, KeyError) != self.records.get(k, KeyError)}

    def _gradebook_differs(self, busy: set[tuple[str, str]]) -> bool:
        try:
            return bool(self._differences(gradebook_records(self.db_url), busy))
        except Exception:  # an unreadable gradebook (a submission overwrote the file)
            return True

    def _restore_gradebook(self, busy: set[tuple[str, str]]) -> bool:
        try:
            now = gradebook_records(self.db_url)
            diff = self._differences(now, busy)
            if all(k in now and k in self.records for k in diff):
                _write_back(self.db_url, self.records, diff)
        except Exception:
            pass
        if self.backup is not None and self._gradebook_differs(busy):
            # Rows added or removed, or an unreadable file: the SQLite file as last checked.
            shutil.copyfile(self.backup, _sqlite_path(self.db_url))
        return not self._gradebook_differs(busy)

    def accept(self, lab: str, student: str) -> None:
        """After the parent wrote ``student``'s records (merged or removed): they are the expected
        state from now on; everything else stays as last checked."""
        fresh = gradebook_records(self.db_url)
        self.records = {k: v for k, v in self.records.items() if _owner(k) != (lab, student)}
        self.records.update({k: v for k, v in fresh.items() if _owner(k) == (lab, student)})
        self._save()


# --------------------------------------------------------------------------- summary
def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).isoformat(timespec="milliseconds") if t else ""


def write_summary(path: Path, outcomes: list[Outcome]) -> None:
    """One row per submission: status, score, points of every test cell, seconds, files, and when
    (``started``/``finished``, the worker's local time) and where (``worker``, host:pid) it was graded."""
    cells: list[str] = []
    for o in outcomes:
        cells += [c for c in o.cells if c not in cells]
    header = ["lab", "student", "status", "score", "max_score", *cells, "seconds", "feedback", "log", "detail",
              "reasons", "flags", "sandbox", "started", "finished", "worker"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for o in outcomes:
            w.writerow([o.lab, o.student, o.status, f"{o.score:g}", f"{o.max_score:g}",
                        *("" if o.cells.get(c) is None else f"{o.cells[c]:g}" for c in cells),
                        f"{o.seconds:.1f}", o.feedback, o.log, o.detail, o.reasons, o.flags, o.sandbox,
                        _when(o.started), _when(o.finished), o.worker])
    os.replace(tmp, path)  # a crash while writing leaves the previous summary, never half of one


# --------------------------------------------------------------------------- what was graded
DONE_RELPATH = WORK_RELPATH / "done"


def _files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 of ``(name, path)`` pairs: every name and its file's bytes."""
    h = hashlib.sha256()
    for name, path in files:
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def grading_code_digest(course_dir: Path) -> str:
    """Digest of the grading code: the ``rlcourse`` package's ``.py`` files and the nbgrader configuration."""
    import rlcourse

    package = Path(rlcourse.__file__).resolve().parent
    files = [(str(p.relative_to(package)), p) for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts]
    return _files_digest([*files, ("nbgrader_config.py", course_dir / CONFIG_RELPATH)])


class _Done:
    """The submissions of a lab graded before, and with what (``autograder/.work/done/<lab>/<student>.json``).

    A record is written once a submission's outcome is settled (records in the gradebook, row in
    the summary) with status ``graded``, and deleted when its grading starts again, so an
    interrupted batch leaves records only for the submissions it completed. It holds the
    outcome and its key: the digests of the submitted notebooks, of the lab's pins entry, of its
    source notebooks and of the grading code, the sandbox setting and the gradebook.
    """

    def __init__(self, course_dir: Path, lab: str, db_url: str, sandbox: bool, code: str) -> None:
        self.root, self.lab, self.db_url = course_dir, lab, db_url
        pins = json.loads((course_dir / PINS_RELPATH).read_text()).get(lab)
        self.lab_key = {
            "pins": hashlib.sha256(json.dumps(pins, sort_keys=True).encode()).hexdigest(),
            "source": _files_digest((p.name, p) for p in sorted((course_dir / "solutions" / lab).glob("*.ipynb"))),
            "code": code, "sandbox": sandbox, "gradebook": _hide_password(db_url),
        }
        self.keys: dict[str, dict[str, Any]] = {}

    def _path(self, student: str) -> Path:
        return self.root / DONE_RELPATH / self.lab / f"{student}.json"

    def key(self, student: str) -> dict[str, Any]:
        """The key of ``student``'s submission as it is now in the submitted folder (kept for the batch)."""
        if student not in self.keys:
            folder = self.root / SUBMITTED_RELPATH / student / self.lab
            files = [(p.name, p) for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()]
            self.keys[student] = {**self.lab_key, "submission": _files_digest(files)}
        return self.keys[student]

    def previous(self, students: list[str]) -> dict[str, Outcome]:
        """The earlier outcome of each of ``students`` graded with the same key whose records and
        feedback are still there; its detail says it was not graded again."""
        with _gradebook(self.db_url) as gb:
            in_gradebook = {s.student_id for s in gb.find_assignment(self.lab).submissions}
        known = {f.name for f in fields(Outcome)} - {"changed"}
        reused = {}
        for student in students:
            try:
                saved = json.loads(self._path(student).read_text())
            except (OSError, ValueError):
                continue
            out = Outcome(**{k: v for k, v in saved.get("outcome", {}).items() if k in known})
            feedback = [self.root / page for page in out.feedback.split(", ") if page]
            if (saved.get("key") == self.key(student) and out.status == "graded" and student in in_gradebook
                    and feedback and all(page.is_file() for page in feedback)):
                out.detail = "; ".join(filter(None, [f"unchanged since {_when(out.finished)[:19]}, not graded again",
                                                     out.detail]))
                reused[student] = out
        return reused

    def remember(self, out: Outcome) -> None:
        """After ``out`` (status ``graded``) is settled: it need not be graded again while its key holds."""
        path = self._path(out.student)
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {"key": self.key(out.student), "outcome": {k: v for k, v in asdict(out).items() if k != "changed"}}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        os.replace(tmp, path)  # a crash leaves the previous record or none, never half of one

    def forget(self, student: str) -> None:
        """Before ``student`` is graded again (or rejected): no longer done."""
        self._path(student).unlink(missing_ok=True)


# --------------------------------------------------------------------------- where tasks run
def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class _InProcess:
    """``workers=1``: the tasks run in a thread of this process, one at a time (no Dask)."""

    description = "in this process, one submission at a time"

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlcourse-grade")
        self.event = threading.Event()

    def capacity(self) -> int:
        return 1

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self.pool.submit(grade_submission, *args, stop=self.event, **kwargs)

    def wait(self, futures: list[Any], timeout: float) -> set[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(futures, timeout=timeout, return_when=FIRST_COMPLETED).done

    def stop(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# Run by every worker of the local cluster when it starts. Ctrl+C in a terminal reaches every
# process of its group: a worker killed by it would leave its nbgrader processes (sessions of
# their own) running. The parent catches it and tells the tasks to stop instead.
_WORKER_PRELOAD = """
import signal

def dask_setup(worker):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
"""


def _sees_course(course_dir: str) -> bool:
    return (Path(course_dir) / CONFIG_RELPATH).is_file()


class _Dask:
    """The tasks run on a Dask cluster: a ``LocalCluster`` of ``workers`` single-threaded worker
    processes, or the cluster of the scheduler at ``scheduler``."""

    def __init__(self, course_dir: Path, workers: int | None, scheduler: str | None) -> None:
        import logging
        import uuid

        import dask
        from distributed import Client, Event, LocalCluster

        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="60s")
            self.description = f"on the Dask cluster at {scheduler}"
        else:
            # A submission that kills its worker fails at once instead of being tried on up to
            # three more workers, which it would kill too (the batch tries it once more itself,
            # see _Batch._retry); and a worker is sent a task only when its thread is free (the
            # tasks in flight are the ones running).
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.scheduler.worker-saturation": 1.0}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, memory_limit=0, silence_logs=logging.CRITICAL,
                                            preload=[_WORKER_PRELOAD])
            self.client = Client(self.cluster)
            self.description = f"on a local Dask cluster of {workers} single-threaded worker processes"
        try:
            blind = [w for w, ok in self.client.run(_sees_course, str(course_dir)).items() if not ok]
            if blind:
                raise RuntimeError(f"Dask worker(s) {', '.join(blind)} do not see the course at {course_dir}: "
                                   "every worker needs it at the same path (a shared file system)")
            self.event_name = f"rlcourse-grade-stop-{uuid.uuid4().hex}"
            self.event = Event(self.event_name, client=self.client)
        except BaseException:
            self.close()
            raise

    def capacity(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, course_dir: str, lab: str, student: str, *args: Any, **kwargs: Any) -> Any:
        return self.client.submit(grade_submission, course_dir, lab, student, *args, stop=self.event_name,
                                  pure=False, key=f"grade-{lab}-{student}-{time.time_ns()}", **kwargs)

    def wait(self, futures: list[Any], timeout: float) -> set[Any]:
        from distributed import wait

        try:
            return set(wait(futures, timeout=timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return set()

    def stop(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _executor(course_dir: Path, workers: int | None, scheduler: str | None) -> _InProcess | _Dask:
    if scheduler:
        return _Dask(course_dir, None, scheduler)
    workers = workers or default_workers()
    if workers == 1:
        return _InProcess()
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"grading on {workers} workers needs Dask: pip install 'rlcourse[grading]' "
                          "(or grade one submission at a time with --workers 1)") from exc
    return _Dask(course_dir, workers, None)


# --------------------------------------------------------------------------- one batch
def _task_error(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return ("its Dask worker process died while grading it (the submission killed it, or the machine ran "
                "out of memory)")
    return f"the grading task failed: {type(exc).__name__}: {exc}"[:300]


@dataclass(eq=False)
class _Task:
    student: str
    alone: bool = False      # graded again alone: nothing else runs meanwhile
    submitted: float = 0.0   # the parent's clock: [submitted, arrived] holds the task's run
    arrived: float = 0.0
    db_url: str = ""
    suspect: str = ""        # why it must be graded again alone (found while it ran)

    def overlaps(self, other: "_Task") -> bool:
        return self.submitted < (other.arrived or time.time()) and other.submitted < (self.arrived or time.time())


class _Batch:
    """Grades one lab's submissions: at most one task per worker thread in flight (so that the
    tasks in flight are the ones running), results judged and written as they arrive."""

    def __init__(self, root: Path, lab: str, executor: _InProcess | _Dask, guard: _Guard, db_url: str,
                 timeout: float, record: Callable[[Outcome], None], bar: Any, sandbox: bool = True,
                 notes: dict[str, str] | None = None, graded: _Done | None = None) -> None:
        self.root, self.lab, self.executor, self.guard, self.sandbox = root, lab, executor, guard, sandbox
        self.db_url, self.timeout, self.record, self.bar = db_url, timeout, record, bar
        self.notes = notes or {}   # student -> what collect() got round, added to the outcome's flags
        self.graded = graded       # remembers the submissions graded, to skip them in a later batch
        self.sqlite = _is_sqlite(db_url)
        self.queue: deque[_Task] = deque()
        self.running: dict[Any, _Task] = {}
        self.done: list[_Task] = []
        self.requeued: set[str] = set()
        self.failed: dict[str, str] = {}   # student -> why its task failed the first time

    def run(self, students: list[str]) -> None:
        self.queue.extend(_Task(s) for s in students)
        self.guard.start()
        try:
            while self.queue or self.running:
                while (self.queue and len(self.running) < self.executor.capacity()
                       and not any(t.alone for t in self.running.values())
                       and not (self.queue[0].alone and self.running)):
                    self._start(self.queue.popleft())
                for future in self.executor.wait(list(self.running), 1.0):
                    self._arrive(future)
        except BaseException:
            self._stop_running()
            raise

    def _start(self, task: _Task) -> None:
        if self.graded is not None:
            self.graded.forget(task.student)  # its folders are rewritten from now on: no longer done
        task.submitted, expected = time.time(), None
        task.db_url = self.db_url
        if self.sqlite:
            copy = self.root / COPIES_RELPATH / self.lab / f"{task.student}.db"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_sqlite_path(self.db_url), copy)
            task.db_url = "sqlite:///" + str(copy)
            expected = _records_digest(gradebook_records(task.db_url, exclude=[(self.lab, task.student)]))
        future = self.executor.submit(str(self.root), self.lab, task.student, self.timeout, task.db_url, expected,
                                      sandbox=self.sandbox)
        self.running[future] = task

    def _stop_running(self, wait_s: float = 60) -> None:
        """Tell the running tasks to stop and give them time to kill their processes."""
        if not self.running:
            return
        self.executor.stop()
        deadline = time.time() + wait_s
        while self.running and time.time() < deadline:
            for future in self.executor.wait(list(self.running), 1.0):
                self.running.pop(future, None)

    def _arrive(self, future: Any) -> None:
        task = self.running.pop(future)
        task.arrived = time.time()
        self.done.append(task)
        failed = False
        try:
            out = future.result()
        except Exception as exc:  # the task itself failed (its worker died, the course is not visible...)
            failed = True
            out = Outcome(self.lab, task.student, status="error", detail=_task_error(exc))
            log = WORK_RELPATH / "logs" / self.lab / f"{task.student}.autograde.log"
            out.log = str(log) if (self.root / log).is_file() else ""
            first = self.failed.get(task.student)
            if first is not None:
                out.detail = ("failed twice (tried again once): " + out.detail
                              + ("" if first == out.detail else f"; the first time: {first}"))
        out.flags = "; ".join(filter(None, [out.flags, self.notes.get(task.student, "")]))
        running = list(self.running.values())
        changed, fatal = self.guard.check({(self.lab, t.student) for t in [task, *running]})
        suspects = [task, *running] if changed else [task]
        if out.changed:
            changed += out.changed
            suspects += [t for t in [*self.done, *running] if t is not task and t.overlaps(task) and t not in suspects]
        if changed and fatal:
            self._stop_batch(task, out, suspects, changed)
        if changed and (len(suspects) == 1 or task.alone):
            out.status, out.score, out.cells, out.feedback = "tampered", 0.0, {}, ""
            out.detail = "changed " + "; ".join(changed)
        elif changed:
            reason = (f"something changed while {', '.join(sorted(t.student for t in suspects))} were graded "
                      "at the same time: " + "; ".join(changed))
            for t in suspects:
                if t is not task and t in running:
                    t.suspect = t.suspect or reason
                elif t is not task:
                    self._regrade(t, Outcome(self.lab, t.student), reason)
            self._regrade(task, out, reason)
            return
        elif task.suspect and not task.alone:
            self._regrade(task, out, task.suspect)
            return
        elif failed and task.student not in self.failed:
            self._retry(task, out)
            return
        elif task.alone and out.status == "graded":
            out.detail = "graded again alone: " + task.suspect
        self._settle(task, out)
        self.record(out)
        if self.graded is not None and out.status == "graded":
            self.graded.remember(out)  # settled and recorded: done
        if self.bar is not None:
            self.bar.update(1)
        self._print(out)

    def _settle(self, task: _Task, out: Outcome) -> None:
        """Put the outcome's records into the course's gradebook (or take them out)."""
        if out.status == "graded" and task.db_url != self.db_url:
            merge_submission(task.db_url, self.db_url, self.lab, task.student)
        elif out.status != "graded":
            # Like a failed serial autograde: the student is in the gradebook (a row of
            # grades.csv with 0 points), the half-written submission is not.
            _remove_submission(self.db_url, self.lab, task.student, keep_student=True)
            _drop_feedback(self.root, self.lab, task.student)
        self.guard.accept(self.lab, task.student)
        if task.db_url != self.db_url:
            Path(_sqlite_path(task.db_url)).unlink(missing_ok=True)

    def _regrade(self, task: _Task, out: Outcome, reason: str) -> None:
        """Drop ``task``'s result and grade it again alone at the end of the batch."""
        kept = Outcome(self.lab, task.student, status="regrade", detail="to be graded again alone: " + reason,
                       log=out.log, started=out.started, finished=out.finished, worker=out.worker)
        self._settle(task, kept)
        self.record(kept)
        self._print(kept)
        if task.student not in self.requeued:
            self.requeued.add(task.student)
            self.queue.append(_Task(task.student, alone=True, suspect=reason))
            if self.bar is not None:
                self.bar.total += 1

    def _retry(self, task: _Task, out: Outcome) -> None:
        """A task that failed (its worker died, it raised) is tried once more, at the end of the queue."""
        self.failed[task.student] = out.detail
        kept = Outcome(self.lab, task.student, status="retry", detail="to be tried again: " + out.detail,
                       log=out.log, flags=out.flags)
        self._settle(task, kept)
        self.record(kept)
        self._print(kept)
        self.queue.append(_Task(task.student, alone=task.alone, suspect=task.suspect))
        if self.bar is not None:
            self.bar.total += 1

    def _stop_batch(self, task: _Task, out: Outcome, suspects: list[_Task], changed: list[str]) -> None:
        """A change that cannot be undone: every submission it may come from is `tampered`; stop."""
        others = [t.student for t in suspects if t is not task]
        detail = "changed " + "; ".join(changed) + (f" (while graded at the same time as {', '.join(others)})"
                                                    if others else "")
        self._stop_running()
        for t in suspects:
            o = out if t is task else Outcome(self.lab, t.student)
            o.status, o.score, o.cells, o.feedback, o.detail = "tampered", 0.0, {}, "", detail
            self._settle(t, o)
            self.record(o)
            self._print(o)
        raise RuntimeError(f"{self.lab}/{task.student} {detail}; grading stopped. Check `git status` and the "
                           f"submission originals, then grade again ({SUMMARY_RELPATH} lists what was graded).")

    def _print(self, out: Outcome) -> None:
        from tqdm.auto import tqdm

        where = f", {out.worker}" if out.worker and isinstance(self.executor, _Dask) else ""
        tqdm.write(f"  {out.student:<24} {out.status:<16} {out.score:g}/{out.max_score:g}  "
                   f"({out.seconds:.0f} s{where})")


# --------------------------------------------------------------------------- pipeline
def grade(
    lab: str | None = None,
    submissions: str | os.PathLike | None = None,
    course_dir: str | os.PathLike | None = None,
    timeout: float = 900,
    workers: int | None = None,
    scheduler: str | None = None,
    db: str | None = None,
    sandbox: bool = True,
    regrade: bool = False,
) -> int:
    """Grade every submission of ``lab`` (default: every lab); see the module docstring.

    Args:
        lab: a lab id such as ``"lab2_ppo"``; ``None`` grades all labs.
        submissions: folder of ``<student>/<lab>/<notebook>.ipynb``.
        course_dir: the course root (default: the repository).
        timeout: wall-clock seconds one submission may take to autograde.
        workers: submissions graded at once on a local Dask cluster (default: one per core);
            1 grades them one after the other in this process.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``) whose workers grade
            instead of a local cluster; they must see the course folder at the same path.
        db: the gradebook's URL, e.g. ``postgresql://user@host/grading`` (default: the course's
            SQLite file ``autograder/gradebook.db``); every nbgrader command uses it.
        sandbox: run submissions in the bubblewrap sandbox (the default; grading stops with the
            cause when it cannot run here). ``False`` runs them unisolated, for a class whose
            code is trusted; every row of ``summary.csv`` then says so.
        regrade: grade every submission again, even one graded before with the same notebook,
            pins, source notebook and grading code (by default that one keeps its outcome).

    Returns:
        0 if every submission was graded, 1 if some timed out or could not be graded
        (they are listed in the summary with their status and log), so CI notices.
    """
    from tqdm.auto import tqdm

    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers is not None and scheduler:
        raise ValueError("--workers sizes the local cluster; with --scheduler the cluster's own workers grade")
    root = find_course_dir(course_dir)
    labs = resolve_labs(root, lab)
    db_url = gradebook_url(root, check_db_url(db) if db else None)
    quiet = bool(os.environ.get("RLCOURSE_NO_PROGRESS"))
    outcomes: dict[tuple[str, str], Outcome] = {}
    summary_csv = root / SUMMARY_RELPATH

    def record(out: Outcome) -> None:
        outcomes[(out.lab, out.student)] = out
        ordered = sorted(outcomes.values(), key=lambda o: (labs.index(o.lab), o.student))
        write_summary(summary_csv, ordered)   # after every submission: a crash loses nothing

    # Grades against a pass mark measured for another graded run would be silently wrong.
    check_pins_current(root, labs)
    if sandbox:
        from rlcourse.grading.sandbox import SandboxUnavailable, check_available

        try:
            check_available()
        except SandboxUnavailable as exc:
            raise RuntimeError(f"cannot grade: submissions run in a bubblewrap sandbox, and it cannot run here: "
                               f"{exc}. For a class whose code you trust, `rlcourse grade --no-sandbox` grades "
                               "without it.") from None
    else:
        print(f"WARNING: {NO_SANDBOX}; every row of {SUMMARY_RELPATH} says so", flush=True)
    warn_other_machine(root, labs)
    pins_copy = root / WORK_RELPATH / "pinned_metrics.batch.json"
    pins_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / PINS_RELPATH, pins_copy)
    guard = _Guard(root, db_url, pins_copy, sandbox)
    if db:
        print(f"gradebook: {_hide_password(db_url)}", flush=True)
    executor = _executor(root, workers, scheduler)
    print(f"grading {executor.description}", flush=True)
    code = grading_code_digest(root)
    try:
        for name in labs:
            source = choose_submissions(root, name, submissions)
            print(f"[{name}] generating the assignment (nbgrader generate_assignment)", flush=True)
            run_nbgrader(root, "generate_assignment", name, "--force", _db_option(db_url),
                         f"--CourseDirectory.release_directory={root / WORK_RELPATH / 'release'}")
            notes: dict[str, str] = {}
            expected = expected_cells(root, name, root / WORK_RELPATH / "release" / name)
            students, rejected = collect(root, name, source, expected, notes)
            graded = _Done(root, name, db_url, sandbox, code)
            for out in rejected:
                if out.status != "invalid_id":
                    # The submission as it is now cannot be graded: no earlier grades or feedback stay.
                    graded.forget(out.student)
                    _remove_submission(db_url, name, out.student, keep_student=True)
                    _drop_feedback(root, name, out.student)
                record(out)
            print(f"[{name}] {len(students)} submission(s) from {source}", flush=True)
            reused = {} if regrade else graded.previous(students)
            for out in reused.values():
                record(out)
            if reused:
                print(f"[{name}] {len(reused)} submission(s) unchanged since they were graded, not graded again "
                      f"(--regrade grades them again): {', '.join(sorted(reused))}", flush=True)
                students = [s for s in students if s not in reused]
            bar = tqdm(total=len(students), desc=f"grade {name}", unit="student", disable=quiet or not students)
            try:
                _Batch(root, name, executor, guard, db_url, timeout, record, bar, sandbox, notes, graded).run(students)
            finally:
                bar.close()
    finally:
        executor.close()
    grades_csv = root / GRADES_RELPATH
    run_nbgrader(root, "export", f"--to={grades_csv}", _db_option(db_url))
    print(f"wrote {grades_csv.relative_to(root)} and {summary_csv.relative_to(root)}; "
          f"feedback in {FEEDBACK_RELPATH}/", flush=True)
    bad = [o for o in outcomes.values() if o.status != "graded"]
    for o in bad:
        print(f"not graded: {o.lab}/{o.student}: {o.status}: {o.detail} (log: {o.log})", flush=True)
    return 1 if bad else 0
