"""GymVecEnv: gymnasium tasks with Isaac Lab semantics (same-step resets, time-outs, episode extras)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcourse import envs


@pytest.mark.parametrize(
    "env_id, num_obs, num_actions, discrete",
    [("CartPole-v1", 4, 2, True), ("Pendulum-v1", 3, 1, False)],
)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_shapes_dtypes_device(make_env, env_id, num_obs, num_actions, discrete, num_envs) -> None:
    env = make_env(env_id, num_envs=num_envs)
    assert (env.num_envs, env.num_obs, env.num_actions, env.is_discrete) == (num_envs, num_obs, num_actions, discrete)
    assert env.device == torch.device("cpu") and env.env_id == env_id
    obs, extras = env.reset()
    assert obs.shape == (num_envs, num_obs) and obs.dtype == torch.float32 and extras == {}
    if discrete:
        actions = torch.zeros(num_envs, dtype=torch.long)
    else:
        actions = torch.zeros(num_envs, num_actions)
    obs, rew, term, trunc, extras = env.step(actions)
    assert obs.shape == (num_envs, num_obs) and obs.dtype == torch.float32
    assert rew.shape == (num_envs,) and rew.dtype == torch.float32
    assert term.shape == trunc.shape == (num_envs,)
    assert term.dtype == trunc.dtype == torch.bool
    assert extras["time_outs"].dtype == torch.bool and torch.equal(extras["time_outs"], trunc)
    assert extras["final_obs"].shape == obs.shape
    for t in (obs, rew, term, trunc, extras["time_outs"], extras["final_obs"]):
        assert t.device == env.device


def test_seeded_reset_is_reproducible(make_env) -> None:
    a, b, c = make_env(seed=3), make_env(seed=3), make_env(seed=4)
    obs_a, obs_b, obs_c = a.reset()[0], b.reset()[0], c.reset()[0]
    assert torch.equal(obs_a, obs_b)
    assert not torch.equal(obs_a, obs_c)
    assert not torch.equal(obs_a[0], obs_a[1])  # copy i is seeded with seed + i
    assert torch.equal(a.reset(seed=3)[0], obs_a)


def test_same_step_reset_on_termination(make_env) -> None:
    """Pushing right until CartPole falls: the step that terminates returns the next episode's first obs."""
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    obs, _ = env.reset()
    # A reference gymnasium env seeded like copy 0 tells us what the new episode must start with.
    ref = gym.make("CartPole-v1")
    ref_obs, _ = ref.reset(seed=0)
    np.testing.assert_array_equal(obs[0].numpy(), ref_obs)

    steps = 0
    while True:
        # env 0 always pushes right (falls fast); env 1 alternates (stays up for longer).
        actions = torch.tensor([1, steps % 2])
        obs, rew, term, trunc, extras = env.step(actions)
        ref_obs, _, ref_term, _, _ = ref.step(1)
        steps += 1
        if term[0]:
            break
        assert "episode" not in extras  # only on steps where an episode ended
        assert torch.equal(extras["final_obs"], obs)
        assert steps < 100, "pushing right for 100 steps should topple the pole"

    assert ref_term and not trunc[0] and not extras["time_outs"][0]
    # final_obs holds the state the episode ended in: past the 12 degree / 2.4 m limits.
    final = extras["final_obs"][0]
    np.testing.assert_allclose(final.numpy(), ref_obs, rtol=0, atol=0)
    assert abs(final[2].item()) > 12 * 2 * math.pi / 360 or abs(final[0].item()) > 2.4
    # obs is already the first observation of the new episode (CartPole resets within +-0.05).
    assert obs[0].abs().max().item() <= 0.05
    ref_next, _ = ref.reset()  # the next reset of the same RNG stream
    np.testing.assert_array_equal(obs[0].numpy(), ref_next)
    # env 1 did not finish: its final_obs row is just its obs.
    assert not term[1] and torch.equal(extras["final_obs"][1], obs[1])
    ep = extras["episode"]
    assert ep["env_ids"].tolist() == [0]
    assert ep["length"].tolist() == [steps]
    assert ep["return"].tolist() == [float(steps)]  # +1 per step on CartPole

    # The new episode's counters start from zero: the next step is its step 1.
    obs2, *_ = env.step(torch.tensor([0, 0]))
    ref_after, *_ = ref.step(0)
    np.testing.assert_allclose(obs2[0].numpy(), ref_after, rtol=1e-6)
    ref.close()


def test_time_outs_with_tiny_time_limit(make_env) -> None:
    env = make_env("Pendulum-v1", num_envs=2, seed=0, max_episode_steps=5)
    assert env.max_episode_length == 5
    env.reset()
    rewards = []
    zero = torch.zeros(2, 1)
    for t in range(1, 11):
        obs, rew, term, trunc, extras = env.step(zero)
        rewards.append(rew)
        assert not term.any(), "Pendulum never terminates"
        if t % 5:
            assert not trunc.any() and "episode" not in extras
            assert torch.equal(extras["final_obs"], obs)
            continue
        # Step 5 and 10: both copies are cut by the time limit, not terminated.
        assert trunc.all() and extras["time_outs"].all()
        ep = extras["episode"]
        assert ep["length"].tolist() == [5, 5]
        assert ep["env_ids"].tolist() == [0, 1]
        expected_return = torch.stack(rewards[-5:]).sum(0)
        torch.testing.assert_close(ep["return"], expected_return)
        # The returned obs starts the new episode, final_obs is where the old one stopped.
        assert not torch.equal(extras["final_obs"], obs)


def test_continuous_actions_are_clipped_to_bounds(make_env) -> None:
    """Out-of-range torques act like the bound (Isaac Lab's clip_actions), they are not an error."""
    a, b = make_env("Pendulum-v1", num_envs=1, seed=5), make_env("Pendulum-v1", num_envs=1, seed=5)
    a.reset(), b.reset()
    obs_a, rew_a, *_ = a.step(torch.tensor([[100.0]]))
    obs_b, rew_b, *_ = b.step(torch.tensor([[2.0]]))  # Pendulum's max torque
    torch.testing.assert_close(obs_a, obs_b)
    torch.testing.assert_close(rew_a, rew_b)


def test_discrete_actions_accept_column_and_integral_floats(make_env) -> None:
    env, twin = make_env("CartPole-v1", num_envs=2), make_env("CartPole-v1", num_envs=2)
    env.reset(), twin.reset()
    column, *_ = env.step(torch.tensor([[0], [1]]))  # (N, 1) is squeezed
    floats, *_ = env.step(torch.tensor([1.0, 0.0]))  # integral floats are accepted
    assert torch.equal(column, twin.step(torch.tensor([0, 1]))[0])
    assert torch.equal(floats, twin.step(torch.tensor([1, 0]))[0])


# --------------------------------------------------------------------------- bad input
BAD_ACTIONS = [
    pytest.param("CartPole-v1", torch.zeros(3, dtype=torch.long), r"shape \(2,\), got \(3,\)", id="discrete-wrong-shape"),
    pytest.param("CartPole-v1", torch.zeros(2, 2), r"shape \(2,\), got \(2, 2\)", id="discrete-2d"),
    pytest.param("CartPole-v1", torch.tensor([0, 2]), r"\[0, 1\], got \[0, 2\]", id="discrete-too-large"),
    pytest.param("CartPole-v1", torch.tensor([-1, 0]), r"\[0, 1\], got \[-1, 0\]", id="discrete-negative"),
    pytest.param("CartPole-v1", torch.tensor([0.5, 1.0]), r"must be integers", id="discrete-fractional"),
    pytest.param("CartPole-v1", torch.tensor([float("nan"), 1.0]), r"NaN", id="discrete-nan"),
    pytest.param("Pendulum-v1", torch.zeros(2), r"shape \(2, 1\), got \(2,\)", id="continuous-1d"),
    pytest.param("Pendulum-v1", torch.zeros(2, 3), r"shape \(2, 1\), got \(2, 3\)", id="continuous-wrong-dim"),
    pytest.param("Pendulum-v1", torch.tensor([[0.0], [float("nan")]]), r"NaN or inf \(env ids \[1\]\)", id="continuous-nan"),
    pytest.param("Pendulum-v1", torch.tensor([[float("inf")], [0.0]]), r"NaN or inf \(env ids \[0\]\)", id="continuous-inf"),
]


@pytest.mark.parametrize("env_id, actions, message", BAD_ACTIONS)
def test_bad_actions_raise_clear_value_error(make_env, env_id, actions, message) -> None:
    env = make_env(env_id, num_envs=2)
    env.reset()
    with pytest.raises(ValueError, match=message) as info:
        env.step(actions)
    assert env_id in str(info.value)  # the message says which env complained


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"env_id": "CartPol-v1"}, r"unknown environment id 'CartPol-v1'\. Did you mean CartPole-v1", id="typo"),
        pytest.param({"env_id": "NoSuchRobot-v9"}, r"unknown environment id 'NoSuchRobot-v9'", id="unknown"),
        pytest.param({"env_id": "CartPole-v1", "num_envs": 0}, r"num_envs must be a positive integer", id="zero-envs"),
        pytest.param({"env_id": "CartPole-v1", "num_envs": 2.5}, r"num_envs must be a positive integer", id="float-envs"),
    ],
)
def test_make_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        envs.make(**kwargs)


def test_step_before_reset_is_an_error(make_env) -> None:
    env = make_env("CartPole-v1", num_envs=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(1, dtype=torch.long))
