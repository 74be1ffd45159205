"""The trusted half of grading: choose the inputs, then judge what the sandbox recorded.

Nothing here runs a student's code. :func:`hidden_checks` reads which checks each graded test
cell calls (from the cell's hidden block, whose source comes from the instructor's notebook);
:func:`write_cases` writes those checks' inputs for one submission into the sandbox's grading
folder; after the sandboxed run, :func:`judge_cell` loads the records as tensors only
(``torch.load(weights_only=True)``: nothing from the sandbox is unpickled) and calls the
checks' ``judge``, which compute the reference values here, in the grader's process.
"""

from __future__ import annotations

import ast
import hashlib
import os
import secrets
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import nbformat
import torch

from rlcourse.grading.common import HIDDEN_BEGIN, HIDDEN_END, checks_module, grade_id
from rlcourse.grading.hidden import MAX_RECORD_BYTES, Check, FunctionCheck


def hidden_block(source: str) -> str:
    """The code between the ``### BEGIN/END HIDDEN TESTS`` markers of a cell ("" if none)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            inside = True
        elif HIDDEN_END in line:
            inside = False
        elif inside:
            lines.append(line)
    return "\n".join(lines)


def checks_called(source: str, module: ModuleType) -> list[Check]:
    """The checks of ``module`` that the hidden block of ``source`` calls (``_checks.check_x(...)``)."""
    found: list[Check] = []
    try:
        tree = ast.parse(hidden_block(source))
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            check = getattr(getattr(module, node.func.attr, None), "check", None)
            if check is not None and check not in found:
                found.append(check)
    return found


def hidden_checks(nb: nbformat.NotebookNode, lab: str) -> dict[str, list[Check]]:
    """``{grade_id: checks}`` of every graded test cell of ``nb`` that calls a check of ``lab``."""
    out: dict[str, list[Check]] = {}
    try:
        module = checks_module(lab)
    except ValueError:  # a lab without hidden checks: its cells are scored on their outputs
        return out
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            checks = checks_called(cell.source, module)
            if checks:
                out[grade_id(cell)] = checks
    return out


def grading_secret(folder: Path) -> bytes:
    """The course's grading secret (made on first use, readable by the grader only): the seed
    of each submission's fresh cases is derived from it, so a student cannot predict them."""
    path = folder / "grading_secret"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def submission_seed(secret: bytes, lab: str, student: str, notebook: nbformat.NotebookNode) -> int:
    """The seed of one submission's fresh cases and evaluation envs: the same submission gets
    the same seed (a re-grade gives the same score), another one an unrelated seed."""
    h = hashlib.sha256(secret)
    for part in (lab, student, nbformat.writes(notebook)):
        h.update(part.encode() + b"\0")
    return int.from_bytes(h.digest()[:4], "little") & 0x7FFFFFFF


def write_cases(checks: Mapping[str, list[Check]], folder: Path, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Write each function check's cases to ``folder/cases/<check>.pt``; returns them (the
    grader keeps its own copy: what comes back from the sandbox is never trusted)."""
    kept: dict[str, list[dict[str, Any]]] = {}
    (folder / "cases").mkdir(parents=True, exist_ok=True)
    (folder / "records").mkdir(parents=True, exist_ok=True)
    for cell_checks in checks.values():
        for check in cell_checks:
            if isinstance(check, FunctionCheck) and check.name not in kept:
                kept[check.name] = check.cases(seed)
                torch.save(kept[check.name], folder / "cases" / f"{check.name}.pt")
    return kept


def load_record(folder: Path, name: str) -> Any:
    """A record as plain tensors and numbers; ``None`` if the sandbox wrote none (or no file)."""
    path = folder / "records" / f"{name}.pt"
    if path.is_symlink() or not path.is_file():
        return None
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise ValueError(f"the record of {name!r} is larger than {MAX_RECORD_BYTES // 2**20} MiB")
    return torch.load(path, map_location="cpu", weights_only=True)


def judge_cell(checks: list[Check], folder: Path, cases: Mapping[str, list[dict[str, Any]]],
               seed: int) -> str | None:
    """``None`` if every check of the cell passes, else the reason (shown in the feedback)."""
    # The judges run small policies on small batches, where torch's intra-op threads only add
    # synchronization (lab 4's sweep of 54 robots took 290 s with 2 threads and 36 s with 1 on a
    # busy 2-core machine); parallel grading uses worker processes instead. The sandboxed
    # notebook gets OMP_NUM_THREADS=1 for the same reason (rlcourse.grading.sandbox).
    torch.set_num_threads(1)
    for check in checks:
        try:
            record = load_record(folder, check.name)
        except Exception as exc:  # a forged or corrupt file: a failure of the submission
            return f"the hidden check {check.name!r} could not read what the notebook recorded ({exc})"
        if record is None:
            return (f"the hidden check {check.name!r} did not run to the end in your notebook "
                    "(see the error above, or a cell that failed or stopped earlier)")
        try:
            if isinstance(check, FunctionCheck):
                mine = cases[check.name]
                if not isinstance(record, list) or len(record) != len(mine):
                    return f"the hidden check {check.name!r} recorded outputs for other inputs than it was given"
                for case, outputs in zip(mine, record):
                    check.judge(case, outputs if isinstance(outputs, dict) else {"out": outputs})
            else:
                check.judge(record if isinstance(record, dict) else {}, seed)
        except AssertionError as exc:
            return str(exc)
        except Exception as exc:  # outputs of an unexpected kind, e.g. a string where a tensor belongs
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return f"the hidden check {check.name!r} could not use your function's output ({last})"
    return None


def simulate(check: Check, *args: Any, seed: int = 12345, folder: Path) -> str | None:
    """Both halves as grading runs them, in this process (for tests): cases written, the sandbox
    half run with ``GRADING_DIR`` set, records loaded as tensors, judged. Returns the verdict."""
    from rlcourse.grading import hidden

    cases = write_cases({"cell": [check]}, folder, seed)
    old = os.environ.get(hidden.GRADING_DIR_VAR)
    os.environ[hidden.GRADING_DIR_VAR] = str(folder)
    try:
        if isinstance(check, FunctionCheck):
            hidden.run_function_check(check, *args)
        else:
            hidden.run_training_check(check, *args)
    finally:
        if old is None:
            os.environ.pop(hidden.GRADING_DIR_VAR)
        else:
            os.environ[hidden.GRADING_DIR_VAR] = old
    return judge_cell([check], folder, cases, seed)
