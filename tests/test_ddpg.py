"""DDPG: Polyak averaging, the critic target, the actor's gradient direction, bounds, determinism."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rlcourse.algos import DDPG, polyak_update
from rlcourse.algos.ddpg import ddpg_actor_loss, ddpg_critic_target
from rlcourse.export import export_torchscript, load_policy

TINY_DDPG = {
    "actor_hidden": (16, 16),
    "critic_hidden": (16, 16),
    "batch_size": 8,
    "buffer_size": 500,
    "learning_starts": 16,
}


def test_polyak_update_by_hand() -> None:
    target, source = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([[1.0, -2.0]]))
        target.bias.fill_(4.0)
        source.weight.copy_(torch.tensor([[3.0, 2.0]]))
        source.bias.fill_(0.0)
    polyak_update(target, source, tau=0.25)
    # (1 - 0.25) * 1 + 0.25 * 3 = 1.5;  0.75 * -2 + 0.25 * 2 = -1.0;  0.75 * 4 + 0.25 * 0 = 3.0
    torch.testing.assert_close(target.weight, torch.tensor([[1.5, -1.0]]))
    torch.testing.assert_close(target.bias, torch.tensor([3.0]))
    torch.testing.assert_close(source.weight, torch.tensor([[3.0, 2.0]]))  # the source is untouched
    polyak_update(target, source, tau=1.0)  # a hard update copies
    torch.testing.assert_close(target.weight, source.weight)
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, source, tau=1.5)


def test_critic_target_by_hand() -> None:
    # gamma = 0.9; transition 1 is a time-out (done = 0, bootstraps), transition 2 is terminal.
    # y0 = 1 + 0.9 * 10 = 10;  y1 = 0 + 0.9 * -5 = -4.5;  y2 = 2 (no bootstrap)
    y = ddpg_critic_target(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([10.0, -5.0, 7.0]),
                           torch.tensor([0.0, 0.0, 1.0]), gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([10.0, -4.5, 2.0]))


def test_actor_loss_is_gradient_ascent_on_q() -> None:
    # Q(s, a) = 2 a for a batch of 4: the loss -mean(Q) has dLoss/da = -2 / 4 = -0.5, so a
    # gradient-*descent* step on the loss moves every action up, where Q is larger.
    actions = torch.zeros(4, requires_grad=True)
    loss = ddpg_actor_loss(2.0 * actions)
    loss.backward()
    torch.testing.assert_close(actions.grad, torch.full((4,), -0.5))
    assert loss.item() == 0.0


def test_one_actor_step_raises_q_of_the_policy(make_env) -> None:
    # With the critic held fixed, an actor step on ddpg_actor_loss must increase Q(s, mu(s)).
    agent = DDPG(make_env("Pendulum-v1", num_envs=1), seed=0, preset=None, **TINY_DDPG)
    obs = torch.randn(64, 3)
    q_before = agent.critic(obs, torch.tanh(agent.actor(obs)))[0].mean()
    optimizer = torch.optim.SGD(agent.actor.parameters(), lr=1e-2)
    loss = ddpg_actor_loss(agent.critic(obs, torch.tanh(agent.actor(obs)))[0])
    loss.backward()
    optimizer.step()
    q_after = agent.critic(obs, torch.tanh(agent.actor(obs)))[0].mean()
    assert q_after > q_before


@pytest.mark.parametrize("noise, learning_starts", [(0.1, 0), (50.0, 0), (0.1, 10_000)])
def test_actions_always_within_bounds(make_env, noise: float, learning_starts: int) -> None:
    env = make_env("Pendulum-v1", num_envs=4)
    agent = DDPG(env, seed=0, preset=None, **{**TINY_DDPG, "exploration_noise": noise, "learning_starts": learning_starts})
    with torch.inference_mode():
        actions = torch.cat([agent.act(torch.randn(4, 3) * 10) for _ in range(50)])
    assert actions.shape == (200, 1)
    assert actions.min() >= -2.0 and actions.max() <= 2.0
    # The buffer keeps the [-1, 1] version of the action the env received.
    torch.testing.assert_close(agent._actions * 2.0, actions[-4:])
    if noise == 50.0:  # huge noise saturates at the bounds instead of leaving them
        assert (actions.abs() == 2.0).float().mean() > 0.5


def test_same_seed_same_losses(make_env, iterate) -> None:
    runs = []
    for seed in (0, 0, 1):
        env = make_env("Pendulum-v1", num_envs=2, seed=seed)
        agent = DDPG(env, seed=seed, preset=None, **TINY_DDPG)
        runs.append([(r["losses/critic_loss"], r["losses/actor_loss"]) for r in iterate(agent, env, 12)[8:]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_policy_delay_and_target_networks(make_env, iterate) -> None:
    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = DDPG(env, seed=0, preset=None, **{**TINY_DDPG, "policy_delay": 2, "tau": 0.5})
    iterate(agent, env, 7)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    row = iterate(agent, env, 1)[0]  # first learning update: gradient step 1, no actor step yet
    assert "losses/actor_loss" not in row
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target_before, agent.critic_target.parameters()))
    row = iterate(agent, env, 1)[0]  # gradient step 2: actor and targets move
    assert "losses/actor_loss" in row
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(target_before, agent.critic_target.parameters()))


def test_export_matches_the_deterministic_actor(make_env, tmp_path) -> None:
    agent = DDPG(make_env("Pendulum-v1", num_envs=1), seed=0, preset=None, **TINY_DDPG)
    obs = torch.randn(16, 3)
    expected = 2.0 * torch.tanh(agent.actor(obs))  # [-1, 1] mapped onto [-2, 2]
    torch.testing.assert_close(agent.predict(obs), expected)
    policy = load_policy(export_torchscript(agent, tmp_path / "policy.pt"))
    torch.testing.assert_close(policy(obs), expected)


def test_rejects_discrete_actions(make_env) -> None:
    with pytest.raises(ValueError, match="continuous"):
        DDPG(make_env("CartPole-v1", num_envs=1), preset=None)


def test_save_load_and_exact_resume(make_env, iterate, tmp_path) -> None:
    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = DDPG(env, seed=0, preset=None, **TINY_DDPG)
    iterate(agent, env, 10)
    agent.save(tmp_path / "ddpg.pt")
    loaded = DDPG.load(tmp_path / "ddpg.pt", env=make_env("Pendulum-v1", num_envs=2, seed=0))
    assert loaded.update() == agent.update()


@pytest.mark.slow  # a CLI training run and an eval run: two interpreter start-ups
def test_cli_train_and_eval_round_trip(run_cli, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["train", "ddpg", "--env", "Pendulum-v1", "--total-steps", "300", "--run-dir", str(run_dir),
         "--eval-episodes", "1", "--no-progress", "--set", "actor_hidden=[16]", "--set", "critic_hidden=[16]",
         "--set", "learning_starts=100", "--set", "batch_size=16"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["algo"] == "ddpg" and metrics["total_steps"] == 300
    assert (run_dir / "policy.pt").exists()
    proc = run_cli(["eval", str(run_dir), "--episodes", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # Pendulum's reward is in [-16.3, 0] per step: a 200-step episode scores in [-3300, 0].
    assert -3300 < json.loads(proc.stdout)["episode_return_mean"] <= 0
