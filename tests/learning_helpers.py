"""Shared by the learning tests: train until an evaluation reaches the threshold, within a budget."""

from __future__ import annotations

from typing import Any

from rlcourse import evaluate


def learn_until_solved(agent: Any, total_steps: int, eval_env: Any, threshold: float, every: int,
                       episodes: int = 10) -> list[tuple[int, float]]:
    """Train ``agent`` for at most ``total_steps``, evaluating every ``every`` env steps.

    "Solves the task within N steps" is checked the way the RL Zoo reports it: the
    deterministic policy is evaluated on ``episodes`` fresh episodes of a separate env at
    regular intervals, and training stops at the first evaluation that reaches ``threshold``.
    Deterministic actions draw no random numbers, so the evaluations do not change the
    training run. Value-based agents in particular swing between solving CartPole and ~100
    after they first solve it, so the last iterate alone would make the test depend on
    floating-point details (CPU model, thread count, library version).

    Returns the ``(global_step, mean return)`` of every evaluation made.
    """
    curve: list[tuple[int, float]] = []
    next_eval = every

    def evaluate_now(runner: Any) -> bool | None:
        nonlocal next_eval
        if agent.global_step < next_eval and agent.global_step < total_steps:
            return None
        while next_eval <= agent.global_step:
            next_eval += every
        curve.append((agent.global_step, evaluate(agent, eval_env, episodes=episodes)["episode_return_mean"]))
        return False if curve[-1][1] >= threshold else None  # False stops training: solved

    agent.learn(total_steps, eval_episodes=0, progress=False, callback=evaluate_now)
    return curve
