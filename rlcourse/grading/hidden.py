"""Hidden checks in two halves: the half that runs a student's code, and the half that judges it.

A lab's checks module (``rlcourse.grading.<lab>``) describes each hidden check as data plus
three functions:

* :class:`FunctionCheck` ``cases(seed) -> list[dict]``: the inputs, the fixed cases plus fresh
  random ones drawn from ``seed``; ``call(case, *fns) -> dict``: runs the student's function(s)
  on one case and returns plain data (tensors, numbers, strings); ``judge(case, outputs)``:
  computes the reference itself and calls :func:`~rlcourse.grading.common.fail` when the
  outputs are wrong;
* :class:`TrainingCheck` ``record(ns) -> dict``: what the graded training cell produced (the
  numbers it measured, the trained policy's weights); ``judge(record, seed)``: re-evaluates the
  policy in fresh envs seeded with ``seed`` and compares with the pinned pass mark.

The hidden test cell calls the entry point, e.g. ``_checks.check_gae(compute_gae)``
(:func:`entry_point` makes it). Where the halves run depends on the environment variable
:data:`GRADING_DIR_VAR`:

* unset (the instructor's source notebook, tests): both halves run here, on the fixed seed;
* set (the notebook runs in the grading sandbox): the entry point reads the cases the grader
  wrote to ``$RLCOURSE_GRADING_DIR/cases/<check>.pt``, runs ``call`` and writes the outputs to
  ``records/<check>.pt``. It judges nothing: a student's code in that kernel can replace any
  function there without changing a score. The grader (:mod:`rlcourse.grading.judge`, outside
  the sandbox) loads the records as tensors only and judges them with the cases it kept.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

GRADING_DIR_VAR = "RLCOURSE_GRADING_DIR"
FIXED_SEED = 0
"""The seed of the random cases when a check runs in one process (no grader)."""
MAX_RECORD_BYTES = 256 * 1024 * 1024
"""A record file larger than this is not loaded (a trained policy's weights are far smaller)."""


class WithheldDuringGrading(RuntimeError):
    """Raised by a reference implementation in the grading view (:mod:`rlcourse.grading.view`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is withheld while your submission is graded: the lab asks for your own "
                         "implementation, not the course's reference")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _is_package(frame: Any) -> bool:
    return (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
            and str(frame.f_globals.get("__name__", "")).startswith("rlcourse."))


def called_from_package(name: str | None = None, depth: int = 2) -> bool:
    """Whether a guarded reference may run here: its caller (``depth`` frames up: this function,
    the reference, its caller) is code of this ``rlcourse`` package (in the grading view: the
    view's read-only copy), not a submission's cell or a module it wrote; and, given the
    reference's ``name`` (``"sample"``), no submission code further up the stack is the
    student's own ``name`` (a function of that name, or a method of a class of that name), so a
    solution cannot reach the reference through a package function that calls it."""
    frame = sys._getframe(depth)
    if not _is_package(frame):
        return False
    if name is not None:
        while (frame := frame.f_back) is not None:
            code = frame.f_code
            if not _is_package(frame) and (code.co_name == name or code.co_qualname.startswith(name + ".")):
                return False
    return True


@dataclass(frozen=True)
class FunctionCheck:
    """A check of student functions on inputs the grader chooses (see the module docstring)."""

    name: str
    cases: Callable[[int], list[dict[str, Any]]]
    call: Callable[..., dict[str, Any]]
    judge: Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class TrainingCheck:
    """The check of the graded training cell (see the module docstring)."""

    name: str
    record: Callable[[Mapping[str, Any]], dict[str, Any]]
    judge: Callable[[dict[str, Any], int | None], None]


Check = FunctionCheck | TrainingCheck


def grading_dir() -> Path | None:
    """The sandbox's grading folder, or ``None`` when the checks run in one process."""
    folder = os.environ.get(GRADING_DIR_VAR)
    return Path(folder) if folder else None


def plain(value: Any) -> Any:
    """``value`` as data a trusted process can load with ``torch.load(weights_only=True)``:
    tensors (detached copies of the base class), numbers, strings, ``None``, lists and dicts of
    them. Anything else becomes a string naming its type, which the judge reports as wrong."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone().as_subclass(torch.Tensor)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if type(value).__module__ == "numpy":
        import numpy as np

        return torch.from_numpy(np.array(value, copy=True)) if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return f"<{type(value).__qualname__}>"


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def run_function_check(check: FunctionCheck, *fns: Any) -> None:
    """The hidden cell's call: both halves here, or only ``call`` while grading."""
    folder = grading_dir()
    if folder is None:
        for case in check.cases(FIXED_SEED):
            check.judge(case, check.call(case, *fns))
        return
    cases = torch.load(folder / "cases" / f"{check.name}.pt", weights_only=True)
    outputs = [plain(check.call(case, *fns)) for case in cases]
    _save(outputs, folder / "records" / f"{check.name}.pt")


def run_training_check(check: TrainingCheck, ns: Mapping[str, Any]) -> None:
    """The graded training cell's hidden call: judged here, or recorded while grading."""
    record = plain(check.record(ns))
    folder = grading_dir()
    if folder is None:
        check.judge(record, None)
        return
    _save(record, folder / "records" / f"{check.name}.pt")


def entry_point(check: Check, doc: str) -> Callable[..., None]:
    """The function a hidden test cell calls for ``check`` (it carries the check as ``.check``)."""
    if isinstance(check, TrainingCheck):
        def run(ns: Mapping[str, Any]) -> None:
            run_training_check(check, ns)
    else:
        def run(*fns: Any) -> None:
            run_function_check(check, *fns)
    run.check = check  # type: ignore[attr-defined]
    run.__name__ = f"check_{check.name}"
    run.__doc__ = doc
    return run
