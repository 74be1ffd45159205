"""The shared replay buffer: final observations, time-outs, wrap-around, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from rlcourse.algos import DDPG, DQN, SAC
from rlcourse.storage import ReplayBuffer


def make_buffer(capacity: int = 8, discrete: bool = False) -> ReplayBuffer:
    return ReplayBuffer(capacity, (2,), () if discrete else (1,), discrete)


def test_time_out_bootstraps_and_termination_does_not() -> None:
    # Three envs in one step: env 0 keeps running, env 1 reaches a terminal state,
    # env 2 is cut by the time limit. The env already reset envs 1 and 2, so `next_obs`
    # holds their new first observations (9s); `final_obs` holds where they ended.
    buf = make_buffer()
    obs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    next_obs = torch.tensor([[0.5, 0.5], [9.0, 9.0], [9.0, 9.0]])
    final_obs = torch.tensor([[0.5, 0.5], [1.5, 1.5], [2.5, 2.5]])
    terminated = torch.tensor([False, True, False])
    truncated = torch.tensor([False, False, True])
    buf.add(obs, torch.zeros(3, 1), torch.tensor([1.0, 2.0, 3.0]), next_obs, terminated, truncated, final_obs)

    assert len(buf) == 3
    # Every finished episode's successor is the observation it ended in, not the reset one.
    torch.testing.assert_close(buf.next_obs[:3], final_obs)
    # done = terminated only: the time-out (env 2) keeps done = 0 so its target bootstraps.
    torch.testing.assert_close(buf.dones[:3], torch.tensor([0.0, 1.0, 0.0]))
    # The time-out is recorded on its own (lab 1's td_loss must not mask by it).
    torch.testing.assert_close(buf.time_outs[:3], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(buf.rewards[:3], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(buf.obs[:3], obs)


def test_time_out_without_final_obs_falls_back_to_the_current_obs() -> None:
    # An env without extras["final_obs"] (Isaac Lab): the reset observation must not be
    # stored as the successor; the pre-step observation stands in for it.
    buf = make_buffer()
    obs = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    next_obs = torch.tensor([[1.5, 1.5], [9.0, 9.0]])
    buf.add(obs, torch.zeros(2, 1), torch.zeros(2), next_obs, torch.tensor([False, False]), torch.tensor([False, True]))
    torch.testing.assert_close(buf.next_obs[:2], torch.tensor([[1.5, 1.5], [2.0, 2.0]]))
    torch.testing.assert_close(buf.dones[:2], torch.zeros(2))


def test_wraps_around_and_overwrites_the_oldest() -> None:
    buf = make_buffer(capacity=5, discrete=True)
    for step in range(3):  # 3 steps x 2 envs = 6 transitions into 5 rows
        obs = torch.full((2, 2), float(step * 2)) + torch.tensor([[0.0], [1.0]])
        buf.add(obs, torch.tensor([step, step]), obs[:, 0], obs + 0.5, torch.zeros(2, dtype=torch.bool))
    # Rows hold transitions 0..5 at (i % 5): transition 5 overwrote transition 0 in row 0.
    assert len(buf) == 5 and buf.pos == 1
    torch.testing.assert_close(buf.rewards, torch.tensor([5.0, 1.0, 2.0, 3.0, 4.0]))
    assert buf.actions.tolist() == [2, 0, 1, 1, 2]
    assert buf.actions.dtype == torch.int64


def test_sampling_is_seeded_and_stays_in_the_filled_part() -> None:
    buf = make_buffer(capacity=100)
    obs = torch.arange(10, dtype=torch.float32).repeat(2, 1).T  # 10 transitions, obs = (i, i)
    buf.add(obs, torch.zeros(10, 1), torch.arange(10, dtype=torch.float32), obs + 100, torch.zeros(10, dtype=torch.bool))
    a = buf.sample(64, torch.Generator().manual_seed(3))
    b = buf.sample(64, torch.Generator().manual_seed(3))
    c = buf.sample(64, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.obs, b.obs)
    assert not torch.equal(a.obs, c.obs)
    # Rows 10..99 are empty and must never be drawn; a sample keeps (s, r, s') together.
    assert a.rewards.max() <= 9 and a.rewards.min() >= 0
    torch.testing.assert_close(a.obs[:, 0], a.rewards)
    torch.testing.assert_close(a.next_obs[:, 0], a.rewards + 100)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ReplayBuffer(0, (2,), (), True), "capacity"),
        (lambda: make_buffer().sample(4, torch.Generator()), "empty"),
        (lambda: make_buffer(capacity=2).add(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 2),
                                             torch.zeros(3, dtype=torch.bool)), "capacity 2"),
    ],
)
def test_bad_use_is_a_clear_error(call, message: str) -> None:
    with pytest.raises((ValueError, RuntimeError), match=message):
        call()


def test_state_dict_round_trip() -> None:
    buf = make_buffer(capacity=4)
    for i in range(3):
        x = torch.full((2, 2), float(i))
        buf.add(x, x[:, :1], x[:, 0], x + 1, torch.tensor([False, i == 2]))
    copy = make_buffer(capacity=4)
    copy.load_state_dict(buf.state_dict())
    assert (copy.pos, copy.size) == (buf.pos, buf.size) == (2, 4)
    for key in ("obs", "actions", "rewards", "next_obs", "dones"):
        torch.testing.assert_close(getattr(copy, key), getattr(buf, key))
    with pytest.raises(ValueError, match="capacity"):
        make_buffer(capacity=2).load_state_dict(buf.state_dict())


@pytest.mark.parametrize(
    "algo_cls, env_id, hp",
    [
        (DQN, "CartPole-v1", {"hidden": (8,)}),
        (SAC, "Pendulum-v1", {"actor_hidden": (8,), "critic_hidden": (8,)}),
        (DDPG, "Pendulum-v1", {"actor_hidden": (8,), "critic_hidden": (8,)}),
    ],
)
def test_agents_store_real_time_outs_correctly(make_env, algo_cls, env_id: str, hp: dict) -> None:
    # A real env with a 5-step time limit: after 5 steps every episode was truncated
    # (CartPole cannot fall in 5 steps, Pendulum never terminates). The agent must store
    # done = 0 and the final observation, and the env must already show the reset obs.
    env = make_env(env_id, num_envs=2, seed=0, max_episode_steps=5)
    agent = algo_cls(env, seed=0, preset=None, learning_starts=100, **hp)
    obs, _ = env.reset(seed=0)
    with torch.inference_mode():
        for _ in range(5):
            prev = obs
            actions = agent.act(obs)
            obs, rewards, terminated, truncated, extras = env.step(actions)
            agent.process_env_step(obs, rewards, terminated, truncated, extras)
    assert truncated.all() and not terminated.any()
    last = slice(8, 10)  # rows of the fifth step
    torch.testing.assert_close(agent.buffer.next_obs[last], extras["final_obs"])
    assert not torch.allclose(agent.buffer.next_obs[last], obs)  # not the reset observation
    torch.testing.assert_close(agent.buffer.obs[last], prev)
    torch.testing.assert_close(agent.buffer.dones[:10], torch.zeros(10))


def test_dqn_stores_cartpole_termination_as_done(make_env) -> None:
    # Always pushing left topples the pole in ~10 steps: a real terminal state, done = 1.
    env = make_env("CartPole-v1", num_envs=1, seed=0)
    agent = DQN(env, seed=0, preset=None, hidden=(8,), learning_starts=10_000)
    obs, _ = env.reset(seed=0)
    with torch.inference_mode():
        for step in range(100):
            agent.act(obs)
            agent._actions = torch.zeros(1, dtype=torch.long)  # override: always action 0
            obs, rewards, terminated, truncated, extras = env.step(agent._actions)
            agent.process_env_step(obs, rewards, terminated, truncated, extras)
            if terminated.any():
                break
    assert terminated.item(), "the pole should have fallen"
    assert agent.buffer.dones[step].item() == 1.0 and agent.buffer.dones[:step].sum().item() == 0.0
    torch.testing.assert_close(agent.buffer.next_obs[step], extras["final_obs"][0])
