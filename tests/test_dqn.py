"""DQN: hand-computed targets, epsilon-greedy, target updates, determinism, save/load, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from rlcourse.algos import DQN
from rlcourse.algos.dqn import double_dqn_target, dqn_target, epsilon_greedy, huber_loss, linear_schedule, td_loss
from rlcourse.export import load_policy

TINY_DQN = {
    "hidden": (16, 16),
    "batch_size": 8,
    "buffer_size": 500,
    "learning_starts": 16,
    "gradient_steps": 2,
    "target_update_interval": 3,
    "learning_rate": 1e-3,
}

# Three transitions, gamma = 0.9:
#   0: running,             r = 1.0
#   1: time-out (truncated), r = 0.5  -> done = 0 in the buffer: it bootstraps
#   2: terminal,            r = -1.0 -> done = 1: the target is the reward alone
REWARDS = torch.tensor([1.0, 0.5, -1.0])
DONES = torch.tensor([0.0, 0.0, 1.0])
NEXT_Q_TARGET = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
NEXT_Q_ONLINE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])


def test_dqn_target_by_hand() -> None:
    # y0 = 1.0 + 0.9 * max(1, 2) = 1.0 + 1.8 = 2.8
    # y1 = 0.5 + 0.9 * max(3, 0) = 0.5 + 2.7 = 3.2   (time-out: bootstraps)
    # y2 = -1.0 + 0.9 * 0        = -1.0              (terminal: no bootstrap)
    y = dqn_target(REWARDS, NEXT_Q_TARGET, DONES, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([2.8, 3.2, -1.0]))


def test_double_dqn_target_by_hand() -> None:
    # The online net picks argmax = [0, 1, 0]; the target net evaluates those actions:
    # y0 = 1.0 + 0.9 * Q_target[0, 0] = 1.0 + 0.9 * 1 = 1.9   (plain DQN would use 2)
    # y1 = 0.5 + 0.9 * Q_target[1, 1] = 0.5 + 0.9 * 0 = 0.5   (plain DQN would use 3)
    # y2 = -1.0                                                (terminal)
    y = double_dqn_target(REWARDS, NEXT_Q_ONLINE, NEXT_Q_TARGET, DONES, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.9, 0.5, -1.0]))


def test_epsilon_greedy_is_greedy_at_zero_and_uniform_at_one() -> None:
    q = torch.tensor([[0.0, 1.0, 0.5]]).repeat(3000, 1)
    greedy = epsilon_greedy(q, 0.0, torch.Generator().manual_seed(0))
    assert greedy.dtype == torch.int64 and torch.all(greedy == 1)
    rand = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(rand, minlength=3).float() / 3000
    # Each of 3 actions ~1/3; with 3000 draws the std of a frequency is ~0.009.
    assert torch.all((counts - 1 / 3).abs() < 0.04), counts
    half = epsilon_greedy(q, 0.5, torch.Generator().manual_seed(0))
    # P(greedy) = 0.5 + 0.5 / 3 = 2/3
    assert abs((half == 1).float().mean().item() - 2 / 3) < 0.04
    again = epsilon_greedy(q, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(half, again)


@pytest.mark.parametrize(
    "t, expected",
    [(0, 1.0), (50, 0.525), (100, 0.05), (1000, 0.05)],  # 1.0 + (50 / 100) * (0.05 - 1.0) = 0.525
)
def test_linear_schedule(t: float, expected: float) -> None:
    assert linear_schedule(1.0, 0.05, 100, t) == pytest.approx(expected)


def test_epsilon_follows_the_schedule_during_training(make_env) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, **{**TINY_DQN, "exploration_fraction": 0.5, "exploration_final_eps": 0.1})
    seen = []                  # (env steps before the iteration's last act, epsilon it used)
    agent.learn(200, eval_episodes=0, progress=False,
                callback=lambda runner: seen.append((agent.global_step - 2, agent.epsilon)))
    # Decays linearly from 1.0 to 0.1 over 0.5 * 200 = 100 steps, then stays at the final value.
    assert len(seen) >= 5 and any(0.2 < eps < 0.9 for _, eps in seen)
    for step, eps in seen:
        assert eps == pytest.approx(1.0 - 0.9 * min(step / 100, 1.0)), step
    assert agent.epsilon == pytest.approx(0.1)


def test_target_network_hard_update_every_interval(make_env, iterate) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, **{**TINY_DQN, "gradient_steps": 1, "target_update_interval": 3, "tau": 1.0})
    iterate(agent, env, 7)  # 14 env steps: learning starts with the 8th update (16 steps)

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in zip(agent.q_network.parameters(), agent.q_target.parameters()))

    assert same()  # the target starts as a copy
    iterate(agent, env, 2)
    assert agent.num_updates == 2 and not same()  # online net moved, target did not
    iterate(agent, env, 1)
    assert agent.num_updates == 3 and same()  # copied on the 3rd gradient step


def test_no_learning_before_learning_starts(make_env, iterate) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, **TINY_DQN)
    before = [p.clone() for p in agent.q_network.parameters()]
    losses = iterate(agent, env, 7)  # 14 < 16 env steps
    assert all("losses/td_loss" not in row for row in losses)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.q_network.parameters()))
    losses = iterate(agent, env, 2)
    assert "losses/td_loss" in losses[-1]


@pytest.mark.parametrize("double_dqn", [True, False])
def test_same_seed_same_losses(make_env, iterate, double_dqn: bool) -> None:
    runs = []
    for seed in (0, 0, 1):
        env = make_env("CartPole-v1", num_envs=2, seed=seed)
        agent = DQN(env, seed=seed, preset=None, double_dqn=double_dqn, **TINY_DQN)
        runs.append([row["losses/td_loss"] for row in iterate(agent, env, 14)[8:]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("double_dqn", [True, False])
def test_td_loss_fn_hook_gets_the_batch_the_networks_and_the_config(make_env, iterate, double_dqn: bool) -> None:
    calls = []

    def my_td_loss(batch, q_network, target_network, gamma, delta, double):
        calls.append((batch.obs.shape, batch.time_outs.shape, gamma, delta, double))
        assert q_network is agent.q_network and target_network is agent.q_target
        return td_loss(batch, q_network, target_network, gamma, delta, double)

    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, td_loss_fn=my_td_loss, double_dqn=double_dqn, **TINY_DQN)
    iterate(agent, env, 8)
    # one update (at 16 env steps), two gradient steps
    assert calls == [(torch.Size([8, 4]), torch.Size([8]), agent.cfg.gamma, agent.cfg.huber_delta, double_dqn)] * 2


def test_rejects_a_td_loss_fn_without_gradient(make_env, iterate) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, td_loss_fn=lambda *args: td_loss(*args).detach(), **TINY_DQN)
    with pytest.raises(ValueError, match="td_loss_fn must return a 0-dim tensor"):
        iterate(agent, env, 8)


def test_td_loss_is_huber_of_the_taken_actions_against_the_no_grad_target() -> None:
    """The reference written out by hand: Q(s, a) of the taken actions, the double-DQN target
    with terminations masked (time-outs bootstrap), no gradient into either target part."""
    from rlcourse.storage.replay import ReplayBatch

    torch.manual_seed(0)
    online, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    batch = ReplayBatch(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6), torch.randn(6, 4),
                        torch.tensor([1.0, 0, 0, 0, 1, 0]), torch.tensor([0.0, 1, 0, 0, 0, 1]))
    for double in (True, False):
        loss = td_loss(batch, online, target, 0.9, 1.0, double)
        q = online(batch.obs)[torch.arange(6), batch.actions]
        picker = online if double else target
        best = picker(batch.next_obs).argmax(1)
        y = batch.rewards + 0.9 * (1 - batch.dones) * target(batch.next_obs)[torch.arange(6), best]
        assert torch.allclose(loss, torch.nn.functional.huber_loss(q, y.detach()))
        online.zero_grad(), target.zero_grad()
        loss.backward()
        assert online.weight.grad.abs().sum() > 0 and target.weight.grad is None


def test_epsilon_hook_is_used(make_env) -> None:
    calls: dict[str, int] = {"eps": 0, "loss": 0}

    def my_eps(q, eps, g):
        calls["eps"] += 1
        return epsilon_greedy(q, eps, g)

    def my_loss(batch, q_network, target_network, gamma, delta, double):
        calls["loss"] += 1
        assert delta == 1.0
        return td_loss(batch, q_network, target_network, gamma, delta, double)

    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, epsilon_fn=my_eps, td_loss_fn=my_loss, **TINY_DQN, num_steps_per_env=1)
    agent.learn(40, eval_episodes=0, progress=False)
    # 20 batched steps of 2 envs: the first 8 act uniformly at random (global_step < 16), the
    # other 12 through epsilon_fn; updates start once 16 steps are stored: 13 updates x 2 gradient steps.
    assert calls["eps"] == 12 and calls["loss"] == 26


def test_default_hooks_are_the_reference_functions(make_env) -> None:
    """Passing the reference functions explicitly trains exactly like the defaults."""
    params = []
    for hooks in ({}, {"epsilon_fn": epsilon_greedy, "td_loss_fn": td_loss}):
        env = make_env("CartPole-v1", num_envs=2, seed=0)
        agent = DQN(env, seed=0, preset=None, **hooks, **TINY_DQN, num_steps_per_env=1)
        agent.learn(60, eval_episodes=0, progress=False)
        params.append([p.detach().clone() for p in agent.q_network.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


def test_rejects_an_epsilon_fn_with_the_wrong_shape(make_env) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, epsilon_fn=lambda q, e, g: q.argmax(1, keepdim=True),
                **TINY_DQN, num_steps_per_env=1)
    with pytest.raises(ValueError, match="one action per env"):
        agent.learn(40, eval_episodes=0, progress=False)


def test_reference_huber_is_smooth_l1_at_delta_one() -> None:
    """The default DQN loss did not change when the td_loss hook was added."""
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(100, generator=g) * 3, torch.randn(100, generator=g)
    assert torch.equal(huber_loss(p, t, 1.0), torch.nn.functional.smooth_l1_loss(p, t))


def test_rejects_continuous_actions_and_bad_hyperparameters(make_env) -> None:
    with pytest.raises(ValueError, match="discrete"):
        DQN(make_env("Pendulum-v1", num_envs=1), preset=None)
    env = make_env("CartPole-v1", num_envs=1)
    with pytest.raises(ValueError, match="target_update_interval"):
        DQN(env, preset=None, target_update_interval=0)
    with pytest.raises(ValueError, match="did you mean 'learning_starts'"):
        DQN(env, preset=None, learning_start=10)


def test_save_load_and_exact_resume(make_env, iterate, tmp_path) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, **TINY_DQN)
    iterate(agent, env, 12)
    agent.save(tmp_path / "dqn.pt")
    loaded = DQN.load(tmp_path / "dqn.pt", env=make_env("CartPole-v1", num_envs=2, seed=0))
    # Networks, optimizer, replay buffer, counters and RNG are restored: the next
    # update is bit-for-bit the same.
    assert loaded.num_updates == agent.num_updates and len(loaded.buffer) == len(agent.buffer)
    assert loaded.update() == agent.update()
    obs = torch.randn(5, 4)
    assert torch.equal(loaded.predict(obs), agent.predict(obs))


def test_inference_policy_is_greedy_and_scriptable(make_env, tmp_path) -> None:
    from rlcourse.export import export_torchscript

    agent = DQN(make_env("CartPole-v1", num_envs=1), seed=0, preset=None, **TINY_DQN)
    obs = torch.randn(32, 4)
    expected = agent.q_network(obs).argmax(-1)
    assert torch.equal(agent.predict(obs), expected)
    policy = load_policy(export_torchscript(agent, tmp_path / "policy.pt"))
    assert torch.equal(policy(obs), expected)


@pytest.mark.slow  # a CLI training run and an eval run: two interpreter start-ups
def test_cli_train_and_eval_round_trip(run_cli, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["train", "dqn", "--env", "CartPole-v1", "--num-envs", "2", "--total-steps", "400", "--seed", "1",
         "--run-dir", str(run_dir), "--eval-episodes", "2", "--no-progress",
         "--set", "hidden=[16,16]", "--set", "learning_starts=100", "--set", "batch_size=16",
         "--set", "num_steps_per_env=4", "--set", "gradient_steps=2"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("run.yaml", "progress.csv", "policy.pt", "metrics.json", "learning_curve.png"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "checkpoints").glob("ckpt_*.pt"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["algo"] == "dqn" and metrics["total_steps"] == 400 and metrics["episodes"] == 2
    proc = run_cli(["eval", str(run_dir), "--episodes", "2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["algo"] == "dqn"


@pytest.mark.parametrize("algo, field", [("dqn", "double_dqn"), ("ddpg", "exploration_noise"), ("sac", "target_entropy")])
def test_train_help_lists_hyperparameters_with_descriptions(algo: str, field: str) -> None:
    from rlcourse.algos import ALGORITHMS, config_help
    from rlcourse.cli import _hyperparameter_epilog

    epilog = _hyperparameter_epilog()
    assert f"  {algo}:" in epilog
    for name, _default, text in config_help(ALGORITHMS[algo].Config):
        assert text, f"{algo}.{name} has no help text"
    text = dict((n, t) for n, _, t in config_help(ALGORITHMS[algo].Config))[field]
    assert f"{field:<24} {text}" in epilog
