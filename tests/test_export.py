"""Exported TorchScript policies and saved agents act exactly like the live policy."""

from __future__ import annotations

import pytest
import torch

from rlcourse.algos import PPO
from rlcourse.export import export_torchscript, load_policy


def _observations(env, n: int = 64) -> torch.Tensor:
    """Real observations from a short random walk, plus a few far outside the training range."""
    obs, _ = env.reset(seed=123)
    rows = [obs]
    g = torch.Generator().manual_seed(0)
    while sum(r.shape[0] for r in rows) < n:
        if env.is_discrete:
            actions = torch.randint(env.num_actions, (env.num_envs,), generator=g)
        else:
            actions = torch.randn(env.num_envs, env.num_actions, generator=g)
        obs, *_ = env.step(actions)
        rows.append(obs)
    rows.append(10.0 * torch.randn(4, env.num_obs, generator=g))  # exercises normalizer clipping / action bounds
    return torch.cat(rows)


@pytest.fixture(params=["CartPole-v1", "Pendulum-v1"])
def trained(request, tiny_ppo, iterate) -> PPO:
    """A tiny PPO after two updates: non-trivial weights and normalizer statistics."""
    agent = tiny_ppo(request.param, num_envs=2)
    iterate(agent, agent.env, 2)
    assert agent.obs_normalizer.count.item() > 0
    return agent


def test_torchscript_matches_live_policy(trained: PPO, tmp_path) -> None:
    path = export_torchscript(trained, tmp_path / "policy.pt")
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]  # no temporary file left behind
    policy = load_policy(path)
    assert isinstance(policy, torch.jit.ScriptModule)

    obs = _observations(trained.env)
    expected = trained.predict(obs)
    got = policy(obs)
    if trained.spec.is_discrete:
        assert got.dtype == torch.long and got.shape == (obs.shape[0],)
        assert torch.equal(got, expected)
        assert got.unique().numel() == 2, "a test batch where the policy always picks one action proves little"
    else:
        assert got.shape == (obs.shape[0], 1)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        assert got.abs().max().item() <= 2.0  # Pendulum's torque bound is built into the export


def test_torchscript_carries_the_normalizer(trained: PPO, tmp_path) -> None:
    """Changing the live normalizer after export must not change the exported file's actions."""
    obs = _observations(trained.env)
    policy = load_policy(export_torchscript(trained, tmp_path / "policy.pt"))
    before = policy(obs)
    trained.obs_normalizer.update(100.0 + torch.randn(1000, trained.spec.num_obs))
    torch.testing.assert_close(policy(obs), before, rtol=0, atol=0)
    assert not torch.equal(trained.predict(obs), before)


def test_load_reproduces_predictions(trained: PPO, tmp_path) -> None:
    path = tmp_path / "agent.pt"
    trained.save(path)
    loaded = PPO.load(path)  # no env: enough to predict
    obs = _observations(trained.env)
    torch.testing.assert_close(loaded.predict(obs), trained.predict(obs), rtol=0, atol=0)
    assert loaded.global_step == trained.global_step and loaded.iteration == 2
    assert loaded.cfg == trained.cfg
    with pytest.raises(RuntimeError, match="set_env"):
        loaded.learn(100)


def test_load_with_mismatched_env_is_rejected(trained: PPO, make_env, tmp_path) -> None:
    path = tmp_path / "agent.pt"
    trained.save(path)
    other = "Pendulum-v1" if trained.spec.is_discrete else "CartPole-v1"
    with pytest.raises(ValueError, match="other spaces"):
        PPO.load(path, env=make_env(other))


@pytest.mark.slow
def test_run_directory_policy_matches_its_last_checkpoint(cartpole_run) -> None:
    """`rlcourse train` wrote policy.pt from the same weights as its final checkpoint."""
    from rlcourse import envs
    from rlcourse.runner import latest_checkpoint

    run_dir, _ = cartpole_run
    agent = PPO.load(latest_checkpoint(run_dir))
    env = envs.make("CartPole-v1", num_envs=4, seed=7)
    obs = _observations(env)
    env.close()
    assert torch.equal(load_policy(run_dir / "policy.pt")(obs), agent.predict(obs))


def test_action_bounds_live_on_the_networks_device() -> None:
    # A policy trained on a GPU must not mix its outputs with CPU bound tensors; "meta" stands
    # in for another device on a CPU-only machine.
    import numpy as np
    from torch import nn

    from rlcourse.models.policy import InferencePolicy

    net = nn.Linear(3, 2).to("meta")
    policy = InferencePolicy(net, low=np.array([-2.0, -1.0]), high=np.array([2.0, 1.0]))
    assert policy.low.device.type == "meta" and policy.high.device.type == "meta"
    cpu = InferencePolicy(nn.Linear(3, 2), low=np.array([-2.0, -1.0]), high=np.array([2.0, 1.0]), squash=True)
    assert torch.equal(cpu(torch.zeros(1, 3)).abs() <= torch.tensor([2.0, 1.0]), torch.ones(1, 2, dtype=torch.bool))
