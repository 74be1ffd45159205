"""Grading throughput: ``rlcourse grade lab2_ppo`` over 20 synthetic submissions, 1 vs 2 workers,
and the cost of the sandbox per submission.

The course is copied to a temporary folder. Lab 2's graded run is shortened there to
``--steps`` environment steps (the copy's pins get the shortened protocol, so grading accepts
them; nobody reaches the pass mark, which does not matter for speed): a submission then costs
what grading itself costs (nbgrader, the sandbox, a kernel, the checks, the judge, feedback)
rather than a minute of PPO. The 20 submissions are the lab's three example students,
repeated under other names.

1. The batch is graded with ``--workers 1`` and then, in a fresh copy, with ``--workers 2``
   (a local Dask cluster); the ratio of the wall times is the speed-up.
2. Sandbox overhead: one submission's execute step (``SandboxedExecute``) in this process,
   alternately sandboxed and with ``RLCOURSE_SANDBOX=off``; the median difference is what
   bubblewrap, the grading view and the uid switch cost per submission.

Targets: 2 workers >= 1.8x one worker; sandbox overhead <= 1 s per submission.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from common import machine_line, median, record

REPO = Path(__file__).resolve().parents[1]
LAB = "lab2_ppo"


def make_course(dest: Path, steps: int, students: int) -> Path:
    """A course copy with lab 2's graded run shortened and ``students`` submissions."""
    from rlcourse.grading.common import protocol

    shutil.copytree(REPO / "solutions", dest / "solutions", ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    shutil.copytree(REPO / "labs", dest / "labs")
    (dest / "autograder").mkdir()
    for name in ("nbgrader_config.py", "pinned_metrics.json"):
        shutil.copyfile(REPO / "autograder" / name, dest / "autograder" / name)
    source = dest / "solutions" / LAB / f"{LAB}.ipynb"
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_training":
            assert "TOTAL_STEPS = 100_000" in cell.source
            cell.source = cell.source.replace("TOTAL_STEPS = 100_000", f"TOTAL_STEPS = {steps}")
    nbformat.write(nb, source)
    pins = json.loads((dest / "autograder" / "pinned_metrics.json").read_text())
    pins[LAB]["protocol"] = protocol(source)
    (dest / "autograder" / "pinned_metrics.json").write_text(json.dumps(pins, indent=1))
    examples = REPO / "autograder" / "examples"
    kinds = sorted(p.name for p in examples.iterdir() if (p / LAB).is_dir())
    for i in range(students):
        kind = kinds[i % len(kinds)]
        target = dest / "submissions" / f"s{i:02d}_{kind.removeprefix('example_')}" / LAB
        target.mkdir(parents=True)
        shutil.copyfile(examples / kind / LAB / f"{LAB}.ipynb", target / f"{LAB}.ipynb")
    return dest


def grade(course: Path, workers: int) -> float:
    cmd = [str(Path(sys.executable).with_name("rlcourse")), "grade", LAB, "--course-dir", str(course),
           "--submissions", str(course / "submissions"), "--workers", str(workers), "--timeout", "600"]
    env = dict(os.environ, RLCOURSE_NO_PROGRESS="1")
    env.pop("RLCOURSE_PINNED_METRICS", None)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"grading failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = (course / "autograder" / "summary.csv").read_text().splitlines()
    assert len(rows) - 1 == len(list((course / "submissions").iterdir())), rows
    return seconds


def execute_once(course: Path, sandbox: bool) -> float:
    """One submission's execute step in this process (with or without the sandbox)."""
    from rlcourse.grading.execute import SANDBOX_VAR, SandboxedExecute

    nb = nbformat.read(course / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    os.environ[SANDBOX_VAR] = "on" if sandbox else "off"
    cwd = os.getcwd()
    os.chdir(course)
    try:
        start = time.perf_counter()
        SandboxedExecute(timeout=300, wall_timeout=600).preprocess(
            nb, {"nbgrader": {"assignment": LAB, "student": "bench", "notebook": LAB}})
        return time.perf_counter() - start
    finally:
        os.chdir(cwd)
        os.environ.pop(SANDBOX_VAR, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2_000, help="environment steps of the shortened graded run")
    parser.add_argument("--repeats", type=int, default=3, help="sandboxed/unsandboxed pairs for the overhead")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = grade(make_course(tmp / "one", args.steps, args.students), workers=1)
        print(f"1 worker: {one:.1f} s", flush=True)
        two = grade(make_course(tmp / "two", args.steps, args.students), workers=2)
        print(f"2 workers: {two:.1f} s", flush=True)
        course = make_course(tmp / "exec", args.steps, 0)
        pairs = []
        for _ in range(args.repeats):
            on, off = execute_once(course, True), execute_once(course, False)
            pairs.append((on, off))
            print(f"execute step: sandboxed {on:.2f} s, unsandboxed {off:.2f} s", flush=True)
    overhead = median([on - off for on, off in pairs])
    ratio = one / two
    body = f"""{machine_line()}; {args.students} lab-2 submissions (the three example students repeated), graded run shortened to {args.steps} steps; 1-min load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}.

| measure | value | target |
|---|---:|---:|
| 1 worker, whole batch | {one:.1f} s ({one / args.students:.1f} s per submission) | |
| 2 workers, whole batch | {two:.1f} s ({two / args.students:.1f} s per submission) | |
| speed-up, 2 workers / 1 | {ratio:.2f}x | >= 1.8 |
| execute step sandboxed, median | {median([p[0] for p in pairs]):.2f} s | |
| execute step unsandboxed, median | {median([p[1] for p in pairs]):.2f} s | |
| sandbox overhead per submission (median of {len(pairs)} pairs) | {overhead:.2f} s | <= 1 |
"""
    print(body)
    if not args.no_record:
        record("Grading throughput: lab 2, 1 vs 2 workers, sandbox overhead", body)


if __name__ == "__main__":
    main()
