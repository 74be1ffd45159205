"""Lab 5 (SAC) hidden checks, in both modes (in-process, and graded: cases written, the sandbox
half run, records reloaded as tensors, judged): the reference passes, every wrong implementation
a student is likely to write is rejected with a message that names the mistake and shows no
expected numbers, and the training check re-evaluates the recorded policy against the pinned
pass mark. (The full nbgrader round trip of the lab is in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
import math
import re
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

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab5_sac"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- wrong student code
def critic_loss_parts(batch, next_actions, next_log_prob, critics, critic_targets, gamma, alpha, *, mask=None,
                      pick=torch.min, entropy=-1.0, target_net=None, target_actions=None, no_grad=True):
    """A student's critic loss, written out; the keyword arguments are the slips students make."""
    net = critic_targets if target_net is None else target_net
    a_next = next_actions if target_actions is None else target_actions
    with torch.no_grad() if no_grad else torch.enable_grad():
        q1_next, q2_next = net(batch.next_obs, a_next)
        soft = pick(q1_next, q2_next) + entropy * alpha * next_log_prob
        stop = batch.dones if mask is None else mask
        y = batch.rewards + gamma * (1 - stop) * soft
    q1, q2 = critics(batch.obs, batch.actions)
    return F.mse_loss(q1, y) + F.mse_loss(q2, y)


def critic_time_outs_terminal(batch, *args):
    # The pipeline's wrong_critic_loss student: a time-out stops the bootstrap like a fall.
    return critic_loss_parts(batch, *args, mask=torch.clamp(batch.dones + batch.time_outs, max=1.0))


def critic_no_dones(batch, *args):
    return critic_loss_parts(batch, *args, mask=torch.zeros_like(batch.dones))


def critic_max(*args):
    return critic_loss_parts(*args, pick=torch.max)


def critic_mean_of_targets(*args):
    return critic_loss_parts(*args, pick=lambda a, b: 0.5 * (a + b))


def critic_no_entropy(*args):
    return critic_loss_parts(*args, entropy=0.0)


def critic_entropy_sign(*args):
    return critic_loss_parts(*args, entropy=+1.0)


def critic_online_target(batch, na, nlp, critics, critic_targets, gamma, alpha):
    return critic_loss_parts(batch, na, nlp, critics, critic_targets, gamma, alpha, target_net=critics)


def critic_stored_actions(batch, *args):
    return critic_loss_parts(batch, *args, target_actions=batch.actions)


def critic_target_with_gradient(*args):
    return critic_loss_parts(*args, no_grad=False)


def critic_first_only(batch, na, nlp, critics, critic_targets, gamma, alpha):
    with torch.no_grad():
        q1n, q2n = critic_targets(batch.next_obs, na)
        y = batch.rewards + gamma * (1 - batch.dones) * (torch.min(q1n, q2n) - alpha * nlp)
    return F.mse_loss(critics(batch.obs, batch.actions)[0], y)


def critic_min_regressed(batch, na, nlp, critics, critic_targets, gamma, alpha):
    with torch.no_grad():
        q1n, q2n = critic_targets(batch.next_obs, na)
        y = batch.rewards + gamma * (1 - batch.dones) * (torch.min(q1n, q2n) - alpha * nlp)
    return F.mse_loss(critics(batch.obs, batch.actions).min(dim=0).values, y)


def critic_mean_of_losses(*args):
    return 0.5 * reference.sac_critic_loss(*args)


def critic_no_gamma(batch, na, nlp, critics, critic_targets, gamma, alpha):
    return critic_loss_parts(batch, na, nlp, critics, critic_targets, 1.0, alpha)


def critic_per_critic_targets(batch, na, nlp, critics, critic_targets, gamma, alpha):
    """Each critic regressed on its own target critic's value: no clipped double-Q at all."""
    with torch.no_grad():
        q_next = critic_targets(batch.next_obs, na) - alpha * nlp
        y = batch.rewards + gamma * (1 - batch.dones) * q_next   # (2, B)
    return F.mse_loss(critics(batch.obs, batch.actions), y) * 2


def critic_detached(*args):
    return reference.sac_critic_loss(*args).detach().requires_grad_(True)


def critic_in_place(batch, *args):
    out = reference.sac_critic_loss(batch, *args)
    batch.rewards.zero_()
    return out


def critic_float_alpha_only(*args):
    if isinstance(args[-1], torch.Tensor):
        raise TypeError("alpha must be a float")
    return reference.sac_critic_loss(*args)


def critic_with_huber(batch, na, nlp, critics, critic_targets, gamma, alpha):
    with torch.no_grad():
        q1n, q2n = critic_targets(batch.next_obs, na)
        y = batch.rewards + gamma * (1 - batch.dones) * (torch.min(q1n, q2n) - alpha * nlp)
    q1, q2 = critics(batch.obs, batch.actions)
    return F.smooth_l1_loss(q1, y) + F.smooth_l1_loss(q2, y)


def critic_written_out(batch, next_actions, next_log_prob, critics, critic_targets, gamma, alpha):
    """Correct: the target detached instead of no_grad, the squared errors written out."""
    q1_next, q2_next = critic_targets(batch.next_obs, next_actions)
    y = (batch.rewards + gamma * (1.0 - batch.dones) * (torch.min(q1_next, q2_next) - alpha * next_log_prob)).detach()
    q = critics(batch.obs, batch.actions)
    return ((q - y) ** 2).mean(dim=1).sum()


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


def actor_parts(obs, actions, log_prob, critics, log_alpha, target_entropy, *, alpha_detached=True,
                log_prob_detached_in_temperature=True, actions_detached=False, log_prob_detached_in_actor=False,
                pick=torch.min, sign=1.0, entropy=True, temperature_alpha=False, swap=False):
    """A student's actor and temperature losses, written out; the keyword arguments are the slips."""
    alpha = log_alpha.detach().exp() if alpha_detached else log_alpha.exp()
    q1, q2 = critics(obs, actions.detach() if actions_detached else actions)
    lp_actor = log_prob.detach() if log_prob_detached_in_actor else log_prob
    actor_loss = sign * ((alpha * lp_actor if entropy else 0.0) - pick(q1, q2)).mean()
    lp_temperature = log_prob.detach() if log_prob_detached_in_temperature else log_prob
    weight = log_alpha.exp() if temperature_alpha else log_alpha
    temperature_loss = -(weight * (lp_temperature + target_entropy)).mean()
    return (temperature_loss, actor_loss) if swap else (actor_loss, temperature_loss)


def actor_alpha_not_detached(*args):
    # The pipeline's wrong_actor_loss student: alpha = log_alpha.exp() in the actor's loss.
    return actor_parts(*args, alpha_detached=False)


def actor_temperature_not_detached(*args):
    return actor_parts(*args, log_prob_detached_in_temperature=False)


def actor_actions_detached(*args):
    return actor_parts(*args, actions_detached=True)


def actor_log_prob_detached(*args):
    return actor_parts(*args, log_prob_detached_in_actor=True)


def actor_first_critic(*args):
    return actor_parts(*args, pick=lambda a, b: a)


def actor_max(*args):
    return actor_parts(*args, pick=torch.max)


def actor_no_entropy(*args):
    return actor_parts(*args, entropy=False)


def actor_sign(*args):
    return actor_parts(*args, sign=-1.0)


def actor_temperature_alpha_form(*args):
    return actor_parts(*args, temperature_alpha=True)


def actor_swapped(*args):
    return actor_parts(*args, swap=True)


def actor_temperature_sign(*args):
    actor_loss, temperature_loss = actor_parts(*args)
    return actor_loss, -temperature_loss


def actor_log_alpha_detached(obs, actions, log_prob, critics, log_alpha, target_entropy):
    return actor_parts(obs, actions, log_prob, critics, log_alpha.detach(), target_entropy)


def actor_not_averaged(obs, actions, log_prob, critics, log_alpha, target_entropy):
    q1, q2 = critics(obs, actions)
    return (log_alpha.detach().exp() * log_prob - torch.min(q1, q2),
            -(log_alpha * (log_prob.detach() + target_entropy)).mean())


def actor_weighs_with_log_alpha(obs, actions, log_prob, critics, log_alpha, target_entropy):
    actor_loss, temperature_loss = actor_parts(obs, actions, log_prob, critics, log_alpha, target_entropy)
    q1, q2 = critics(obs, actions)
    return (log_alpha.detach() * log_prob - torch.min(q1, q2)).mean(), temperature_loss


def actor_with_stack(obs, actions, log_prob, critics, log_alpha, target_entropy):
    """Correct: min over the stacked critics, alpha from a detached exp, the losses built inline."""
    alpha = torch.exp(log_alpha).detach()
    q_pi = torch.amin(critics(obs, actions), dim=0)
    return (alpha * log_prob - q_pi).mean(), (-log_alpha * (log_prob + target_entropy).detach()).mean()


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


def log_prob_wrong_gradient(u, m, ls):
    """The right values, but log_std's gradient is stopped."""
    return reference.squashed_gaussian_log_prob(u, m, ls.detach())


def polyak_other_error(target, source, tau):
    raise RuntimeError("the networks do not match")


# --------------------------------------------------------------------------- critics' loss
def _critic_args(case: dict[str, Any]) -> tuple[Any, ...]:
    """The reference's arguments for a case (the networks built from its weights)."""
    from rlcourse.storage.replay import ReplayBatch

    batch = ReplayBatch(**{k: case[k] for k in checks.BATCH_FIELDS})
    return (batch, case["next_actions"], case["next_log_prob"], checks.critic_module(case["sizes"], case["critics"]),
            checks.critic_module(case["sizes"], case["critic_targets"]), case["gamma"], case["alpha"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference.sac_critic_loss, critic_written_out], ids=lambda f: f.__name__)
def test_critic_loss_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_critic_loss, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (critic_time_outs_terminal, "time-outs are treated as terminal"),
        (critic_no_dones, r"terminal transitions \(batch.dones = 1\) bootstrap"),
        (critic_max, "larger of the two target critics"),
        (critic_mean_of_targets, "mean of the two target critics"),
        (critic_no_entropy, "entropy term is missing from the target"),
        (critic_entropy_sign, "entropy term of the target has the wrong sign"),
        (critic_online_target, "must use the target critics"),
        (critic_stored_actions, r"at \(s', a\) with the stored action"),
        (critic_target_with_gradient, r"gradient flows into the target: compute it under torch.no_grad\(\)"),
        (critic_first_only, "only the first critic is trained"),
        (critic_min_regressed, r"regresses min\(Q1, Q2\)\(s, a\)"),
        (critic_mean_of_losses, "half of the reference"),
        (critic_no_gamma, "discounted by gamma"),
        (critic_per_critic_targets, "the loss value differs from the reference"),
        (critic_with_huber, "the loss value differs from the reference"),
        (critic_detached, "not differentiable with respect to the critics"),
        (critic_in_place, "modified batch.rewards in place"),
        (lambda *args: 0.0, "must return a torch tensor"),
        (lambda *args: reference.sac_critic_loss(*args).expand(3), r"returned shape \(3,\)"),
    ],
)
def test_critic_loss_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                         tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_critic_loss, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict), verdict
    # The message ends up in the student's feedback: no expected numbers in it.
    expected = reference.sac_critic_loss(*_critic_args(checks.critic_loss_cases()[0])).detach()
    assert not shows_number(verdict, round(float(expected), 4)) and f"{float(expected):.3f}" not in verdict


def test_critic_loss_cases_hold_every_kind_of_transition() -> None:
    cases = checks.critic_loss_cases(seed=4)
    assert any(isinstance(c["alpha"], torch.Tensor) for c in cases) and any(isinstance(c["alpha"], float) for c in cases)
    for case in cases:
        dones, time_outs = case["dones"].bool(), case["time_outs"].bool()
        assert dones.any() and time_outs.any() and (~dones & ~time_outs).any() and not (dones & time_outs).any()
        # The two target critics disagree on which one is smaller: min is not max on some row.
        q1, q2 = checks.critic_module(case["sizes"], case["critic_targets"])(case["next_obs"], case["next_actions"])
        assert (q1 < q2).any() and (q2 < q1).any()


@pytest.mark.parametrize("mode", MODES)
def test_critic_loss_check_passes_alpha_as_a_tensor(mode: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError):  # the student's error surfaces in their cell, in both modes
        check_verdict(checks.check_critic_loss, critic_float_alpha_only, mode=mode, folder=tmp_path)


def test_critic_loss_variants_default_to_the_reference() -> None:
    for case in checks.critic_loss_cases(seed=2):
        batch, na, nlp, critics, targets, gamma, alpha = _critic_args(case)
        want = reference.sac_critic_loss(batch, na, nlp, critics, targets, gamma, alpha)
        torch.testing.assert_close(checks._critic_loss_variant(case, critics, targets), want)


def _tensors(case: dict[str, Any]) -> list[torch.Tensor]:
    """Every tensor of a case, nested state dicts included, flattened."""
    return [t.flatten() for v in case.values()
            for t in (_tensors(v) if isinstance(v, dict) else [v] if isinstance(v, torch.Tensor) else [])]


@pytest.mark.parametrize("cases", [checks.critic_loss_cases, checks.log_prob_cases, checks.actor_cases,
                                   checks.polyak_cases], ids=lambda f: f.__name__)
def test_fresh_cases_depend_on_the_seed(cases: Callable[..., list[dict[str, Any]]]) -> None:
    fixed = len(cases())
    a, b, again = cases(1)[fixed:], cases(2)[fixed:], cases(1)[fixed:]
    assert a and b
    first = lambda cs: torch.cat(_tensors(cs[0]))  # noqa: E731
    assert not (first(a).shape == first(b).shape and torch.equal(first(a), first(b)))
    assert torch.equal(first(a), first(again))  # same seed, same cases


def critic_lookup_table(batch, *args):
    """Answers hard-coded for the fixed cases only (what a student could copy from a run of the
    reference): the fresh random cases of a graded run expose it."""
    for case in checks.critic_loss_cases():
        if batch.rewards.shape == case["rewards"].shape and torch.equal(batch.rewards, case["rewards"]):
            return reference.sac_critic_loss(batch, *args)
    return critic_no_entropy(batch, *args)


def test_graded_cases_catch_answers_hard_coded_for_the_fixed_cases(tmp_path: Path) -> None:
    for mode in MODES:  # in one process too: the fixed seed's random cases follow the fixed ones
        verdict = check_verdict(checks.check_critic_loss, critic_lookup_table, mode=mode, folder=tmp_path / mode)
        assert verdict is not None and "entropy term is missing" in verdict


# --------------------------------------------------------------------------- log-probability
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference.squashed_gaussian_log_prob, log_prob_with_distributions],
                         ids=lambda f: f.__name__)
def test_log_prob_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_log_prob, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (log_prob_naive_eps, r"large \|u\|.*stable identity"),
        (log_prob_naive, r"not finite .* large \|u\|"),
        (log_prob_not_summed, "sum the log-probabilities over the action dimensions"),
        (log_prob_correction_sign, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_no_normalization, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_detached, "not differentiable"),
        (log_prob_wrong_gradient, "gradient of squashed_gaussian_log_prob with respect to log_std"),
        (lambda *args: [0.0], "must return a torch tensor"),
    ],
)
def test_log_prob_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                      tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_log_prob, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict), verdict
    case = checks.log_prob_cases()[0]
    expected = reference.squashed_gaussian_log_prob(*(case[k] for k in checks.LOG_PROB_INPUTS))
    assert not any(n in verdict for n in _numbers(expected, 3))


def test_log_prob_cases_reach_where_the_naive_formula_fails() -> None:
    cases = checks.log_prob_cases(seed=3)
    for A in {c["pre_tanh"].shape[1] for c in cases}:
        regions = {c["region"]: c["pre_tanh"] for c in cases if c["pre_tanh"].shape[1] == A}
        assert set(regions) == {"moderate", "large"}
        assert (regions["moderate"].abs() <= checks.LARGE_PRE_TANH).all() and regions["moderate"].shape[0] >= 3
        assert (regions["large"].abs() > checks.LARGE_PRE_TANH).any(dim=1).all() and regions["large"].shape[0] >= 3
        u = regions["large"]
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


# --------------------------------------------------------------------------- actor and temperature
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference.sac_actor_and_temperature_loss, actor_with_stack], ids=lambda f: f.__name__)
def test_actor_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_actor_and_temperature_loss, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (actor_alpha_not_detached, "the actor's loss sends gradient into log_alpha"),
        (actor_temperature_not_detached, r"the temperature's loss sends gradients into log pi\(a\|s\)"),
        (actor_actions_detached, "sends no gradient through the actions"),
        (actor_log_prob_detached, r"sends no gradient into log pi\(a\|s\)"),
        (actor_first_critic, "uses the first critic only"),
        (actor_max, "uses the larger of the two critics"),
        (actor_no_entropy, "entropy term is missing from the actor's loss"),
        (actor_sign, "the actor's loss has the wrong sign"),
        (actor_weighs_with_log_alpha, "weighs log pi.* with log_alpha"),
        (actor_temperature_alpha_form, "multiplies log_alpha, not alpha"),
        (actor_temperature_sign, "check the sign and what multiplies what"),
        (actor_log_alpha_detached, "temperature's loss is not differentiable with respect to log_alpha"),
        (actor_swapped, "in the wrong order"),
        (actor_not_averaged, r"two scalar \(0-dim\) torch tensors"),
        (lambda *args: reference.sac_actor_and_temperature_loss(*args)[0], r"return \(actor_loss, temperature_loss\)"),
        (lambda *args: (0.0, 0.0), r"two scalar \(0-dim\) torch tensors"),
    ],
)
def test_actor_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_actor_and_temperature_loss, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict), verdict
    case = checks.actor_cases()[0]
    expected = reference.sac_actor_and_temperature_loss(
        case["obs"], case["actions"], case["log_prob"], checks.critic_module(case["sizes"], case["critics"]),
        case["log_alpha"], case["target_entropy"])
    assert not any(shows_number(verdict, round(float(x.detach()), 4)) for x in expected)


def test_actor_variants_default_to_the_reference() -> None:
    for case in checks.actor_cases(seed=2):
        critics = checks.critic_module(case["sizes"], case["critics"])
        inputs = {k: case[k] for k in checks.ACTOR_INPUTS}
        want, _ = reference.sac_actor_and_temperature_loss(case["obs"], case["actions"], case["log_prob"], critics,
                                                           case["log_alpha"], case["target_entropy"])
        torch.testing.assert_close(checks._actor_loss_variant(case, critics, inputs), want)


def test_reference_actor_loss_gives_each_parameter_only_its_own_gradient() -> None:
    """One backward of the sum, as SAC takes it: log_alpha gets exactly the temperature loss's
    gradient and the actions and log-probabilities exactly the actor loss's (hand-computed)."""
    critics = checks.critic_module([1, 1, 4], {k: torch.zeros_like(v) for k, v in
                                              checks.critic_module([1, 1, 4]).state_dict().items()})
    log_prob = torch.tensor([0.5, -1.5], requires_grad=True)
    log_alpha = torch.tensor(math.log(0.2), requires_grad=True)
    actor_loss, temperature_loss = reference.sac_actor_and_temperature_loss(
        torch.zeros(2, 1), torch.zeros(2, 1, requires_grad=True), log_prob, critics, log_alpha, -1.0)
    (actor_loss + temperature_loss).backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([0.1, 0.1]))       # alpha / B, nothing from the temperature
    torch.testing.assert_close(log_alpha.grad, torch.tensor(1.5))             # -mean(log pi + target) = -(-1.5)


# --------------------------------------------------------------------------- Polyak
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference_common.polyak_update, polyak_data_attribute], ids=lambda f: f.__name__)
def test_polyak_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_polyak, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (polyak_without_no_grad, r"torch\.no_grad"),
        (polyak_swapped_tau, r"theta' <- tau \* theta \+ \(1 - tau\) \* theta'"),
        (polyak_rebinds, "left the target unchanged"),
        (polyak_replaces_parameters, "replaced the target's parameters"),
        (polyak_moves_source, "changed the source network"),
        (polyak_other_error, "raised an error .*: the networks do not match"),
    ],
)
def test_polyak_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_polyak, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict), verdict


def test_polyak_cases_leave_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    case = checks.polyak_cases(seed=1)[-1]
    checks.call_polyak(case, reference_common.polyak_update)
    assert torch.equal(torch.get_rng_state(), state)
    assert case["arch"] == "critics" and 0 < case["tau"] < 1


@pytest.mark.parametrize(
    "outputs, message",
    [
        ({}, "replaced the target's parameters"),
        ({"replaced": False, "history": True}, "carry autograd history"),
        ({"replaced": False, "history": False, "source": "<OrderedDict>"}, "names or shapes of the source"),
        ({"replaced": False, "history": False, "source": None, "target": None}, "names or shapes of the source"),
    ],
)
def test_polyak_judge_fails_clearly_on_garbage(outputs: dict[str, Any], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.judge_polyak(checks.polyak_cases()[0], outputs)


def test_polyak_judge_refuses_a_target_of_other_shapes() -> None:
    case = checks.polyak_cases()[0]
    outputs = checks.call_polyak(case, reference_common.polyak_update)
    outputs["target"] = {k: v[:1] for k, v in outputs["target"].items()}
    with pytest.raises(AssertionError, match="names or shapes of the target"):
        checks.judge_polyak(case, outputs)


# --------------------------------------------------------------------------- the SAC hooks
TINY = {"actor_hidden": (16, 16), "critic_hidden": (16, 16), "batch_size": 8, "buffer_size": 500,
        "learning_starts": 16}


def test_sac_uses_every_hook(make_env) -> None:
    calls = dict.fromkeys(("critic_loss", "log_prob", "actor_loss", "polyak"), 0)

    def count(name: str, fn: Callable) -> Callable:
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = SAC(env, seed=0, preset=None, critic_loss_fn=count("critic_loss", reference.sac_critic_loss),
                log_prob_fn=count("log_prob", reference.squashed_gaussian_log_prob),
                actor_loss_fn=count("actor_loss", reference.sac_actor_and_temperature_loss),
                polyak_fn=count("polyak", reference_common.polyak_update), **TINY)
    agent.learn(40, eval_episodes=0, progress=False)
    # 20 batched steps of 2 envs; updates start once 16 steps are stored: 13 gradient steps,
    # each with one log-prob call on the batched pass that samples the next actions (critics'
    # target) and the fresh actions (actor loss) together.
    assert calls == {"critic_loss": 13, "log_prob": 13, "actor_loss": 13, "polyak": 13}
    # The critics are trainable again after the actor's loss froze them.
    assert all(p.requires_grad for p in agent.critics.parameters())


def test_sac_default_hooks_are_the_reference_functions(make_env) -> None:
    """The defaults, the reference functions passed as hooks (the wrapped critic loss takes the path
    of a student's, with its extra forward pass for the log), and a correct student's own
    functions train the same agent (the first two bit for bit)."""
    def wrapped_critic_loss(*args):
        return reference.sac_critic_loss(*args)

    params = []
    for hooks in ({}, {"critic_loss_fn": wrapped_critic_loss, "log_prob_fn": reference.squashed_gaussian_log_prob,
                       "actor_loss_fn": reference.sac_actor_and_temperature_loss,
                       "polyak_fn": reference_common.polyak_update},
                  {"critic_loss_fn": critic_written_out, "actor_loss_fn": actor_with_stack}):
        env = make_env("Pendulum-v1", num_envs=2, seed=0)
        agent = SAC(env, seed=0, preset=None, **hooks, **TINY)
        agent.learn(60, eval_episodes=0, progress=False)
        params.append([p.detach().clone() for p in agent.actor.parameters()] + [agent.log_alpha.detach().clone()])
    assert all(torch.equal(a, b) for a, b in zip(params[0], params[1]))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(params[0], params[2]))


def test_the_labs_solution_trains_bit_for_bit_like_the_reference(make_env) -> None:
    """The source notebook's four solutions and the library's references give the same agent, bit
    for bit: the pins (made by running the notebook) describe the library's SAC as well."""
    import nbformat

    nb = nbformat.read(REPO / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    ns: dict[str, Any] = {"math": math, "torch": torch, "F": F, "nn": nn}   # what the setup cell imports
    for cell in nb.cells:
        if cell.metadata["nbgrader"].get("solution"):
            exec(cell.source, ns)
    solution = {"critic_loss_fn": ns["critic_loss"], "log_prob_fn": ns["squashed_gaussian_log_prob"],
                "actor_loss_fn": ns["actor_and_temperature_loss"], "polyak_fn": ns["polyak_update"]}
    params = []
    for hooks in ({}, solution):
        agent = SAC(make_env("Pendulum-v1", num_envs=2, seed=0), seed=0, preset=None, **hooks, **TINY)
        agent.learn(60, eval_episodes=0, progress=False)
        params.append([p.detach().clone() for m in (agent.actor, agent.critics) for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


@pytest.mark.parametrize(
    "hooks, message",
    [
        ({"critic_loss_fn": critic_detached}, "critic_loss_fn must return a 0-dim tensor that is differentiable"),
        ({"actor_loss_fn": lambda *args: reference.sac_actor_and_temperature_loss(*args)[0]},
         r"actor_loss_fn must return \(actor_loss, temperature_loss\)"),
    ],
)
def test_sac_refuses_hooks_that_return_the_wrong_thing(hooks: dict[str, Callable], message: str, make_env) -> None:
    agent = SAC(make_env("Pendulum-v1", num_envs=2, seed=0), seed=0, preset=None, **hooks, **TINY)
    with pytest.raises(ValueError, match=message):
        agent.learn(40, eval_episodes=0, progress=False)
    assert all(p.requires_grad for p in agent.critics.parameters())


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
@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy (the agents below really have the pinned config)."""
    return serve_pins(monkeypatch, tmp_path, LAB, dict(PINS), config_dict=None)


def _graded_cell(**hyperparameters: Any) -> dict[str, Any]:
    """What the graded cell leaves behind, without the training: an untrained agent with the
    pinned hyperparameters (unless overridden), its evaluation and that of random actions."""
    import rlcourse

    env = rlcourse.envs.make("Pendulum-v1", num_envs=5, seed=0)
    agent = SAC(env, seed=0, **hyperparameters)
    random_env = rlcourse.envs.make("Pendulum-v1", num_envs=5, seed=0)
    return {"agent": agent, "result": rlcourse.evaluate(agent, env, episodes=10),
            "random_result": rlcourse.evaluate(random_policy(random_env.single_action_space, seed=0), random_env,
                                               episodes=10)}


@pytest.fixture(scope="module")
def untrained() -> dict[str, Any]:
    """One untrained graded cell for the tests that only read it (building and evaluating one takes a second)."""
    return _graded_cell()


@pytest.mark.parametrize("mode", MODES)
def test_training_check_re_evaluates_the_recorded_policy(pinned: dict[str, Any], untrained: dict[str, Any],
                                                         mode: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ns = {**untrained, "result": dict(untrained["result"])}
    verdict = check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "a")
    assert verdict is not None and "below the pinned pass mark" in verdict
    assert not shows_number(verdict, pinned["threshold"])
    # What the notebook printed does not count: a forged result dict changes nothing.
    ns["result"]["episode_return_mean"] = -100.0
    assert "below the pinned pass mark" in check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "b")
    # The same policy passes a pass mark it reaches (the grader's own evaluation decides).
    serve_pins(monkeypatch, tmp_path / "pins", LAB, {**pinned, "threshold": -5000.0}, config_dict=None)
    assert check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "c") is None


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any], tmp_path: Path) -> None:
    ns = _graded_cell(tau=1.0)
    with pytest.raises(AssertionError, match="tau: pinned .* now 1.0.*rlcourse pin lab5_sac"):
        checks.check_training(ns)
    verdict = check_verdict(checks.check_training, ns, mode="graded", folder=tmp_path)
    assert verdict is not None and re.search("tau: pinned .* now 1.0.*rlcourse pin lab5_sac", verdict)


def test_training_check_refuses_networks_that_do_not_fit(pinned: dict[str, Any], untrained: dict[str, Any]) -> None:
    record = checks.record_policy(untrained)
    assert set(record["modules"]) >= {"actor", "critics", "critic_targets"}
    bad = {**record, "modules": {**record["modules"], "actor": {"weight": torch.zeros(3, 3)}}}
    with pytest.raises(AssertionError, match="network 'actor' does not fit"):
        checks.judge_training(bad, seed=1)
    missing = {**record, "modules": {k: v for k, v in record["modules"].items() if k != "actor"}}
    with pytest.raises(AssertionError, match="network 'actor' was not recorded"):
        checks.judge_training(missing, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained SAC agent"):
        checks.judge_training({"measured": record["measured"], "algo": "ddpg", "modules": record["modules"]}, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained SAC agent"):
        checks.judge_training({}, seed=1)


def test_training_check_refuses_a_policy_that_is_not_a_number(pinned: dict[str, Any], untrained: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    record = checks.record_policy(untrained)
    actor = {k: torch.full_like(v, float("nan")) for k, v in record["modules"]["actor"].items()}
    serve_pins(monkeypatch, tmp_path, LAB, {**pinned, "threshold": -5000.0}, config_dict=None)
    with pytest.raises(AssertionError, match="NaN or inf actions: the training diverged"):
        checks.judge_training({**record, "modules": {**record["modules"], "actor": actor}}, seed=1)


@pytest.mark.parametrize("mode", MODES)
def test_training_check_needs_the_trained_agent(pinned: dict[str, Any], mode: str, tmp_path: Path) -> None:
    # While grading, recording fails in the notebook itself (the sandbox half): the reason is the
    # cell's error, and the grader finds no record.
    try:
        verdict = check_verdict(checks.check_training, {"result": {"episode_return_mean": 0.0}}, mode=mode,
                                folder=tmp_path)
    except AssertionError as exc:
        verdict = str(exc)
    assert verdict is not None and "must leave the trained `agent`" in verdict


def test_measure_reads_the_random_baseline(pinned: dict[str, Any], untrained: dict[str, Any]) -> None:
    measured = checks.measure(untrained)
    assert measured["return"] == untrained["result"]["episode_return_mean"]
    assert measured["random_return"] == untrained["random_result"]["episode_return_mean"]
    ns = {k: v for k, v in untrained.items() if k != "random_result"}
    with pytest.raises(AssertionError, match="random_result"):
        checks.measure(ns)


# --------------------------------------------------------------------------- withheld references
def _withheld(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("withheld during grading")


@pytest.fixture
def references_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    """The references of WITHHELD raise, as in the grading view: their code objects are replaced,
    so default arguments bound to them raise too (``polyak_update``: the function under its
    ``torch.no_grad`` wrapper)."""
    import importlib

    for module, names in checks.WITHHELD.items():
        for name in names:
            fn = getattr(importlib.import_module(module), name)
            monkeypatch.setattr(getattr(fn, "__wrapped__", fn), "__code__", _withheld.__code__)
    with pytest.raises(RuntimeError, match="withheld"):
        reference_common.polyak_update(nn.Linear(1, 1), nn.Linear(1, 1), 0.5)


def student_critic_loss(batch, next_actions, next_log_prob, critics, critic_targets, gamma, alpha):
    with torch.no_grad():
        q1_next, q2_next = critic_targets(batch.next_obs, next_actions)
        y = batch.rewards + gamma * (1 - batch.dones) * (torch.min(q1_next, q2_next) - alpha * next_log_prob)
    q1, q2 = critics(batch.obs, batch.actions)
    return ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()


def test_graded_cell_needs_none_of_the_withheld_references(references_withheld: None, make_env,
                                                           tmp_path: Path) -> None:
    """The graded cell, cut small: SAC with the student's four functions trains, evaluates and is
    recorded without calling a withheld reference; the hidden function checks run in the sandbox."""
    import rlcourse

    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = SAC(env, seed=0, preset=None, critic_loss_fn=student_critic_loss, log_prob_fn=log_prob_with_distributions,
                actor_loss_fn=actor_with_stack, polyak_fn=polyak_data_attribute, **TINY)
    agent.learn(40, eval_episodes=0, progress=False)
    result = rlcourse.evaluate(agent, env, episodes=2)
    random_result = rlcourse.evaluate(random_policy(env.single_action_space, seed=0), env, episodes=2)
    record = checks.record_policy({"agent": agent, "result": result, "random_result": random_result})
    assert record["algo"] == "sac" and record["modules"]["actor"]
    for check, fn in ((checks.CRITIC_LOSS, student_critic_loss), (checks.LOG_PROB, log_prob_with_distributions),
                      (checks.ACTOR, actor_with_stack), (checks.POLYAK, polyak_data_attribute)):
        for case in check.cases(7):
            check.call(case, fn)


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
