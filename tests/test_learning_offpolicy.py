"""Learning tests for the off-policy algorithms: the presets solve their tasks within the budget.

Each run uses the env's YAML preset (presets/<algo>.yaml), a fixed seed and the CPU,
then evaluates the deterministic policy on fresh episodes with ``rlcourse.evaluate``.
The thresholds are the course's targets; they are never lowered to make a run pass.
"""

from __future__ import annotations

import time

import pytest

from rlcourse import envs, evaluate
from rlcourse.algos import DDPG, DQN, SAC, load_preset

CASES = [
    # algorithm, env, step budget, threshold on the mean evaluation return
    pytest.param(DQN, "CartPole-v1", 100_000, 475.0, id="dqn-cartpole"),
    pytest.param(SAC, "Pendulum-v1", 20_000, -200.0, id="sac-pendulum"),
    pytest.param(DDPG, "Pendulum-v1", 20_000, -200.0, id="ddpg-pendulum"),
]


@pytest.mark.slow
@pytest.mark.parametrize("algo_cls, env_id, budget, threshold", CASES)
def test_preset_solves_task_within_budget(algo_cls, env_id: str, budget: int, threshold: float) -> None:
    seed = 0
    preset = load_preset(algo_cls.name, env_id)
    total_steps = preset["total_steps"]
    assert total_steps <= budget, f"the {algo_cls.name} preset for {env_id} trains longer than the {budget}-step budget"
    env = envs.make(env_id, num_envs=preset["num_envs"], seed=seed)
    eval_env = envs.make(env_id, num_envs=5, seed=10_000 + seed)
    agent = algo_cls(env, seed=seed)  # preset="auto": the YAML entry for env_id
    start = time.perf_counter()
    agent.learn(total_steps, eval_episodes=0, progress=False)
    elapsed = time.perf_counter() - start
    result = evaluate(agent, eval_env, episodes=10)
    env.close()
    eval_env.close()
    print(f"{algo_cls.name} {env_id}: {result['episode_return_mean']:.1f} +- {result['episode_return_std']:.1f} "
          f"after {agent.global_step} steps in {elapsed:.0f} s")
    assert agent.global_step <= budget
    assert result["episode_return_mean"] >= threshold, result["returns"]
