"""Same seed -> bit-identical training; another seed -> a different run."""

from __future__ import annotations

import pytest
import torch

from rlcourse.algos import PPO


def _params(agent: PPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.actor_critic.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_same_losses_and_parameters(tiny_ppo, iterate, env_id: str) -> None:
    runs = []
    for seed in (0, 0, 1):
        agent = tiny_ppo(env_id, seed=seed, num_envs=2)
        init = _params(agent)
        losses = iterate(agent, agent.env, 3)
        runs.append((init, losses, _params(agent), agent.obs_normalizer.mean.clone()))

    (init_a, losses_a, final_a, norm_a), (init_b, losses_b, final_b, norm_b), (init_c, losses_c, final_c, _) = runs
    assert _same(init_a, init_b)
    assert losses_a == losses_b  # every loss of every update, exactly
    assert _same(final_a, final_b)
    assert torch.equal(norm_a, norm_b)
    # A different seed changes the initial weights, the data and therefore the losses.
    assert not _same(init_a, init_c)
    assert losses_a[0]["losses/value_loss"] != losses_c[0]["losses/value_loss"]
    assert not _same(final_a, final_c)


def test_learn_is_deterministic(tiny_ppo) -> None:
    """The same through the Runner that `agent.learn` uses."""
    finals = []
    for seed in (3, 3, 4):
        agent = tiny_ppo("CartPole-v1", seed=seed, num_envs=2)
        agent.learn(3 * 16 * 2, eval_episodes=0, progress=False)
        assert agent.global_step == 96 and agent.iteration == 3
        finals.append(_params(agent))
    assert _same(finals[0], finals[1])
    assert not _same(finals[0], finals[2])


def test_stochastic_predict_follows_the_seed(tiny_ppo) -> None:
    obs = torch.zeros(8, 4)
    a = tiny_ppo("CartPole-v1", seed=5).predict(obs, deterministic=False)
    b = tiny_ppo("CartPole-v1", seed=5).predict(obs, deterministic=False)
    assert torch.equal(a, b)
