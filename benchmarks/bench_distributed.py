"""Multi-process training throughput: PPO on Ant, 2 processes x 1 thread vs 1 process x 2 threads.

Both through the real CLI with the Ant preset and the same total number of envs (128: 64 per
process, or 128 in one), the same number of env steps and no evaluation:

    A: rlcourse train ppo --env Ant --nproc 2 --threads 1 --num-envs 64
    B: rlcourse train ppo --env Ant          --threads 2 --num-envs 128
    C: rlcourse train ppo --env Ant          --threads 1 --num-envs 128   (reference)

Reported per run: the training loop's env steps per second (``steps_per_second`` in
metrics.json, all processes' steps; process start and torchrun rendezvous excluded) and the
command's wall-clock (included). The setups alternate; the median of the repeats is recorded,
with the machine's load average (other work on the machine slows all of them, and a torch
parallel region with 2 threads most: it waits for its slowest thread).

    .venv/bin/python benchmarks/bench_distributed.py [--steps 40960] [--repeats 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, median, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOTAL_ENVS = 128   # the Ant preset's num_envs
SETUPS = {
    "2 processes x 1 thread": ["--nproc", "2", "--threads", "1", "--num-envs", str(TOTAL_ENVS // 2)],
    "1 process x 2 threads": ["--threads", "2", "--num-envs", str(TOTAL_ENVS)],
    "1 process x 1 thread (reference)": ["--threads", "1", "--num-envs", str(TOTAL_ENVS)],
}


def run(extra: list[str], steps: int, seed: int) -> tuple[float, float]:
    """Train once; returns (training steps/s, wall-clock seconds of the whole command)."""
    rlcourse = Path(sys.executable).with_name("rlcourse")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [str(rlcourse), "train", "ppo", "--env", "Ant", "--total-steps", str(steps), "--seed", str(seed),
                   "--eval-episodes", "0", "--no-progress", "--run-dir", str(run_dir), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, RLCOURSE_NO_PROGRESS="1"))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return float(metrics["steps_per_second"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40960, help="env steps per run, all processes together")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETUPS}
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats):
        order = list(SETUPS) if r % 2 == 0 else list(reversed(SETUPS))   # neither always goes first
        for name in order:
            sps, wall = run(SETUPS[name], args.steps, seed=r)
            results[name].append((sps, wall))
            loads.append(os.getloadavg()[0])
            print(f"repeat {r}: {name}: {sps:.0f} steps/s, {wall:.1f} s wall-clock", flush=True)

    rows = []
    for name, runs in results.items():
        rows.append((name, median([s for s, _ in runs]), median([w for _, w in runs])))
    (_, a_sps, a_wall), (_, b_sps, b_wall) = rows[:2]
    lines = [f"- {name}: {sps:.0f} steps/s training, {wall:.1f} s wall-clock per run (start-up included)"
             for name, sps, wall in rows]
    lines.append(f"- ratio (2 processes x 1 thread / 1 process x 2 threads): {a_sps / b_sps:.2f} in steps/s, "
                 f"{b_wall / a_wall:.2f} in wall-clock")
    print("\n".join(lines))
    if not args.no_record:
        record(
            "Multi-process training: PPO Ant, 2 processes x 1 thread vs 1 process x 2 threads",
            f"- machine: {machine_line()}; load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the runs\n"
            f"- PPO Ant preset, {TOTAL_ENVS} envs in total, {args.steps} env steps per run, no evaluation, "
            f"median of {args.repeats} alternating repeats\n"
            + "\n".join(lines)
            + f"\n- command: `.venv/bin/python benchmarks/bench_distributed.py --steps {args.steps} --repeats {args.repeats}`",
        )


if __name__ == "__main__":
    main()
