"""The reference runs behind ``rlcourse pin``: seeds, worker processes, entries and refusals.

A real pin trains every lab's reference for minutes per seed; here each lab's protocol is
shrunk to a few thousand steps (``monkeypatch``), which exercises the same code path: the
entry must be built from runs that equal a direct call of the lab's ``train_and_evaluate``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch

from grading_helpers import copy_course
from rlcourse.grading import lab1, lab2, lab5, pins

REPO = Path(__file__).resolve().parents[1]


def test_reference_runs_adds_the_graded_seed_and_keeps_seed_order() -> None:
    # Two spawned workers; pow is picklable, so this checks the pool plumbing only.
    seeds, runs, seconds = pins.reference_runs(functools.partial(pow, 2), [3, 1], graded_seed=0, workers=2)
    assert seeds == (0, 1, 3)
    assert runs == [1, 2, 8]
    assert seconds > 0


def test_reference_runs_in_process_with_one_worker() -> None:
    calls = []
    threads = torch.get_num_threads()

    def run(seed: int) -> int:  # a closure: only possible because nothing is pickled
        calls.append(seed)
        torch.set_num_threads(1)  # as every lab's run function does
        return -seed

    seeds, runs, _ = pins.reference_runs(run, (2, 2, 5), graded_seed=5, workers=1)
    assert seeds == (2, 5) and runs == [-2, -5] and calls == [2, 5]
    assert torch.get_num_threads() == threads    # this process keeps its thread count


TINY = {
    "lab1": (lab1, {"total_steps": 2_000, "eval_episodes": 4}, "MIN_REFERENCE_RETURN"),
    "lab5": (lab5, {"total_steps": 1_400, "eval_episodes": 2}, "MAX_REFERENCE_RETURN"),
}


@pytest.mark.slow
@pytest.mark.parametrize("lab", sorted(TINY))
def test_pin_entry_is_built_from_the_reference_runs(lab: str, monkeypatch) -> None:
    module, tiny, floor_name = TINY[lab]
    monkeypatch.setattr(module, "PROTOCOL", {**module.PROTOCOL, **tiny})
    monkeypatch.setattr(module, floor_name, -math.inf)   # a tiny budget does not learn; pin anyway
    entry = module.pin(seeds=(1,), workers=1)
    training = entry["training"]
    assert training["reference_seeds"] == [0, 1]          # the graded seed 0 is always added
    assert training["protocol"] == module.PROTOCOL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                              # as the reference run
    try:
        direct = module.train_and_evaluate(seed=1)[module.PROTOCOL["metric"]]
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads             # the in-process pin run restored it too
    run = training["runs"][1]
    assert run["seed"] == 1 and run["return"] == direct   # same seed, same machine: the same number
    returns = [r["return"] for r in training["runs"]]
    assert training["reference_returns"] == [round(r, 2) for r in returns]
    assert training["reference_min"] == round(min(returns), 2)
    if lab == "lab1":
        assert training["threshold"] == float(round(module.MARGIN * min(returns)))
    else:
        u = training["untrained_return"]
        assert training["threshold"] == float(round(u + module.MARGIN * (min(returns) - u)))
    assert entry["wall_time_s"] >= sum(r["wall_time_s"] for r in training["runs"]) - 1.0


@pytest.mark.slow
@pytest.mark.parametrize("lab", sorted(TINY))
def test_pin_refuses_a_reference_that_did_not_learn(lab: str, monkeypatch) -> None:
    module, tiny, floor_name = TINY[lab]
    monkeypatch.setattr(module, "PROTOCOL", {**module.PROTOCOL, **tiny})
    monkeypatch.setattr(module, floor_name, math.inf)
    with pytest.raises(RuntimeError, match="not pinning"):
        module.pin(seeds=(0,), workers=1)


@pytest.mark.slow
def test_lab2_pin_refuses_a_reference_that_did_not_learn(monkeypatch) -> None:
    # 2,048 steps of PPO on CartPole stay far below the 100 that pin_lab2 requires.
    monkeypatch.setattr(lab2, "PROTOCOL", {**lab2.PROTOCOL, "total_steps": 2_048, "eval_episodes": 4})
    with pytest.raises(RuntimeError, match="reference PPO reached only"):
        pins.pin_lab2(seeds=(0,), workers=1)


# --------------------------------------------------------------------------- the agent's hyperparameters
PINNED = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())


@pytest.mark.parametrize("lab", sorted(pins.LAB_MODULES))
def test_pins_were_measured_with_the_hyperparameters_the_graded_run_uses(lab: str) -> None:
    """Editing a preset (or a config default) changes every graded run built on it: re-pin."""
    training = PINNED[lab]["training"]
    assert pins.stale_config(lab, training) is None
    assert training["agent_config"] == pins.agent_config(lab)


def test_stale_config_names_the_changed_fields() -> None:
    training = PINNED["lab1_dqn"]["training"]
    edited = {**training, "agent_config": {**training["agent_config"], "batch_size": 7}}
    message = pins.stale_config("lab1_dqn", edited)
    assert "batch_size: pinned 7, now 128" in message and "rlcourse pin lab1_dqn" in message
    assert "learning_rate" not in message
    missing = {k: v for k, v in training.items() if k != "agent_config"}
    assert "do not record" in pins.stale_config("lab1_dqn", missing)


def test_pin_records_the_agent_config(tmp_path, monkeypatch) -> None:
    (tmp_path / "autograder").mkdir()
    (tmp_path / "autograder" / "nbgrader_config.py").write_text("")
    monkeypatch.setattr(pins, "_pinner", lambda lab: lambda: {"training": {"threshold": 1.0}, "wall_time_s": 0.0})
    assert pins.pin("lab5_sac", course_dir=tmp_path) == 0
    written = json.loads((tmp_path / "autograder" / "pinned_metrics.json").read_text())["lab5_sac"]
    assert written["training"]["agent_config"] == pins.agent_config("lab5_sac")


def test_grade_refuses_pins_measured_with_other_hyperparameters(tmp_path, run_cli) -> None:
    course = copy_course(tmp_path)
    path = course / "autograder" / "pinned_metrics.json"
    data = json.loads(path.read_text())
    data["lab1_dqn"]["training"]["agent_config"]["learning_rate"] = 0.5
    path.write_text(json.dumps(data))
    proc = run_cli(["grade", "lab1_dqn", "--course-dir", str(course)], cwd=course)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "learning_rate: pinned 0.5, now 0.001" in proc.stderr and "rlcourse pin lab1_dqn" in proc.stderr
    assert not (course / "autograder" / "gradebook.db").exists()       # nothing was graded
