"""SAC: the soft target, the tanh log-probability correction, the temperature, bounds, determinism."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform

from rlcourse.algos import SAC
from rlcourse.algos.sac import sac_critic_target, squashed_gaussian_log_prob, temperature_loss
from rlcourse.export import export_torchscript, load_policy

TINY_SAC = {
    "actor_hidden": (16, 16),
    "critic_hidden": (16, 16),
    "batch_size": 8,
    "buffer_size": 500,
    "learning_starts": 16,
}


def test_critic_target_with_entropy_term_by_hand() -> None:
    # gamma = 0.9, alpha = 0.2. Rows: running, time-out (done = 0: bootstraps), terminal.
    # row 0: min(3, 4) - 0.2 * (-1.0) = 3.2         -> y = 1 + 0.9 * 3.2 = 3.88
    # row 1: min(5, 1) - 0.2 * 0.5    = 0.9         -> y = 2 + 0.9 * 0.9 = 2.81
    # row 2: terminal                               -> y = -1
    y = sac_critic_target(
        rewards=torch.tensor([1.0, 2.0, -1.0]),
        next_q1=torch.tensor([3.0, 5.0, 9.0]),
        next_q2=torch.tensor([4.0, 1.0, 9.0]),
        next_log_prob=torch.tensor([-1.0, 0.5, 0.0]),
        dones=torch.tensor([0.0, 0.0, 1.0]),
        gamma=0.9,
        alpha=0.2,
    )
    torch.testing.assert_close(y, torch.tensor([3.88, 2.81, -1.0]))


def test_tanh_log_prob_by_hand() -> None:
    # u = 0.5, mean 0, std 1, one action dimension:
    #   log N(0.5; 0, 1) = -0.5 * log(2 pi) - 0.5^2 / 2 = -0.918939 - 0.125 = -1.043939
    #   tanh(0.5) = 0.462117;  1 - 0.462117^2 = 0.786448;  log(0.786448) = -0.240229
    #   log pi(a) = -1.043939 - (-0.240229) = -0.803710
    # u = 0 in a second dimension adds log N(0) - log(1 - 0) = -0.918939.
    u = torch.tensor([[0.5, 0.0]])
    lp = squashed_gaussian_log_prob(u, torch.zeros(1, 2), torch.zeros(1, 2))
    torch.testing.assert_close(lp, torch.tensor([-0.803710 - 0.918939]), atol=1e-5, rtol=0)


def test_tanh_log_prob_matches_torch_change_of_variables() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 3, generator=g)
    log_std = torch.randn(64, 3, generator=g) * 0.5
    u = mean + log_std.exp() * torch.randn(64, 3, generator=g)
    base = Normal(mean, log_std.exp())
    # log pi(tanh u) = log N(u) - log |d tanh / du|, with torch's own Jacobian of TanhTransform.
    reference = (base.log_prob(u) - TanhTransform().log_abs_det_jacobian(u, torch.tanh(u))).sum(-1)
    torch.testing.assert_close(squashed_gaussian_log_prob(u, mean, log_std), reference)


def test_tanh_log_prob_is_finite_where_the_naive_formula_is_not() -> None:
    # For u = 20, tanh(u) rounds to 1.0 in float32 and log(1 - tanh^2) = -inf. The exact value:
    #   log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) ~ log 4 - 2u = 1.386294 - 40 = -38.613706
    u = torch.tensor([[20.0]])
    naive = torch.log(1 - torch.tanh(u) ** 2)
    assert torch.isinf(naive).all()
    lp = squashed_gaussian_log_prob(u, torch.zeros(1, 1), torch.zeros(1, 1))
    expected = -0.5 * math.log(2 * math.pi) - 20.0**2 / 2 + 38.613706  # log N(20) - log|det J|
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, torch.tensor([expected]))


@pytest.mark.parametrize(
    "log_prob, expected_loss, grad_sign",
    [
        # entropy -log pi = [1, 3], mean 2 > target -1: too random, alpha must go DOWN.
        # loss = -mean(log(0.5) * ([-1, -3] + (-1))) = -(-0.693147 * -3) = -2.079442; dL/dlog_alpha = +3
        ([-1.0, -3.0], -2.079442, +1),
        # entropy [-2, -4], mean -3 < target -1: too deterministic, alpha must go UP.
        # loss = -mean(log(0.5) * ([2, 4] - 1)) = -(-0.693147 * 2) = 1.386294;  dL/dlog_alpha = -2
        ([2.0, 4.0], 1.386294, -1),
    ],
)
def test_temperature_loss_value_and_gradient_sign(log_prob: list[float], expected_loss: float, grad_sign: int) -> None:
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    lp = torch.tensor(log_prob, requires_grad=True)
    loss = temperature_loss(log_alpha, lp, target_entropy=-1.0)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, abs=1e-5)
    assert math.copysign(1, log_alpha.grad.item()) == grad_sign
    assert abs(log_alpha.grad.item()) == pytest.approx(3.0 if grad_sign > 0 else 2.0)
    assert lp.grad is None or torch.all(lp.grad == 0)  # the policy is not trained by this loss


def test_actor_sample_matches_its_log_prob(make_env) -> None:
    agent = SAC(make_env("Pendulum-v1", num_envs=1), seed=0, preset=None, **TINY_SAC)
    torch.manual_seed(0)
    obs = torch.randn(256, 3)
    actions, log_prob = agent.actor.sample(obs)
    assert actions.abs().max() < 1.0 and log_prob.shape == (256,)
    mean, log_std = agent.actor(obs)
    # Recover u = atanh(a) and check the same density through torch's TransformedDistribution.
    dist = torch.distributions.TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])
    ref = dist.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(log_prob, ref, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("learning_starts", [0, 10_000])
def test_actions_within_bounds(make_env, learning_starts: int) -> None:
    agent = SAC(make_env("Pendulum-v1", num_envs=4), seed=0, preset=None, **{**TINY_SAC, "learning_starts": learning_starts})
    with torch.inference_mode():
        actions = torch.cat([agent.act(torch.randn(4, 3) * 10) for _ in range(50)])
    assert actions.min() >= -2.0 and actions.max() <= 2.0
    assert actions.std() > 0.1  # it explores


def test_temperature_is_learned_only_when_autotuned(make_env, iterate) -> None:
    for autotune in (True, False):
        env = make_env("Pendulum-v1", num_envs=2, seed=0)
        agent = SAC(env, seed=0, preset=None, **{**TINY_SAC, "autotune_alpha": autotune, "init_alpha": 0.5})
        rows = iterate(agent, env, 12)
        assert agent.target_entropy == -1.0  # -|A| for Pendulum's one action
        if autotune:
            assert agent.alpha != pytest.approx(0.5) and "losses/alpha_loss" in rows[-1]
        else:
            assert agent.alpha == pytest.approx(0.5) and "losses/alpha_loss" not in rows[-1]


def test_same_seed_same_losses(make_env, iterate) -> None:
    runs = []
    for seed in (0, 0, 1):
        env = make_env("Pendulum-v1", num_envs=2, seed=seed)
        agent = SAC(env, seed=seed, preset=None, **TINY_SAC)
        runs.append([(r["losses/critic_loss"], r["losses/actor_loss"]) for r in iterate(agent, env, 12)[8:]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_export_is_tanh_of_the_mean(make_env, tmp_path) -> None:
    agent = SAC(make_env("Pendulum-v1", num_envs=1), seed=0, preset=None, **TINY_SAC)
    obs = torch.randn(16, 3)
    expected = 2.0 * torch.tanh(agent.actor(obs)[0])  # deterministic action, mapped onto [-2, 2]
    torch.testing.assert_close(agent.predict(obs), expected)
    policy = load_policy(export_torchscript(agent, tmp_path / "policy.pt"))
    torch.testing.assert_close(policy(obs), expected)


def test_rejects_discrete_actions_and_bad_target_entropy(make_env) -> None:
    with pytest.raises(ValueError, match="continuous"):
        SAC(make_env("CartPole-v1", num_envs=1), preset=None)
    with pytest.raises(ValueError, match="target_entropy"):
        SAC(make_env("Pendulum-v1", num_envs=1), preset=None, target_entropy="auto")


def test_save_load_and_exact_resume(make_env, iterate, tmp_path) -> None:
    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = SAC(env, seed=0, preset=None, **TINY_SAC)
    iterate(agent, env, 10)
    agent.save(tmp_path / "sac.pt")
    loaded = SAC.load(tmp_path / "sac.pt", env=make_env("Pendulum-v1", num_envs=2, seed=0))
    assert loaded.alpha == agent.alpha
    assert loaded.update() == agent.update()


@pytest.mark.slow  # a CLI training run and an eval run: two interpreter start-ups
def test_cli_train_and_eval_round_trip(run_cli, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["train", "sac", "--env", "Pendulum-v1", "--num-envs", "2", "--total-steps", "300", "--run-dir", str(run_dir),
         "--eval-episodes", "1", "--no-progress", "--set", "actor_hidden=[16]", "--set", "critic_hidden=[16]",
         "--set", "learning_starts=100", "--set", "batch_size=16"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["algo"] == "sac" and metrics["total_steps"] == 300
    proc = run_cli(["eval", str(run_dir), "--episodes", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["algo"] == "sac"
