"""The Humanoid task: the Ant's task logic (IGE Humanoid weights) on gymnasium's humanoid.xml."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlcourse
from rlcourse.envs import make


def _random_actions(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 17, generator=g) * 2 - 1 for _ in range(steps)]


def test_spaces_and_observation_layout() -> None:
    env = make("Humanoid", num_envs=3, seed=0)
    assert env.num_obs == 63 and env.num_actions == 17 and env.step_dt == pytest.approx(0.015)
    obs, _ = env.reset()
    assert obs.shape == (3, 63) and obs.dtype == torch.float32
    torch.testing.assert_close(obs[:, 0], torch.full((3,), 1.4))        # torso height at reset
    torch.testing.assert_close(obs[:, 10], torch.ones(3))                # upright
    obs, rew, term, trunc, extras = env.step(torch.full((3, 17), 2.0))   # clipped to 1
    torch.testing.assert_close(obs[:, 46:], torch.ones(3, 17))           # previous actions: the last block
    assert rew.shape == (3,) and term.dtype == torch.bool and torch.equal(extras["time_outs"], trunc)


def test_unit_actions_map_onto_the_motor_control_range() -> None:
    env = make("Humanoid", num_envs=2, seed=0)
    env.reset()
    ctrl = env._action_to_ctrl(torch.tensor([[1.0] * 17, [-0.5] * 17]))
    np.testing.assert_allclose(ctrl, [[0.4] * 17, [-0.2] * 17])
    # The Ant's control range is already [-1, 1]: its actions pass through unchanged.
    ant = make("Ant", num_envs=1, seed=0)
    assert ant._ctrl_scale is None


def test_standing_still_falls_and_terminates() -> None:
    env = make("Humanoid", num_envs=4, seed=0, episode_length=500)
    env.reset()
    for t in range(200):
        obs, rew, term, trunc, extras = env.step(torch.zeros(4, 17))
        if term.any():
            break
    assert term.any() and not trunc.any(), "a humanoid without motor torque must fall within 3 s"
    ep = extras["episode"]
    assert torch.all(extras["final_obs"][term, 0] < 0.8)                   # the torso is below 0.8 m ...
    torch.testing.assert_close(obs[term, 0], torch.full((int(term.sum()),), 1.4))   # ... and the env restarted
    torch.testing.assert_close(ep["rew_termination"], torch.full((len(ep["env_ids"]),), -1.0))


def test_same_seed_same_trajectory_and_terms_sum_to_the_reward() -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        env = make("Humanoid", num_envs=4, seed=3, randomization={"mass": {"range": [0.8, 1.2]}})
        obs, _ = env.reset()
        out, rews = [obs], []
        for a in _random_actions(4, 60):
            obs, rew, *_ = env.step(a)
            terms = env.reward_manager.last_values()
            torch.testing.assert_close(sum(terms.values()), rew)
            out.append(obs)
            rews.append(rew)
        env.close()
        return torch.stack(out), torch.stack(rews)

    a, b = run(), run()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_ppo_runs_on_the_humanoid() -> None:
    env = make("Humanoid", num_envs=8, seed=0)
    agent = rlcourse.PPO(env, seed=0, num_steps_per_env=16, num_learning_epochs=1, num_mini_batches=2)
    agent.learn(2 * 8 * 16, eval_episodes=0, progress=False)
    env.close()
    assert agent.global_step == 256
