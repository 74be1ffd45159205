"""``rlcourse pin [LAB]``: run a lab's source notebook on several seeds and write what its graded
cell measured to ``autograder/pinned_metrics.json``.

The source notebook is the only description of the graded run. For each seed in the checks
module's ``PIN_SEEDS`` this executes ``solutions/<lab>/<lab>.ipynb`` with nbclient, the way
papermill runs a notebook with parameters: a cell ``SEED = <seed>`` is inserted after the cell
``parameters``, hidden tests are left out (they compare with the pins being made), and the cells
after ``test_training`` are skipped. After the graded cell the kernel evaluates the checks
module's ``measure(globals())``, the function the hidden check of a student's run calls too.

The entry records the protocol (the source of the ``parameters`` and ``test_training`` cells),
the agent's hyperparameters, every seed's measurement, the pass mark from the checks module's
``pass_mark(runs)``, and the machine and library versions (:func:`rlcourse.machine.versions`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat

from rlcourse.grading.common import (
    PARAMETERS_CELL,
    PINS_RELPATH,
    TRAINING_CELL,
    checks_module,
    grade_id,
    protocol,
    strip_hidden_tests,
)
from rlcourse.grading.release import find_course_dir, list_labs
from rlcourse.machine import versions

MEASURED_MARK = "RLCOURSE_MEASURED="
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
CELL_TIMEOUT_S = 3600


def pin_notebook(nb: nbformat.NotebookNode, lab: str, seed: int) -> nbformat.NotebookNode:
    """The source notebook as one reference run executes it: seed injected, hidden tests out,
    nothing after the graded cell, then a cell printing the measurement as JSON."""
    nb = copy.deepcopy(nb)
    cells: list[nbformat.NotebookNode] = []
    seen = set()
    for cell in nb.cells:
        gid = grade_id(cell)
        if cell.cell_type == "code":
            cell.source = strip_hidden_tests(cell.source)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
        if gid == PARAMETERS_CELL:
            seen.add(gid)
            injected = nbformat.v4.new_code_cell(f"# injected by rlcourse pin\nSEED = {int(seed)}")
            injected.metadata["tags"] = ["injected-parameters"]
            cells.append(injected)
        if gid == TRAINING_CELL:
            seen.add(gid)
            break
    missing = {PARAMETERS_CELL, TRAINING_CELL} - seen
    if missing:
        raise ValueError(f"{lab}: the source notebook needs the cells {sorted(missing)} (in that order)")
    cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n"
        "from rlcourse.grading.common import jsonable as _jsonable\n"
        f"from rlcourse.grading import {lab} as _pin_checks\n"
        f"print({MEASURED_MARK!r} + _json.dumps(_jsonable(_pin_checks.measure(globals()))))"
    ))
    nb.cells = cells
    return nb


def _measured(nb: nbformat.NotebookNode) -> dict[str, Any]:
    for output in nb.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(MEASURED_MARK):
                return json.loads(line[len(MEASURED_MARK):])
    raise RuntimeError("the measurement cell printed nothing")


def run_reference(source: Path, lab: str, seed: int) -> dict[str, Any]:
    """Execute ``source`` (the lab's source notebook) for ``seed`` in a scratch copy of its folder;
    returns ``{"seed", "measured", "wall_time_s"}``."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = pin_notebook(nbformat.read(source, as_version=4), lab, seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"rlcourse_pin_{lab}_s{seed}_") as tmp:
        work = Path(tmp) / lab
        shutil.copytree(source.parent, work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints", "*.ipynb"))
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(work)}})
        try:
            client.execute()
        except CellExecutionError as exc:
            raise RuntimeError(f"{lab} seed {seed}: the source notebook failed:\n{exc}") from None
    return {"seed": int(seed), "measured": _measured(nb), "wall_time_s": round(time.perf_counter() - start, 1)}


def pin_lab(course_dir: Path, lab: str, seeds: tuple[int, ...] | None = None, workers: int | None = None
            ) -> dict[str, Any]:
    """The pins entry of ``lab``: its source notebook run once per seed (``workers`` kernels at a
    time, default one per core; every kernel trains on one thread, so results do not depend on it)."""
    module = checks_module(lab)
    source = course_dir / "solutions" / lab / f"{lab}.ipynb"
    cells = protocol(source)
    seeds = tuple(sorted(set(seeds or getattr(module, "PIN_SEEDS", DEFAULT_SEEDS))))
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    # The kernels inherit the environment: no progress bars in the outputs.
    os.environ["RLCOURSE_NO_PROGRESS"] = "1"
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(lambda s: run_reference(source, lab, s), seeds))
    configs = [run["measured"].pop("agent_config", None) for run in runs]
    if any(c != configs[0] for c in configs):
        raise RuntimeError(f"{lab}: the agent's hyperparameters differ between seeds; they must not depend on SEED")
    for run in runs:
        print(f"  {lab} seed {run['seed']}: {json.dumps(run['measured'])[:200]} ({run['wall_time_s']} s)", flush=True)
    return {
        "protocol": cells,
        "agent_config": configs[0],
        "reference_seeds": list(seeds),
        "runs": runs,
        **module.pass_mark(runs),
        "produced_by": f"rlcourse pin {lab}: solutions/{lab}/{lab}.ipynb executed once per seed (nbclient)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "versions": versions(),
    }


def write_pins(course_dir: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Merge ``entries`` into ``autograder/pinned_metrics.json`` atomically (other labs' pins are kept)."""
    import fcntl

    path = course_dir / PINS_RELPATH
    # A lock, so two `rlcourse pin` processes for different labs do not drop each other's entry.
    with open(path.with_suffix(".json.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(entries)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return path


def pin(lab: str | None = None, course_dir: str | os.PathLike | None = None,
        seeds: tuple[int, ...] | None = None, workers: int | None = None) -> int:
    """Re-measure the pins of ``lab`` (default: every lab in ``solutions/``); returns 0.

    Unknown labs raise ``ValueError`` (the CLI prints one line).
    """
    root = find_course_dir(course_dir)
    labs = list_labs(root)
    if lab is not None and lab not in labs:
        raise ValueError(f"unknown lab {lab!r}; labs in {root / 'solutions'}: {', '.join(labs) or 'none'}")
    for name in [lab] if lab else labs:
        print(f"pinning {name}: running its source notebook on several seeds ...", flush=True)
        entry = pin_lab(root, name, seeds, workers)
        path = write_pins(root, {name: entry})
        print(f"{name}: {entry['metric']} {entry['reference_values']} -> pass mark {entry['threshold']} "
              f"({entry['wall_time_s']} s); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(pin(*(sys.argv[1:2] or [None])))
