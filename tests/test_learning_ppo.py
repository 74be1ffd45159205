"""PPO actually learns: CartPole-v1 solved within 100k environment steps, Pendulum-v1 within 200k (fixed seed, CPU).

Threshold 475 is gymnasium's reward_threshold for CartPole-v1 (500 is the maximum).
The preset in rlcourse/presets/ppo.yaml (SB3 Zoo's CartPole regime) is what is tested.
"""

from __future__ import annotations

import pytest

from rlcourse import envs
from rlcourse.algos import PPO

from learning_helpers import learn_until_solved


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ppo_solves_cartpole_in_100k_steps() -> None:
    env = envs.make("CartPole-v1", num_envs=8, seed=0)
    agent = PPO(env, seed=0)  # preset "auto": the CartPole-v1 entry
    eval_env = envs.make("CartPole-v1", num_envs=10, seed=10_000)
    curve = learn_until_solved(agent, 100_000, eval_env, 475.0, every=10_000, episodes=20)
    env.close()
    eval_env.close()
    print(f"PPO CartPole-v1 seed 0 (step, eval return): {curve}")
    assert agent.global_step < 100_000 + 8 * agent.cfg.num_steps_per_env
    assert max(r for _, r in curve) >= 475.0, curve


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ppo_pendulum_reaches_minus_300_within_200k_steps() -> None:
    """Continuous control: Gaussian policy with a state-independent log-std (see ActorCritic)."""
    env = envs.make("Pendulum-v1", num_envs=8, seed=0)
    agent = PPO(env, seed=0)  # the Pendulum-v1 preset
    eval_env = envs.make("Pendulum-v1", num_envs=10, seed=10_000)
    curve = learn_until_solved(agent, 200_000, eval_env, -300.0, every=20_000, episodes=20)
    env.close()
    eval_env.close()
    print(f"PPO Pendulum-v1 seed 0 (step, eval return): {curve}")
    assert max(r for _, r in curve) >= -300.0, curve
