"""The MuJoCo-backed Ant follows the VecEnv protocol (Isaac Lab step semantics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlcourse
from rlcourse.envs import VecEnv, make
from rlcourse.envs.locomotion import AntEnv


def random_actions(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 8, generator=g) * 2 - 1 for _ in range(steps)]


def test_make_returns_vecenv_with_documented_spaces():
    env = make("Ant", num_envs=3, seed=0)
    assert isinstance(env, VecEnv) and isinstance(env, AntEnv)
    assert (env.num_envs, env.num_obs, env.num_actions, env.is_discrete) == (3, 36, 8, False)
    assert env.max_episode_length == 1000
    assert env.single_observation_space.shape == (36,)
    assert env.single_action_space.shape == (8,)
    np.testing.assert_array_equal(env.single_action_space.low, -np.ones(8, dtype=np.float32))
    assert env.step_dt == pytest.approx(0.05)
    obs, extras = env.reset()
    assert obs.shape == (3, 36) and obs.dtype == torch.float32 and isinstance(extras, dict)
    # Layout: torso height first (standing pose of ant.xml), previous actions last (zero after reset).
    torch.testing.assert_close(obs[:, 0], torch.full((3,), 0.55))
    assert torch.all(obs[:, 28:] == 0)
    assert torch.all(obs[:, 12:20].abs() <= 1.0)                  # joint positions scaled to [-1, 1]
    torch.testing.assert_close(obs[:, 10], torch.ones(3))          # upright
    env.close()


def test_step_returns_the_five_tuple_on_device():
    env = make("Ant", num_envs=4, seed=0)
    env.reset()
    obs, rew, term, trunc, extras = env.step(torch.zeros(4, 8))
    assert obs.shape == (4, 36) and obs.dtype == torch.float32
    assert rew.shape == (4,) and rew.dtype == torch.float32
    assert term.dtype == torch.bool and trunc.dtype == torch.bool and term.shape == trunc.shape == (4,)
    assert torch.equal(extras["time_outs"], trunc)
    assert torch.equal(extras["final_obs"], obs)                   # nobody finished
    assert "episode" not in extras
    assert torch.isfinite(obs).all() and torch.isfinite(rew).all()
    # The previous (clipped) action is part of the next observation.
    obs, *_ = env.step(torch.full((4, 8), 3.0))
    torch.testing.assert_close(obs[:, 28:], torch.ones(4, 8))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(4, 7), r"shape \(4, 8\)"),
        (torch.zeros(8), r"shape \(4, 8\)"),
        (torch.full((4, 8), float("nan")), "NaN"),
        (torch.tensor([[0.0] * 8] * 3 + [[float("inf")] + [0.0] * 7]), "NaN or inf"),
    ],
)
def test_bad_actions_raise_a_clear_error(bad, match):
    env = make("Ant", num_envs=4, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_step_before_reset_is_an_error():
    env = make("Ant", num_envs=2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, 8))


def test_time_outs_are_truncations_with_same_step_reset():
    env = make("Ant", num_envs=3, seed=0, episode_length=5)
    obs0, _ = env.reset()
    for t in range(4):
        obs, rew, term, trunc, extras = env.step(torch.zeros(3, 8))
        assert not trunc.any() and not term.any() and "episode" not in extras
    obs, rew, term, trunc, extras = env.step(torch.zeros(3, 8))
    assert trunc.all() and not term.any()
    assert torch.equal(extras["time_outs"], trunc)
    ep = extras["episode"]
    assert ep["env_ids"].tolist() == [0, 1, 2] and ep["length"].tolist() == [5, 5, 5]
    # Same-step reset: the returned obs is the first obs of the next episode (standing
    # pose again, zero previous action); the obs the episode ended in is final_obs.
    torch.testing.assert_close(obs[:, 0], torch.full((3,), 0.55))
    assert not torch.equal(extras["final_obs"], obs)
    assert torch.all(env.episode_length == 0)


def test_falling_terminates_not_truncates():
    # With a termination height above the standing height every step ends in a fall.
    env = make("Ant", num_envs=2, seed=0, termination_height=2.0, episode_length=1)
    env.reset()
    obs, rew, term, trunc, extras = env.step(torch.zeros(2, 8))
    assert term.all() and not trunc.any() and not extras["time_outs"].any()
    assert extras["episode"]["length"].tolist() == [1, 1]
    torch.testing.assert_close(extras["episode"]["rew_termination"], torch.full((2,), -2.0))


def test_final_obs_rows_of_running_envs_equal_obs():
    env = make("Ant", num_envs=6, seed=0)
    env.reset()
    saw_done = False
    for a in random_actions(6, 200):
        obs, rew, term, trunc, extras = env.step(a)
        done = term | trunc
        if done.any():
            saw_done = True
            assert torch.equal(extras["final_obs"][~done], obs[~done])
            assert set(extras["episode"]["env_ids"].tolist()) == set(done.nonzero().flatten().tolist())
            # The final observation shows the fall (torso below 0.31 m) ...
            assert torch.all(extras["final_obs"][term, 0] < 0.31)
            # ... and the returned one the fresh standing pose.
            torch.testing.assert_close(obs[term, 0], torch.full((int(term.sum()),), 0.55))
    assert saw_done, "random actions should make some ant fall within 200 steps"


def test_same_seed_and_actions_give_the_same_trajectory():
    actions = random_actions(4, 60, seed=3)

    def rollout(seed: int, nthread: int) -> tuple[torch.Tensor, torch.Tensor]:
        env = make("Ant", num_envs=4, seed=seed, nthread=nthread)
        obs, _ = env.reset()
        traj, rews = [obs], []
        for a in actions:
            obs, rew, *_ = env.step(a)
            traj.append(obs)
            rews.append(rew)
        return torch.stack(traj), torch.stack(rews)

    a_obs, a_rew = rollout(seed=7, nthread=2)
    b_obs, b_rew = rollout(seed=7, nthread=2)
    c_obs, c_rew = rollout(seed=7, nthread=1)     # the thread pool does not change results
    d_obs, _ = rollout(seed=8, nthread=2)
    assert torch.equal(a_obs, b_obs) and torch.equal(a_rew, b_rew)
    assert torch.equal(a_obs, c_obs) and torch.equal(a_rew, c_rew)
    assert not torch.equal(a_obs[0], d_obs[0])    # another seed, other reset noise


def test_reset_with_a_seed_is_reproducible():
    env = make("Ant", num_envs=3, seed=0)
    a, _ = env.reset(seed=5)
    env.step(torch.ones(3, 8))
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reset_noise_matches_isaacgymenvs():
    env = make("Ant", num_envs=64, seed=0)
    env.reset()
    joints = env.sim.qpos[:, env.act_qpos_idx]
    lo, hi = env._dof_limits_np
    assert np.all(joints >= lo - 1e-9) and np.all(joints <= hi + 1e-9)
    dev = joints - np.clip(env.init_qpos[env.act_qpos_idx], lo, hi)
    assert np.abs(dev).max() <= 0.2 + 1e-9 and np.abs(dev).max() > 0.15
    vel = env.sim.qvel[:, env.act_dof_idx]
    assert np.abs(vel).max() <= 0.1 and np.abs(vel).max() > 0.08
    np.testing.assert_array_equal(env.sim.qvel[:, :6], 0.0)


def test_physics_is_real_mujoco():
    # Holding all joints at zero torque, the ant stands on its legs; full torque on
    # every joint moves it. Torso velocity in the observation matches the state.
    env = make("Ant", num_envs=2, seed=0)
    env.reset()
    for _ in range(20):
        obs, *_ = env.step(torch.zeros(2, 8))
    assert torch.all(obs[:, 0] > 0.45)
    before = env.sim.qpos[:, 7:].copy()
    obs, *_ = env.step(torch.ones(2, 8))
    assert np.abs(env.sim.qpos[:, 7:] - before).max() > 0.01
    torch.testing.assert_close(obs[:, 1:4], env.root_lin_vel_b)


def test_episode_statistics_and_forward_distance():
    env = make("Ant", num_envs=2, seed=0, episode_length=10)
    env.reset()
    total = torch.zeros(2)
    for _ in range(10):
        obs, rew, term, trunc, extras = env.step(torch.zeros(2, 8))
        total += rew
    ep = extras["episode"]
    torch.testing.assert_close(ep["return"], total)
    assert ep["length"].tolist() == [10, 10]
    assert ep["x_distance"].shape == (2,) and ep["x_distance"].abs().max() < 0.5   # standing still


def test_unknown_task_kwarg_is_an_error_and_bad_sizes_are_rejected():
    with pytest.raises(TypeError):
        make("Ant", num_envs=2, not_a_setting=1)
    with pytest.raises(ValueError, match="num_envs"):
        make("Ant", num_envs=0)
    with pytest.raises(ValueError, match="integrator"):
        make("Ant", num_envs=1, integrator="leapfrog")


def test_runs_through_the_ppo_runner_protocol():
    env = make("Ant", num_envs=4, seed=0)
    agent = rlcourse.PPO(env, seed=0, num_steps_per_env=8)
    agent.learn(64, eval_episodes=0, progress=False)
    assert agent.global_step == 64
    act = agent.predict(torch.zeros(4, 36))
    assert act.shape == (4, 8) and act.abs().max() <= 1.0
    # Training goes on where it stopped (SB3's learn(n) again): the env's buffers, replaced by
    # steps taken in inference mode, are reset in place at the start of the second call.
    agent.learn(128, eval_episodes=0, progress=False)
    assert agent.global_step == 128


def test_power_scale_multiplies_the_torque_beyond_the_control_range() -> None:
    # ant.xml clamps ctrl to [-1, 1]: power_scale must scale the gear, or a full action would be
    # capped at the unscaled torque. Torque = action x 150 x power_scale, so action 0.5 with
    # power_scale 2 must move the robot exactly like action 1 with power_scale 1.
    def run(power_scale: float, action: float) -> torch.Tensor:
        env = rlcourse.envs.make("Ant", num_envs=2, seed=0, power_scale=power_scale, nthread=1)
        env.reset()
        for _ in range(10):
            obs, *_ = env.step(torch.full((2, 8), action))
        env.close()
        return obs[:, :28]          # 28-35 are the previous actions themselves

    assert torch.equal(run(2.0, 0.5), run(1.0, 1.0))
    assert not torch.equal(run(2.0, 1.0), run(1.0, 1.0))
    with pytest.raises(ValueError, match="power_scale must be > 0"):
        rlcourse.envs.make("Ant", num_envs=1, power_scale=0.0)
