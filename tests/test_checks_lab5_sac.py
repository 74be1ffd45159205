"""Lab 5 (SAC) hidden checks, in-process: the reference passes, every wrong implementation a
student is likely to write is rejected with a message that names the mistake and shows no
expected numbers, and the training check compares with the pinned pass mark. (The full
nbgrader round trip of the lab is in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlcourse.algos import SAC
from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.evaluation import random_policy
from rlcourse.grading import lab5_sac as checks

from grading_helpers import serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab5_sac"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- wrong student code
def target_no_dones(r, q1, q2, lp, d, gamma, alpha):
    # The pipeline's wrong_target student: forgets (1 - dones).
    return r + gamma * (torch.min(q1, q2) - alpha * lp)


def target_max(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (torch.max(q1, q2) - alpha * lp)


def target_no_entropy(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * torch.min(q1, q2)


def target_entropy_sign(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (torch.min(q1, q2) + alpha * lp)


def target_mean_of_critics(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (0.5 * (q1 + q2) - alpha * lp)


def target_float_alpha_only(r, q1, q2, lp, d, gamma, alpha):
    if isinstance(alpha, torch.Tensor):
        raise TypeError("alpha must be a float")
    return reference.sac_critic_target(r, q1, q2, lp, d, gamma, alpha)


def _gaussian(u, m, ls):
    return torch.distributions.Normal(m, ls.exp()).log_prob(u)


def log_prob_naive_eps(u, m, ls):
    # The pipeline's wrong_log_prob student: the naive formula with an epsilon.
    return (_gaussian(u, m, ls) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)


def log_prob_naive(u, m, ls):
    return (_gaussian(u, m, ls) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)


def log_prob_not_summed(u, m, ls):
    return _gaussian(u, m, ls) - 2 * (math.log(2) - u - F.softplus(-2 * u))


def log_prob_correction_sign(u, m, ls):
    return (_gaussian(u, m, ls) + 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def log_prob_no_normalization(u, m, ls):
    return (-((u - m) ** 2) / (2 * torch.exp(2 * ls)) - 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def log_prob_detached(u, m, ls):
    return reference.squashed_gaussian_log_prob(u.detach(), m.detach(), ls.detach())


def log_prob_with_distributions(u, m, ls):
    """Correct: torch.distributions for the Gaussian, the stable identity for the correction."""
    return (_gaussian(u, m, ls) - 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def temperature_alpha_form(la, lp, te):
    # The pipeline's wrong_temperature student: CleanRL's alpha instead of log_alpha.
    return -(la.exp() * (lp.detach() + te)).mean()


def temperature_not_detached(la, lp, te):
    return -(la * (lp + te)).mean()


def temperature_sign(la, lp, te):
    return (la * (lp.detach() + te)).mean()


def temperature_alpha_detached(la, lp, te):
    return -(la.detach() * (lp.detach() + te)).mean()


def polyak_without_no_grad(target, source, tau):
    # The pipeline's wrong_polyak student.
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1 - tau).add_(tau * s)


def polyak_swapped_tau(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.copy_((1 - tau) * s + tau * t)


def polyak_rebinds(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t = tau * s + (1 - tau) * t  # noqa: F841 (the bug)


def polyak_replaces_parameters(target, source, tau):
    with torch.no_grad():
        for module_t, module_s in zip(target.modules(), source.modules()):
            for name, p in list(module_t.named_parameters(recurse=False)):
                setattr(module_t, name, nn.Parameter(tau * getattr(module_s, name) + (1 - tau) * p))


def polyak_moves_source(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)
            s.lerp_(t, tau)


def polyak_data_attribute(target, source, tau):
    """Correct (old style): ``.data`` bypasses autograd."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.data.copy_(tau * s.data + (1 - tau) * t.data)


# --------------------------------------------------------------------------- critic target
def test_critic_target_check_accepts_the_reference() -> None:
    checks.check_critic_target(reference.sac_critic_target)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (target_no_dones, r"terminal transitions \(done = 1\) only"),
        (target_max, "take the minimum"),
        (target_no_entropy, "entropy term is missing"),
        (target_entropy_sign, "wrong sign"),
        (target_mean_of_critics, r"non-terminal transitions \(done = 0\)"),
    ],
)
def test_critic_target_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_critic_target(wrong)
    expected = reference.sac_critic_target(**checks.critic_target_cases()[0])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_critic_target_check_passes_alpha_as_a_tensor() -> None:
    assert any(isinstance(c["alpha"], torch.Tensor) for c in checks.critic_target_cases())
    with pytest.raises(TypeError):
        checks.check_critic_target(target_float_alpha_only)


# --------------------------------------------------------------------------- log-probability
@pytest.mark.parametrize("fn", [reference.squashed_gaussian_log_prob, log_prob_with_distributions],
                         ids=lambda f: f.__name__)
def test_log_prob_check_accepts_correct_implementations(fn: Callable) -> None:
    checks.check_log_prob(fn)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (log_prob_naive_eps, r"large \|u\|.*stable identity"),
        (log_prob_naive, r"not finite .* large \|u\|"),
        (log_prob_not_summed, "sum the log-probabilities over the action dimensions"),
        (log_prob_correction_sign, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_no_normalization, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_detached, "not differentiable"),
    ],
)
def test_log_prob_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_log_prob(wrong)
    expected = reference.squashed_gaussian_log_prob(**checks.log_prob_cases()[0])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_log_prob_cases_reach_where_the_naive_formula_fails() -> None:
    for case in checks.log_prob_cases():
        u = case["pre_tanh"]
        moderate = (u.abs() <= checks.LARGE_PRE_TANH).all(dim=1)
        assert moderate.sum() >= 5 and (~moderate).sum() >= 5
        assert (1 - torch.tanh(u) ** 2 == 0).any(), "some |u| must be large enough for the naive formula to give -inf"


def test_reference_log_prob_matches_torch_distributions() -> None:
    """The reference is the library's formula: compare with torch's TanhTransform where it is accurate."""
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) * 0.3
    u = mean + log_std.exp() * torch.randn(50, 2, generator=g)
    want = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(reference.squashed_gaussian_log_prob(u, mean, log_std), want, atol=1e-3, rtol=1e-4)


# --------------------------------------------------------------------------- temperature
def test_temperature_check_accepts_the_reference() -> None:
    checks.check_temperature_loss(reference.temperature_loss)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (temperature_alpha_form, "multiplies log_alpha, not alpha"),
        (temperature_not_detached, "sends gradients into log_prob"),
        (temperature_sign, "check the sign"),
        (temperature_alpha_detached, "not differentiable with respect to log_alpha"),
    ],
)
def test_temperature_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_temperature_loss(wrong)
    case = checks.temperature_cases()[0]
    expected = reference.temperature_loss(case["log_alpha"], case["log_prob"], case["target_entropy"])
    assert not shows_number(str(info.value), round(float(expected), 4))


# --------------------------------------------------------------------------- Polyak
@pytest.mark.parametrize("fn", [reference_common.polyak_update, polyak_data_attribute], ids=lambda f: f.__name__)
def test_polyak_check_accepts_correct_implementations(fn: Callable) -> None:
    checks.check_polyak(fn)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (polyak_without_no_grad, r"torch\.no_grad"),
        (polyak_swapped_tau, r"theta' <- tau \* theta \+ \(1 - tau\) \* theta'"),
        (polyak_rebinds, "left the target unchanged"),
        (polyak_replaces_parameters, "replaced the target's parameters"),
        (polyak_moves_source, "changed the source network"),
    ],
)
def test_polyak_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.check_polyak(wrong)


# --------------------------------------------------------------------------- the SAC hooks
TINY = {"actor_hidden": (16, 16), "critic_hidden": (16, 16), "batch_size": 8, "buffer_size": 500,
        "learning_starts": 16}


def test_sac_uses_every_hook(make_env) -> None:
    calls = dict.fromkeys(("target", "log_prob", "temperature", "polyak"), 0)

    def count(name: str, fn: Callable) -> Callable:
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = SAC(env, seed=0, preset=None, target_fn=count("target", reference.sac_critic_target),
                log_prob_fn=count("log_prob", reference.squashed_gaussian_log_prob),
                temperature_loss_fn=count("temperature", reference.temperature_loss),
                polyak_fn=count("polyak", reference_common.polyak_update), **TINY)
    agent.learn(40, eval_episodes=0, progress=False)
    # 20 batched steps of 2 envs; updates start once 16 steps are stored: 13 gradient steps,
    # each with one log-prob call on the batched pass that samples the next actions (target)
    # and the fresh actions (actor loss) together.
    assert calls == {"target": 13, "log_prob": 13, "temperature": 13, "polyak": 13}


def test_sac_default_hooks_are_the_reference_functions(make_env) -> None:
    params = []
    for hooks in ({}, {"target_fn": reference.sac_critic_target, "log_prob_fn": reference.squashed_gaussian_log_prob,
                       "temperature_loss_fn": reference.temperature_loss, "polyak_fn": reference_common.polyak_update}):
        env = make_env("Pendulum-v1", num_envs=2, seed=0)
        agent = SAC(env, seed=0, preset=None, **hooks, **TINY)
        agent.learn(60, eval_episodes=0, progress=False)
        params.append([p.detach().clone() for p in agent.actor.parameters()] + [agent.log_alpha.detach().clone()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


# --------------------------------------------------------------------------- the pass mark's baseline
def test_random_policy_draws_uniform_actions_from_its_own_generator(make_env) -> None:
    space = make_env("Pendulum-v1", num_envs=1, seed=0).single_action_space
    obs = torch.zeros(4000, 3)
    state = torch.get_rng_state()
    actions = random_policy(space, seed=3)(obs)
    assert torch.equal(torch.get_rng_state(), state), "the global generator must not move"
    assert actions.shape == (4000, 1) and actions.dtype == torch.float32
    assert float(actions.min()) >= -2.0 and float(actions.max()) <= 2.0
    assert abs(float(actions.mean())) < 0.1 and float(actions.std()) > 1.0  # uniform on [-2, 2]: std 1.15
    assert torch.equal(random_policy(space, seed=3)(obs), actions)
    assert not torch.equal(random_policy(space, seed=4)(obs), actions)


# --------------------------------------------------------------------------- training check and pins
def _namespace(value: float, episodes: int = 10, random_return: float = -1100.0) -> dict[str, Any]:
    """What the graded cell leaves behind: the evaluation ``result``, the trained ``agent`` and the
    evaluation of random actions ``random_result``."""
    class Agent:
        cfg = None

    return {"result": {"episode_return_mean": value, "episode_return_std": 0.0, "episodes": episodes},
            "random_result": {"episode_return_mean": random_return, "episode_return_std": 0.0, "episodes": episodes},
            "agent": Agent()}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy; the agent's config check sees the pinned config."""
    return serve_pins(monkeypatch, tmp_path, LAB, PINS)


@pytest.mark.parametrize("offset, passes", [(0.0, True), (100.0, True), (-1.0, False), (-300.0, False)])
def test_training_check_compares_with_the_pinned_pass_mark(pinned: dict[str, Any], offset: float,
                                                           passes: bool) -> None:
    ns = _namespace(pinned["threshold"] + offset)
    if passes:
        checks.check_training(ns)
    else:
        with pytest.raises(AssertionError, match="below the pinned pass mark") as info:
            checks.check_training(ns)
        assert not shows_number(str(info.value), pinned["threshold"])


def test_training_check_refuses_a_return_that_is_not_a_number(pinned: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="below the pinned pass mark"):
        checks.check_training(_namespace(float("nan")))


def test_training_check_refuses_fewer_evaluation_episodes(pinned: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="fewer episodes"):
        checks.check_training(_namespace(-100.0, episodes=5))


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    edited = {**PINS["agent_config"], "tau": 1.0}
    monkeypatch.setattr("rlcourse.grading.common.config_dict", lambda cfg: edited)
    with pytest.raises(RuntimeError, match="tau: pinned .* now 1.0.*rlcourse pin lab5_sac"):
        checks.check_training(_namespace(-100.0))


def test_measure_reads_the_random_baseline(pinned: dict[str, Any]) -> None:
    measured = checks.measure(_namespace(-150.0, random_return=-1200.0))
    assert measured["return"] == -150.0 and measured["random_return"] == -1200.0
    ns = _namespace(-150.0)
    del ns["random_result"]
    with pytest.raises(AssertionError, match="random_result"):
        checks.measure(ns)


def _runs(returns: list[float], random_returns: list[float]) -> list[dict[str, Any]]:
    return [{"seed": s, "measured": {"return": r, "random_return": b}}
            for s, (r, b) in enumerate(zip(returns, random_returns))]


def test_pass_mark_is_halfway_from_the_best_random_seed_to_the_worst_reference() -> None:
    mark = checks.pass_mark(_runs([-110.0, -160.0, -140.0], [-1250.0, -1100.0, -1200.0]))
    assert mark["threshold"] == round(-1100.0 + 0.5 * (-160.0 + 1100.0))
    assert mark["random_max"] == -1100.0 and mark["metric"] == "return"
    with pytest.raises(RuntimeError, match="not pinning"):
        checks.pass_mark(_runs([-110.0, -900.0], [-1100.0, -1200.0]))


def test_pins_record_how_they_were_made() -> None:
    assert len(PINS["reference_seeds"]) >= 5 and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    returns = [run["measured"]["return"] for run in PINS["runs"]]
    random_returns = [run["measured"]["random_return"] for run in PINS["runs"]]
    # The pass mark sits between random actions (about -1100 to -1250) and the worst reference seed.
    assert max(random_returns) + 200 < PINS["threshold"] < min(returns) - 100
    assert PINS["threshold"] == checks.pass_mark(PINS["runs"])["threshold"]
    assert PINS["agent_config"]["learning_starts"] > 0
    assert {"torch", "gymnasium", "numpy", "python", "cpu"} <= set(PINS["versions"])
