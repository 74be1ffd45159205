"""GAE (Schulman et al. 2016) and PPO's time-out bootstrapping, checked against hand arithmetic.

The worked example used throughout (gamma = 0.5, so the numbers stay exact in float32)::

    T = 4 steps, N = 2 envs, V(s) = s (a linear critic we set by hand)

    env 0:  V      = [1, 2, 3, 4]      last V(s_4) = 2
            r      = [1, 2, 0, 1]
            dones  = [0, 1, 0, 0]      terminates after t = 1 (a real terminal state)

    env 1:  V      = [2, 4, 6, 1]      last V(s_4) = 2
            r      = [0, 1, 1, 2]      raw env rewards
            dones  = [0, 0, 1, 0]      time-out after t = 2; the observation it ended in is
                                       final_obs = 8, so V(final_obs) = 8, and PPO turns
                                       r_2 into 1 + gamma * 8 = 5 before GAE sees it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcourse.algos.base import EnvSpec
from rlcourse.algos.ppo import PPO, compute_gae

GAMMA = 0.5

VALUES = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 1.0]])
# Rewards as GAE receives them: env 1's time-out step already holds 1 + 0.5 * 8 = 5.
REWARDS = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 5.0], [1.0, 2.0]])
DONES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
LAST_VALUES = torch.tensor([2.0, 2.0])

# delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
#   env 0: t=3: 1 + 0.5*2 - 4 = -2   t=2: 0 + 0.5*4 - 3 = -1   t=1: 2 + 0 - 2 = 0   t=0: 1 + 0.5*2 - 1 = 1
#   env 1: t=3: 2 + 0.5*2 - 1 =  2   t=2: 5 + 0     - 6 = -1   t=1: 1 + 0.5*6 - 4 = 0   t=0: 0 + 0.5*4 - 2 = 0
TD_ERRORS = [[1.0, 0.0], [0.0, 0.0], [-1.0, -1.0], [-2.0, 2.0]]

# lambda = 0.5, gamma * lambda = 0.25;  A_t = delta_t + 0.25 * (1 - done_t) * A_{t+1}
#   env 0: A_3 = -2;  A_2 = -1 + 0.25*(-2) = -1.5;  A_1 = 0 (done: nothing carried);  A_0 = 1 + 0.25*0 = 1
#   env 1: A_3 =  2;  A_2 = -1 (done: A_3 belongs to the next episode);  A_1 = 0 + 0.25*(-1) = -0.25
#          A_0 = 0 + 0.25*(-0.25) = -0.0625
ADV_LAM_HALF = [[1.0, -0.0625], [0.0, -0.25], [-1.5, -1.0], [-2.0, 2.0]]

# lambda = 1: A_t = G_t - V(s_t), G_t the discounted return to the episode end (or bootstrapped at T)
#   env 0: G_3 = 1 + 0.5*2 = 2 -> -2;  G_2 = 0 + 0.5*2 = 1 -> -2;  G_1 = 2 -> 0;  G_0 = 1 + 0.5*2 = 2 -> 1
#   env 1: G_3 = 2 + 0.5*2 = 3 -> 2;  G_2 = 5 -> -1;  G_1 = 1 + 0.5*5 = 3.5 -> -0.5;  G_0 = 0 + 0.5*3.5 = 1.75 -> -0.25
ADV_LAM_ONE = [[1.0, -0.25], [0.0, -0.5], [-2.0, -1.0], [-2.0, 2.0]]


@pytest.mark.parametrize(
    "lam, expected",
    [(0.0, TD_ERRORS), (0.5, ADV_LAM_HALF), (1.0, ADV_LAM_ONE)],
    ids=["lambda0", "lambda0.5", "lambda1"],
)
def test_gae_hand_computed(lam: float, expected: list[list[float]]) -> None:
    advantages, returns = compute_gae(REWARDS, VALUES, DONES, LAST_VALUES, GAMMA, lam)
    expected_t = torch.tensor(expected)
    torch.testing.assert_close(advantages, expected_t, rtol=0, atol=1e-6)
    # The critic's target is advantage + value (TD(lambda) return).
    torch.testing.assert_close(returns, expected_t + VALUES, rtol=0, atol=1e-6)


def test_gae_does_not_mix_episodes() -> None:
    """Changing anything after a boundary must not change the advantages before it."""
    base, _ = compute_gae(REWARDS, VALUES, DONES, LAST_VALUES, GAMMA, 0.9)
    rewards, values = REWARDS.clone(), VALUES.clone()
    rewards[3] += 100.0  # t = 3 lies after both envs' boundaries (t = 1 for env 0, t = 2 for env 1)
    values[3] -= 50.0  # the first value of env 1's next episode, and env 0 at t = 3
    changed, _ = compute_gae(rewards, values, DONES, LAST_VALUES, GAMMA, 0.9)
    torch.testing.assert_close(changed[:2, 0], base[:2, 0])  # env 0, t <= 1
    torch.testing.assert_close(changed[:3, 1], base[:3, 1])  # env 1, t <= 2
    assert not torch.allclose(changed[3], base[3])


# --------------------------------------------------------------------------- general lambda = 0 / 1
def _random_rollout(seed: int, T: int = 7, N: int = 3):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g)
    values = torch.randn(T, N, generator=g)
    dones = (torch.rand(T, N, generator=g) < 0.3).float()
    last_values = torch.randn(N, generator=g)
    return rewards, values, dones, last_values


def _discounted_returns(rewards, dones, last_values, gamma) -> np.ndarray:
    """Reference: G_t = r_t + gamma * G_{t+1}, restarting at episode ends, bootstrapped with V(s_T)."""
    r, d = rewards.numpy().astype(np.float64), dones.numpy()
    T, N = r.shape
    out = np.zeros((T, N))
    for n in range(N):
        g = float(last_values[n])
        for t in reversed(range(T)):
            g = r[t, n] + gamma * g * (1.0 - d[t, n])
            out[t, n] = g
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_gae_lambda0_is_one_step_td_error(seed: int, gamma: float) -> None:
    rewards, values, dones, last_values = _random_rollout(seed)
    next_values = torch.cat([values[1:], last_values[None]], dim=0)
    td = rewards + gamma * next_values * (1.0 - dones) - values
    advantages, returns = compute_gae(rewards, values, dones, last_values, gamma, 0.0)
    torch.testing.assert_close(advantages, td)
    torch.testing.assert_close(returns, td + values)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_gae_lambda1_is_discounted_return_minus_value(seed: int, gamma: float) -> None:
    rewards, values, dones, last_values = _random_rollout(seed)
    expected = _discounted_returns(rewards, dones, last_values, gamma)
    advantages, returns = compute_gae(rewards, values, dones, last_values, gamma, 1.0)
    np.testing.assert_allclose(advantages.numpy(), expected - values.numpy(), atol=1e-5)
    np.testing.assert_allclose(returns.numpy(), expected, atol=1e-5)


# --------------------------------------------------------------------------- through PPO itself
def _scripted_ppo() -> PPO:
    """A PPO whose critic is exactly V(s) = s for one-dimensional observations."""
    spec = EnvSpec("scripted", num_obs=1, num_actions=2, is_discrete=True, num_envs=2)
    agent = PPO(
        spec, seed=0, preset=None, num_steps_per_env=4, gamma=GAMMA, lam=0.5,
        critic_hidden=(), normalize_observations=False, normalize_advantage=False,
    )
    critic = agent.actor_critic.critic  # critic_hidden=() -> a single Linear(1, 1)
    assert len(critic) == 1
    with torch.no_grad():
        critic[0].weight.fill_(1.0)
        critic[0].bias.zero_()
    return agent


def test_ppo_time_out_in_the_middle_of_a_rollout() -> None:
    """process_env_step adds gamma * V(final_obs) to the truncated step; GAE then stops at the boundary."""
    agent = _scripted_ppo()
    no = torch.tensor([False, False])
    # (obs seen by act, raw reward, terminated, truncated, obs returned by step, final_obs)
    script = [
        ([1.0, 2.0], [1.0, 0.0], no, no, [2.0, 4.0], [2.0, 4.0]),
        # env 0 terminates; its returned obs (3) is already the first obs of its next episode.
        ([2.0, 4.0], [2.0, 1.0], torch.tensor([True, False]), no, [3.0, 6.0], [99.0, 6.0]),
        # env 1 is cut by the time limit in state 8; step returns its new first obs (1).
        ([3.0, 6.0], [0.0, 1.0], no, torch.tensor([False, True]), [4.0, 1.0], [4.0, 8.0]),
        ([4.0, 1.0], [1.0, 2.0], no, no, [2.0, 2.0], [2.0, 2.0]),
    ]
    with torch.inference_mode():
        for obs, rew, term, trunc, next_obs, final_obs in script:
            agent.act(torch.tensor(obs)[:, None])
            extras = {"time_outs": trunc, "final_obs": torch.tensor(final_obs)[:, None]}
            agent.process_env_step(torch.tensor(next_obs)[:, None], torch.tensor(rew), term, trunc, extras)
        agent.compute_returns(torch.tensor([2.0, 2.0])[:, None])

    st = agent.storage
    torch.testing.assert_close(st.values, VALUES)
    # Only env 1 at t = 2 changed: 1 + 0.5 * V(final_obs = 8) = 5. The terminated step of
    # env 0 gets no bootstrap (its final_obs 99 would have added 49.5).
    torch.testing.assert_close(st.rewards, REWARDS)
    torch.testing.assert_close(st.dones, DONES)
    torch.testing.assert_close(st.advantages, torch.tensor(ADV_LAM_HALF), rtol=0, atol=1e-6)
    torch.testing.assert_close(st.returns, torch.tensor(ADV_LAM_HALF) + VALUES, rtol=0, atol=1e-6)
    # Without the bootstrap env 1's advantage at t = 2 would be 1 - 6 = -5 instead of -1.
    assert st.advantages[2, 1].item() == pytest.approx(-1.0)
    assert agent.global_step == 4 * 2


def test_ppo_rejects_gae_fn_with_wrong_shape() -> None:
    agent = _scripted_ppo()
    agent.gae_fn = lambda r, v, d, lv, g, lam: (r.sum(0), r.sum(0))  # (N,) instead of (T, N)
    with torch.inference_mode():
        for _ in range(4):
            agent.act(torch.ones(2, 1))
            z = torch.zeros(2, dtype=torch.bool)
            agent.process_env_step(torch.ones(2, 1), torch.ones(2), z, z, {"time_outs": z})
        with pytest.raises(ValueError, match=r"gae_fn must return .*shape \(4, 2\)"):
            agent.compute_returns(torch.ones(2, 1))


def test_ppo_calls_bootstrap_fn_with_the_step_and_its_critic() -> None:
    """The lab hook gets the step as the env returned it and PPO's critic; what it returns is stored."""
    agent = _scripted_ppo()
    seen = {}

    def bootstrap(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
        seen.update(next_obs=next_obs.clone(), final_obs=final_obs.clone(), v=value_fn(final_obs), gamma=gamma)
        return rewards + 10.0, torch.ones_like(rewards)

    agent.bootstrap_fn = bootstrap
    with torch.inference_mode():
        agent.act(torch.tensor([[1.0], [2.0]]))
        trunc = torch.tensor([False, True])
        agent.process_env_step(torch.tensor([[3.0], [5.0]]), torch.tensor([1.0, 2.0]), torch.zeros(2, dtype=torch.bool),
                               trunc, {"time_outs": trunc, "final_obs": torch.tensor([[3.0], [8.0]])})
    torch.testing.assert_close(seen["next_obs"], torch.tensor([[3.0], [5.0]]))
    torch.testing.assert_close(seen["v"], torch.tensor([3.0, 8.0]))   # V(s) = s through the normalizer
    assert seen["gamma"] == GAMMA
    torch.testing.assert_close(agent.storage.rewards[0], torch.tensor([11.0, 12.0]))
    torch.testing.assert_close(agent.storage.dones[0], torch.ones(2))


def test_ppo_rejects_bootstrap_fn_with_wrong_shape() -> None:
    agent = _scripted_ppo()
    agent.bootstrap_fn = lambda r, term, to, nxt, fin, v, g: (r[:1], (term | to).float())
    z = torch.zeros(2, dtype=torch.bool)
    with torch.inference_mode(), pytest.raises(ValueError, match=r"bootstrap_fn must return .*shape \(2,\)"):
        agent.act(torch.ones(2, 1))
        agent.process_env_step(torch.ones(2, 1), torch.ones(2), z, z, {"time_outs": z})


def test_more_minibatches_than_transitions_is_a_clear_error(tiny_ppo) -> None:
    # 2 envs x 16 steps = 32 transitions cannot be split into 64 minibatches (they would be empty
    # and the losses NaN).
    agent = tiny_ppo("CartPole-v1", num_envs=2, num_mini_batches=64)
    with pytest.raises(ValueError, match=r"num_mini_batches=64 is more than the rollout's 32 transitions"):
        agent.learn(64, eval_episodes=0, progress=False)
