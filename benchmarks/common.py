"""Shared helpers for the side-by-side benchmarks against Stable-Baselines3.

Every benchmark runs both libraries in one process, alternating them, with the same
env, budget, network sizes and number of envs, and reports ours / SB3.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def without_log_folder(model: Any) -> Any:
    """``model`` (an SB3 algorithm) with a logger that writes nothing: by default every
    ``learn`` with ``verbose=0`` and no TensorBoard folder creates an empty ``/tmp/SB3-<date>``."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def machine_line() -> str:
    import torch

    from rlcourse.machine import cpu_model

    return (
        f"{datetime.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__} (threads {torch.get_num_threads()})"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# Hand-written notes go below this line in a section; re-recording the section keeps them.
NOTES_MARK = "<!-- notes: kept when a benchmark re-records this section -->"


def record(section: str, body: str) -> None:
    """Replace (or append) the ``## section`` block of RESULTS.md with ``body``, keeping the
    block's hand-written notes (the text below :data:`NOTES_MARK`)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nRatios are ours / peer, measured in one process run.\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    notes = found.group(0).partition(NOTES_MARK)[2].strip() if found else ""
    block = f"## {section}\n\n{body.strip()}\n" + (f"\n{NOTES_MARK}\n\n{notes}\n" if notes else "")
    if found:
        text = pattern.sub(block + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")
    print(f"recorded in {RESULTS}", file=sys.stderr)


def compare_throughput(
    run_ours: Callable[[int, int], float],
    run_sb3: Callable[[int, int], float],
    *,
    doc: str,
    default_steps: int,
    label: Callable[[int, int], str],
    target: str,
    section: str,
    script: str,
) -> None:
    """The ``main()`` of a throughput benchmark: parse ``--steps/--repeats/--threads/--no-record``,
    alternate the two libraries (``run_*(steps, seed) -> steps/s``), print the median ratio and
    record it in RESULTS.md under ``section``. ``label(steps, repeats)`` names the setup."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both libraries (same process)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, sb3 = [], []
    for r in range(args.repeats):
        ours.append(run_ours(args.steps, r))
        sb3.append(run_sb3(args.steps, r))
        print(f"repeat {r}: rlcourse {ours[-1]:.0f} steps/s, SB3 {sb3[-1]:.0f} steps/s", flush=True)
    ratio = median(ours) / median(sb3)
    line = (
        f"{label(args.steps, args.repeats)}: rlcourse {median(ours):.0f} steps/s, SB3 {median(sb3):.0f} steps/s, "
        f"ratio {ratio:.2f}{target}, torch threads {args.threads}"
    )
    print(line)
    if not args.no_record:
        record(section, f"- machine: {machine_line()}\n- {line}\n- command: `.venv/bin/python benchmarks/{script}`")
