"""PPO actually learns: CartPole-v1 solved within 100k environment steps (fixed seed, CPU).

Threshold 475 is gymnasium's reward_threshold for CartPole-v1 (500 is the maximum).
The preset in rlcourse/presets/ppo.yaml (SB3 Zoo's CartPole regime) is what is tested.
"""

from __future__ import annotations

import pytest

from rlcourse import envs
from rlcourse.algos import PPO
from rlcourse.evaluation import evaluate


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ppo_solves_cartpole_in_100k_steps() -> None:
    env = envs.make("CartPole-v1", num_envs=8, seed=0)
    agent = PPO(env, seed=0)  # preset "auto": the CartPole-v1 entry
    agent.learn(100_000, eval_episodes=0, progress=False)
    env.close()
    assert 100_000 <= agent.global_step < 100_000 + 8 * agent.cfg.num_steps_per_env

    eval_env = envs.make("CartPole-v1", num_envs=10, seed=10_000)
    result = evaluate(agent, eval_env, episodes=20)
    eval_env.close()
    print(f"PPO CartPole-v1 seed 0: eval return {result['episode_return_mean']:.1f} +- {result['episode_return_std']:.1f}")
    assert result["episodes"] == 20
    assert result["episode_return_mean"] >= 475.0, result


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ppo_pendulum_reaches_minus_300_within_200k_steps() -> None:
    """Continuous control: Gaussian policy with a state-independent log-std (see ActorCritic)."""
    env = envs.make("Pendulum-v1", num_envs=8, seed=0)
    agent = PPO(env, seed=0)  # the Pendulum-v1 preset
    agent.learn(200_000, eval_episodes=0, progress=False)
    env.close()
    eval_env = envs.make("Pendulum-v1", num_envs=10, seed=10_000)
    result = evaluate(agent, eval_env, episodes=20)
    eval_env.close()
    print(f"PPO Pendulum-v1 seed 0: eval return {result['episode_return_mean']:.1f} +- {result['episode_return_std']:.1f}")
    assert result["episode_return_mean"] >= -300.0, result
