"""The reference runs behind ``rlcourse pin``: seeds, worker processes, entries and refusals.

A real pin trains every lab's reference for minutes per seed; here each lab's protocol is
shrunk to a few thousand steps (``monkeypatch``), which exercises the same code path: the
entry must be built from runs that equal a direct call of the lab's ``train_and_evaluate``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from rlcourse.grading import lab1, lab2, lab5, pins


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
