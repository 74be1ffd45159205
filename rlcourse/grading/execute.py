"""nbgrader's execute step, replaced: the submission runs in the sandbox, the grader judges outside.

``SandboxedExecute`` takes the place of ``nbgrader.preprocessors.Execute`` in the autograde
steps (``autograder/nbgrader_config.py``). For one submission it

1. finds which checks each graded test cell calls (from the instructor's hidden blocks, which
   nbgrader has already restored into the notebook) and writes their inputs, fixed cases plus
   fresh random ones from a seed derived from the course's grading secret, into a scratch folder;
2. runs the notebook there with :mod:`rlcourse.grading.runner` inside the bubblewrap sandbox
   (:mod:`rlcourse.grading.sandbox`), which sees the grading view of the package, in which
   the lab's reference implementations are withheld (:mod:`rlcourse.grading.view`). The
   hidden cells' entry points only record (:mod:`rlcourse.grading.hidden`);
3. copies the outputs of the executed cells back into the notebook (never their sources);
4. judges every graded test cell that calls a check (:mod:`rlcourse.grading.judge`): when the
   judge fails it, or the cell did not run, an error output with the reason is added, so
   nbgrader scores it 0. A cell's own errors (a failing visible assert) count as before.

The score is therefore what the grader's process decided: a submission that replaces functions
inside its kernel changes only what its own kernel sees. Graded test cells without a check
call are scored on their sandboxed outputs alone (no lab has one).

``RLCOURSE_SANDBOX=off`` (``rlcourse grade --no-sandbox``, for a class whose code is trusted)
runs the same steps without bubblewrap and without the grading view; the pipeline reports it
in every row of ``summary.csv``. When ``RLCOURSE_GRADING_REPORT`` names a file, a JSON line
per notebook is appended to it: the mode, the seed, the reason per failed cell, the sandbox's
limit that ended the run, near-copy flags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer

from rlcourse.grading.common import grade_id

# The judge (torch) is imported where it runs, in nbgrader's autograde process: the pipeline's
# own processes import this module only for the names of its environment variables.

SANDBOX_VAR = "RLCOURSE_SANDBOX"
REPORT_VAR = "RLCOURSE_GRADING_REPORT"
WALL_VAR = "RLCOURSE_GRADING_WALL_S"
SECRET_RELPATH = Path("autograder") / ".work"
MAX_EXECUTED_BYTES = 64 * 1024 * 1024
OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error"}
LIMIT_REASONS = {
    "wall": "the notebook ran past the grading time limit",
    "output": "the notebook printed more output than allowed",
    "disk": "the notebook wrote more to its working directory than allowed",
    "cpu": "the notebook used more CPU time than allowed",
    "fsize": "the notebook wrote a file larger than allowed",
    "memory": "the notebook used more memory than allowed",
}


def sandbox_enabled() -> bool:
    """False only when grading was explicitly told to run without the sandbox."""
    return os.environ.get(SANDBOX_VAR, "on").lower() not in {"off", "0", "no"}


class SandboxedExecute(NbGraderPreprocessor):
    """Run the submission in the sandbox and judge its graded cells outside (module docstring)."""

    timeout = Integer(900, help="Seconds one cell may run before it is interrupted.").tag(config=True)
    wall_timeout = Integer(1800, help="Seconds the whole notebook may run in the sandbox.").tag(config=True)

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        info = resources.get("nbgrader", {})
        lab, student = info["assignment"], info["student"]
        from rlcourse.grading import judge
        from rlcourse.grading.similarity import near_copies

        checks = judge.hidden_checks(nb, lab)
        flags = near_copies(nb, lab)
        secret = judge.grading_secret(Path.cwd() / SECRET_RELPATH)
        seed = judge.submission_seed(secret, lab, student, nb)
        scratch = Path(tempfile.mkdtemp(prefix=f"rlcourse-grade-{lab}-"))
        start = time.perf_counter()
        try:
            folder = scratch / "grading"
            cases = judge.write_cases(checks, folder, seed)
            work = scratch / "work"
            work.mkdir()
            nbformat.write(nb, work / "submission.ipynb")
            limit = self._run(lab, scratch)
            executed = _read_executed(work / "executed.ipynb")
            if limit is None and executed is not None:
                stopped = executed.metadata.get("rlcourse_runner", {})
                limit = stopped.get("stopped") if isinstance(stopped, dict) else None
            problem = _merge_outputs(nb, executed)
            reasons: dict[str, str] = {}
            for cell in nb.cells:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                    continue
                gid = grade_id(cell)
                reason = None
                if cell.get("execution_count") is None:
                    reason = "this cell did not run: " + (LIMIT_REASONS.get(limit or "", "") or problem
                                                          or "an earlier cell stopped the notebook")
                elif gid in checks:
                    reason = judge.judge_cell(checks[gid], folder, cases, seed)
                    error = _first_error(cell)
                    if reason and error and "did not run to the end" in reason:
                        reason = f"the cell stopped with {error}"
                if reason:
                    reasons[gid] = reason
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename="GradingError", evalue=reason, traceback=[f"GradingError: {reason}"]))
            self._report({"lab": lab, "student": student, "notebook": info.get("notebook"),
                          "sandbox": "bubblewrap" if sandbox_enabled() else "off", "seed": seed,
                          "limit": limit, "problem": problem, "reasons": reasons, "flags": flags,
                          "seconds": round(time.perf_counter() - start, 3)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return nb, resources

    def _run(self, lab: str, scratch: Path) -> str | None:
        """Execute ``work/submission.ipynb``; returns the limit that ended the run, if one did."""
        from rlcourse.grading.hidden import GRADING_DIR_VAR

        wall = float(os.environ.get(WALL_VAR) or self.wall_timeout)
        argv = [os.path.abspath(sys.executable), "-m", "rlcourse.grading.runner", "submission.ipynb", "executed.ipynb",
                "--cell-timeout", str(self.timeout)]
        env = {"NBGRADER_EXECUTION": "autograde", "RLCOURSE_NO_PROGRESS": "1"}
        if sandbox_enabled():
            from rlcourse.grading.sandbox import SCRATCH, SandboxLimits, run_sandboxed
            from rlcourse.grading.view import view_for

            # The runner starts in /scratch/work; the records go to /scratch/grading.
            argv = ["/bin/sh", "-c", 'cd work && exec "$@"', "runner", *argv]
            result = run_sandboxed(argv, scratch, SandboxLimits(wall_s=wall),
                                   env={**env, GRADING_DIR_VAR: f"{SCRATCH}/grading"},
                                   package_view=view_for(lab, scratch.parent))
            if result.returncode != 0:
                self.log.warning("sandboxed run of %s ended with %s (%s): %s", lab, result.returncode,
                                 result.reason, result.stderr[-2000:])
            return result.reason
        try:
            subprocess.run(argv, cwd=scratch / "work", env={**os.environ, **env, GRADING_DIR_VAR: str(scratch / "grading")},
                           timeout=wall, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return "wall"
        return None

    def _report(self, entry: dict[str, Any]) -> None:
        path = os.environ.get(REPORT_VAR)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def _first_error(cell: nbformat.NotebookNode) -> str | None:
    """``"Name: message"`` (first line, shortened) of the cell's first error output."""
    for out in cell.outputs:
        if out.get("output_type") == "error":
            text = f"{out.get('ename', 'Error')}: {str(out.get('evalue', '')).splitlines()[0] if out.get('evalue') else ''}"
            return text[:300]
    return None


def _read_executed(path: Path) -> nbformat.NotebookNode | None:
    """The executed notebook the sandbox wrote, or None if there is none usable."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_EXECUTED_BYTES:
        return None
    try:
        return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except Exception:  # anything the sandbox wrote can be malformed on purpose
        return None


def _merge_outputs(nb: nbformat.NotebookNode, executed: nbformat.NotebookNode | None) -> str | None:
    """Copy outputs and execution counts of the executed cells into ``nb`` (sources stay the
    grader's). Returns why nothing could be copied, if so (all code cells then count as not run)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if executed is None:
        return "the notebook produced no readable result"
    cells = executed.get("cells", [])
    if len(cells) != len(nb.cells):
        return "the executed notebook does not match the submission"
    for cell, run in zip(nb.cells, cells):
        if cell.cell_type != "code" or run.get("cell_type") != "code":
            continue
        count = run.get("execution_count")
        cell.execution_count = count if isinstance(count, int) else None
        cell.outputs = [nbformat.from_dict(o) for o in run.get("outputs", [])
                        if isinstance(o, dict) and o.get("output_type") in OUTPUT_TYPES]
    return None
