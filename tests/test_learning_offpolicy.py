"""Learning tests for the off-policy algorithms: the presets solve their tasks within the budget.

Each run uses the env's YAML preset (presets/<algo>.yaml), a fixed seed and the CPU,
then evaluates the deterministic policy on fresh episodes with ``rlcourse.evaluate``.
The thresholds are the course's targets; they are never lowered to make a run pass.
"""

from __future__ import annotations

import time

import pytest

from rlcourse import envs
from rlcourse.algos import DDPG, DQN, SAC, load_preset

from learning_helpers import learn_until_solved

CASES = [
    # algorithm, env, step budget, threshold on the mean evaluation return, seeds, how many must solve
    # DQN on CartPole is the jumpy one: its greedy policy sits near 100, jumps to 500 and keeps
    # swinging. Measured with evaluations every 5k steps, seeds 0-5 of the preset all reached
    # >= 475, first at 65k, 25k, 40k, 35k, 50k and 45k steps. Seeds run in the order given and
    # the test stops once the claim is decided: here at the first seed that solves. How many
    # seeds solve, with the policy a run hands back, is benchmarks/bench_seeds.py's claim
    # (>= 9 of 10 seeds, in benchmarks/RESULTS.md); this test guards the learning itself.
    pytest.param(DQN, "CartPole-v1", 100_000, 475.0, (1, 0, 2), 1, id="dqn-cartpole"),
    pytest.param(SAC, "Pendulum-v1", 20_000, -200.0, (0,), 1, id="sac-pendulum"),
    pytest.param(DDPG, "Pendulum-v1", 20_000, -200.0, (0,), 1, id="ddpg-pendulum"),
]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("algo_cls, env_id, budget, threshold, seeds, must_solve", CASES)
def test_preset_solves_task_within_budget(algo_cls, env_id: str, budget: int, threshold: float,
                                          seeds: tuple[int, ...], must_solve: int) -> None:
    """The deterministic policy reaches the threshold at an evaluation (every budget/20 steps)."""
    preset = load_preset(algo_cls.name, env_id)
    total_steps = preset["total_steps"]
    assert total_steps <= budget, f"the {algo_cls.name} preset for {env_id} trains longer than the {budget}-step budget"
    curves = {}

    def solved() -> list[int]:
        return [seed for seed, curve in curves.items() if curve and max(r for _, r in curve) >= threshold]

    for i, seed in enumerate(seeds):
        # The claim is "at least must_solve of these seeds solve": once it is decided either way,
        # the remaining seeds cannot change the outcome (saves a full DQN run when two solved).
        n_solved = len(solved())
        if n_solved >= must_solve or n_solved + len(seeds) - i < must_solve:
            break
        env = envs.make(env_id, num_envs=preset["num_envs"], seed=seed)
        eval_env = envs.make(env_id, num_envs=5, seed=10_000 + seed)
        agent = algo_cls(env, seed=seed)  # preset="auto": the YAML entry for env_id
        start = time.perf_counter()
        curves[seed] = learn_until_solved(agent, total_steps, eval_env, threshold, every=budget // 20)
        elapsed = time.perf_counter() - start
        env.close()
        eval_env.close()
        print(f"{algo_cls.name} {env_id} seed {seed} ({elapsed:.0f} s): "
              + ", ".join(f"{s}: {r:.1f}" for s, r in curves[seed]))
        assert agent.global_step <= budget
    assert len(solved()) >= must_solve, curves
