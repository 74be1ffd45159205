"""benchmarks/bench_seeds.py: argument parsing, the commands it runs and its result tables (no training)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_seeds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_parse_seeds_and_presets(bench):
    assert bench.parse_seeds("0-9") == list(range(10))
    assert bench.parse_seeds("3,0-1,3") == [0, 1, 3]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_seeds("a")
    assert bench.parse_presets("ppo-ant,ppo-cartpole,ppo-ant") == ["ppo-ant", "ppo-cartpole"]   # in the order given
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_presets("ppo-mars")
    args = bench.build_parser().parse_args([])
    assert args.seeds == list(range(10)) and args.presets == list(bench.PRESETS) and args.jobs == 1


def test_dry_run_prints_the_cli_commands(bench, capsys):
    assert bench.main(["--presets", "ppo-cartpole", "--seeds", "0", "--dry-run", "--run-root", "/tmp/x"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("train ppo --env CartPole-v1 --seed 0 --run-dir /tmp/x/ppo-cartpole_s0 --no-progress")
    assert out[1].endswith("eval /tmp/x/ppo-cartpole_s0 --episodes 50 --num-envs 50 --seed 12345")


def _row(seed, ret, reached, **extra):
    return {"seed": seed, "return": ret, "return_std": 1.0, "return_10": ret, "reached": reached,
            "reached_10": reached, "best_eval": ret, "best_step": 20000, "last_eval": ret, "steps": 100352,
            "train_s": 10.0 + seed, "process_s": 12.0 + seed, "load": 2.0, **extra}


def test_tables_count_seeds_and_failures(bench):
    rows = [_row(s, 500.0, True) for s in range(8)] + [_row(8, 300.0, False), {"seed": 9, "error": "boom"}]
    summary = bench.summary_row("ppo-cartpole", rows)
    assert "| 8/10 (1 failed to run) |" in summary and "**not met**" in summary     # 8 of 10: a failure is a miss
    assert "| 14.0 |" in summary                                            # median train s of the 9 finished
    table = bench.seed_table("ppo-cartpole", rows)
    assert "| 8 | 300.0 +- 1.0 | 300.0 | **no** |" in table and "error: boom" in table
    rows[-1] = _row(9, 480.0, True)
    assert "| 9/10 |" in bench.summary_row("ppo-cartpole", rows) and "| met |" in bench.summary_row("ppo-cartpole", rows)

    ant = [_row(s, 900.0, s != 0, speed_mean=1.5 - (s == 0), speed_min=0.2, falls=int(s == 0), episodes=50)
           for s in range(10)]
    assert "| 0.50 (0.20) | 1/50 | **no** |" in bench.seed_table("ppo-ant", ant)
    assert "1.50 m/s" in bench.summary_row("ppo-ant", ant)
    assert "met (only 3 seeds run)" in bench.summary_row("ppo-ant", ant[1:4])


def test_section_keeps_its_data(bench):
    data = {"dqn-cartpole": {"machine": "m", "load": "1.0-2.0", "rows": [_row(0, 500.0, True, run_dir="/tmp/r")]}}
    body = bench.section_body(data, 50)
    assert "Not measured: ppo-cartpole" in body and "### dqn-cartpole" in body
    kept = json.loads(bench.DATA_RE.search(body).group(1))
    assert kept["dqn-cartpole"]["rows"][0]["return"] == 500.0 and "run_dir" not in kept["dqn-cartpole"]["rows"][0]
