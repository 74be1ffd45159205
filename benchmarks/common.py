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


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__} (threads {torch.get_num_threads()})"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def record(section: str, body: str) -> None:
    """Replace (or append) the ``## section`` block of RESULTS.md with ``body``."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nRatios are ours / peer, measured in one process run.\n"
    block = f"## {section}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(block + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")
    print(f"recorded in {RESULTS}", file=sys.stderr)
