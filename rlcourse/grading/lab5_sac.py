"""Hidden checks of lab 5 (SAC): the soft critic target, the tanh log-probability, the temperature
loss, the Polyak update, and the trained agent.

The hidden test cells of ``solutions/lab5_sac/lab5_sac.ipynb`` call these functions, so the
test code a student could see in a traceback is a one-line call. Every check compares the
student's function with the reference in :mod:`rlcourse.algos.sac` (and
:func:`rlcourse.algos.common.polyak_update`) in the same process on the same inputs.

Pendulum returns are negative (0 is perfect), so the pass mark is measured from what random
actions score, not from 0: the graded cell also evaluates uniformly random actions on its
evaluation episodes (``random_result``).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.grading.common import TOLERANCES, check_evaluated_return, fail, margin_pass_mark, measure_evaluated_return

LAB = "lab5_sac"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# A reference worse than this on some seed has not learned to swing up; nothing is pinned.
MAX_REFERENCE_RETURN = -500.0
# |u| above which the log-prob check counts an input as "large": there 1 - tanh(u)^2 is below
# 0.07 and loses precision in float32 (or to an epsilon added to it) as |u| grows.
LARGE_PRE_TANH = 2.0


# --------------------------------------------------------------------------- fixed inputs
def critic_target_cases() -> list[dict[str, Any]]:
    """Minibatches of 64 transitions, about a quarter terminal; alpha as a float and as a 0-dim tensor
    (SAC passes ``log_alpha.exp()``)."""
    g = torch.Generator().manual_seed(5101)
    B = 64
    rewards = torch.randn(B, generator=g)
    next_q1 = torch.randn(B, generator=g) * 3.0
    next_q2 = torch.randn(B, generator=g) * 3.0  # min(Q1, Q2) picks either critic about equally often
    next_log_prob = torch.randn(B, generator=g) - 1.0
    dones = (torch.rand(B, generator=g) < 0.25).float()
    dones[0], dones[1] = 1.0, 0.0
    return [{"rewards": rewards, "next_q1": next_q1, "next_q2": next_q2, "next_log_prob": next_log_prob,
             "dones": dones, "gamma": gamma, "alpha": alpha}
            for gamma, alpha in ((0.99, 0.2), (0.9, torch.tensor(0.05)), (0.5, 1.0))]


def log_prob_cases() -> list[dict[str, Any]]:
    """Pre-tanh samples with moderate (``|u| <= 2``) and large ``|u|`` (up to ~25), 1 to 3 action dimensions."""
    g = torch.Generator().manual_seed(5102)
    cases = []
    for B, A in ((32, 1), (32, 2), (16, 3)):
        mean = torch.randn(B, A, generator=g) * 0.7
        log_std = torch.rand(B, A, generator=g) * 2.5 - 2.0  # std in [0.14, 1.6]
        pre_tanh = mean + log_std.exp() * torch.randn(B, A, generator=g)
        # A quarter of the rows far in the tails of tanh, where 1 - tanh(u)^2 rounds to 0 in float32.
        far = torch.arange(B) % 4 == 0
        shift = (torch.rand(int(far.sum()), A, generator=g) * 15.0 + 10.0) * torch.sign(torch.randn(int(far.sum()), A, generator=g))
        mean[far] = mean[far] + shift
        pre_tanh[far] = pre_tanh[far] + shift
        cases.append({"pre_tanh": pre_tanh, "mean": mean, "log_std": log_std})
    return cases


def temperature_cases() -> list[dict[str, Any]]:
    """Batches of log-probabilities above and below the target entropy."""
    g = torch.Generator().manual_seed(5103)
    cases = []
    for log_alpha, target_entropy, shift in ((math.log(0.2), -1.0, 0.0), (math.log(1.5), -2.0, 1.5), (-3.0, 0.5, -1.0)):
        cases.append({"log_alpha": torch.tensor(log_alpha), "log_prob": torch.randn(40, generator=g) + shift,
                      "target_entropy": target_entropy})
    return cases


def polyak_modules(seed: int = 5104) -> list[tuple[nn.Module, nn.Module]]:
    """``(target, source)`` pairs: a small MLP and SAC's batched twin critics, different random weights,
    parameters that require gradients (a generic module's do)."""
    torch.manual_seed(seed)
    pairs = []
    for make in (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)),
                 lambda: reference_common.QCritics(3, 1, (8,), "relu", num_critics=2)):
        target, source = make(), make()
        with torch.no_grad():
            for p in source.parameters():
                p.add_(torch.randn_like(p))  # biases start at zero: make every entry differ
        pairs.append((target, source))
    return pairs


# --------------------------------------------------------------------------- checks
def check_critic_target(target_fn: Callable[..., Any]) -> None:
    """Compare ``target_fn`` with :func:`rlcourse.algos.sac.sac_critic_target` on :func:`critic_target_cases`."""
    tol = TOLERANCES
    for case in critic_target_cases():
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        got = target_fn(inputs["rewards"], inputs["next_q1"], inputs["next_q2"], inputs["next_log_prob"],
                        inputs["dones"], inputs["gamma"], inputs["alpha"])
        for k in ("rewards", "next_q1", "next_q2", "next_log_prob", "dones"):
            if not torch.equal(inputs[k], case[k]):
                fail(f"sac_critic_target modified its input {k!r} in place; work on new tensors")
        want = reference.sac_critic_target(**case)
        if not isinstance(got, torch.Tensor):
            fail("sac_critic_target must return a torch tensor")
        if got.shape != want.shape:
            fail(f"sac_critic_target returned shape {tuple(got.shape)}; it must be (B,) = {tuple(want.shape)}")
        got = got.detach().float()
        if torch.allclose(got, want, **tol):
            continue
        label = f"gamma={case['gamma']}, alpha={float(case['alpha'])}"
        bad = ~torch.isclose(got, want, **tol)
        terminal = case["dones"].bool()
        if bool((bad & terminal).any()) and not bool((bad & ~terminal).any()):
            fail(f"sac_critic_target differs from the reference ({label}) on terminal transitions (done = 1) only: "
                 "a terminal transition's target is its reward alone")
        c = case
        variants = {
            "the larger of the two critics is used; take the minimum (clipped double-Q)":
                c["rewards"] + c["gamma"] * (1 - c["dones"]) * (torch.max(c["next_q1"], c["next_q2"]) - c["alpha"] * c["next_log_prob"]),
            "the entropy term is missing: subtract alpha * log pi(a'|s') from min(Q1', Q2')":
                c["rewards"] + c["gamma"] * (1 - c["dones"]) * torch.min(c["next_q1"], c["next_q2"]),
            "the entropy term has the wrong sign: it is - alpha * log pi(a'|s')":
                c["rewards"] + c["gamma"] * (1 - c["dones"]) * (torch.min(c["next_q1"], c["next_q2"]) + c["alpha"] * c["next_log_prob"]),
        }
        for hint, value in variants.items():
            if torch.allclose(got, value, **tol):
                fail(f"sac_critic_target differs from the reference ({label}): {hint}")
        fail(f"sac_critic_target differs from the reference ({label}) on non-terminal transitions (done = 0)")


def check_log_prob(log_prob_fn: Callable[..., Any]) -> None:
    """Compare ``log_prob_fn`` (value and gradients) with :func:`rlcourse.algos.sac.squashed_gaussian_log_prob`."""
    tol = TOLERANCES
    for case in log_prob_cases():
        B, A = case["pre_tanh"].shape
        large = (case["pre_tanh"].abs() > LARGE_PRE_TANH).any(dim=1)
        for label, rows in (("moderate", ~large), ("large", large)):
            inputs = {k: v[rows].clone().requires_grad_(True) for k, v in case.items()}
            ref_inputs = {k: v[rows].clone().requires_grad_(True) for k, v in case.items()}
            got = log_prob_fn(inputs["pre_tanh"], inputs["mean"], inputs["log_std"])
            want = reference.squashed_gaussian_log_prob(ref_inputs["pre_tanh"], ref_inputs["mean"], ref_inputs["log_std"])
            if not isinstance(got, torch.Tensor):
                fail("squashed_gaussian_log_prob must return a torch tensor")
            if got.shape != want.shape:
                fail(f"squashed_gaussian_log_prob returned shape {tuple(got.shape)} for {A} action dimension(s); "
                     f"it must be (B,) = {tuple(want.shape)}: sum the log-probabilities over the action dimensions")
            where = f"with {A} action dimension(s), for {'|u| <= 2' if label == 'moderate' else 'large |u| (2 to 25)'}"
            if not bool(torch.isfinite(got).all()):
                fail(f"squashed_gaussian_log_prob is not finite {where}: log(1 - tanh(u)^2) must be computed "
                     "in the numerically stable form")
            if not torch.allclose(got.detach(), want.detach(), **tol):
                if label == "large":
                    fail(f"squashed_gaussian_log_prob differs from the reference {where}: in float32, 1 - tanh(u)^2 "
                         "rounds to 0 (or to a small epsilon you added) there; use the stable identity "
                         "log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))")
                fail(f"squashed_gaussian_log_prob differs from the reference {where}: check the Gaussian "
                     "log-density (its normalization) and the sign of the tanh correction")
            if not got.requires_grad:
                fail("squashed_gaussian_log_prob is not differentiable (was something detached or built with numpy?): "
                     "the actor's loss needs its gradient")
            grads = torch.autograd.grad(got.sum(), [inputs["pre_tanh"], inputs["mean"], inputs["log_std"]],
                                        allow_unused=True)
            want_grads = torch.autograd.grad(want.sum(), [ref_inputs["pre_tanh"], ref_inputs["mean"], ref_inputs["log_std"]])
            for name, grad, want_grad in zip(("pre_tanh", "mean", "log_std"), grads, want_grads):
                if grad is None:
                    grad = torch.zeros_like(want_grad)
                if not torch.allclose(grad, want_grad, **tol):
                    fail(f"the gradient of squashed_gaussian_log_prob with respect to {name} differs from the "
                         f"reference {where}")


def check_temperature_loss(loss_fn: Callable[..., Any]) -> None:
    """Compare ``loss_fn`` with :func:`rlcourse.algos.sac.temperature_loss`: value, gradient with respect
    to ``log_alpha``, and no gradient into ``log_prob``."""
    tol = TOLERANCES
    for case in temperature_cases():
        label = f"target_entropy={case['target_entropy']}"
        log_alpha = case["log_alpha"].clone().requires_grad_(True)
        log_prob = case["log_prob"].clone().requires_grad_(True)  # as in SAC: it carries the actor's graph
        loss = loss_fn(log_alpha, log_prob, case["target_entropy"])
        ref_log_alpha = case["log_alpha"].clone().requires_grad_(True)
        want = reference.temperature_loss(ref_log_alpha, case["log_prob"], case["target_entropy"])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            fail("temperature_loss must return a scalar (0-dim) torch tensor: the mean over the batch")
        if not torch.allclose(loss.detach(), want.detach(), **tol):
            alpha_form = -(case["log_alpha"].exp() * (case["log_prob"] + case["target_entropy"])).mean()
            if torch.allclose(loss.detach(), alpha_form, **tol):
                fail(f"temperature_loss differs from the reference ({label}): this lab's loss multiplies "
                     "log_alpha, not alpha = exp(log_alpha)")
            fail(f"temperature_loss differs from the reference ({label}): check the sign and what multiplies what")
        if not loss.requires_grad:
            fail("temperature_loss is not differentiable with respect to log_alpha (was log_alpha detached?)")
        grad_alpha, grad_log_prob = torch.autograd.grad(loss, [log_alpha, log_prob], allow_unused=True)
        if grad_log_prob is not None and bool((grad_log_prob != 0).any()):
            fail("temperature_loss sends gradients into log_prob: detach it, this loss trains alpha only")
        (want_grad,) = torch.autograd.grad(want, ref_log_alpha)
        if grad_alpha is None or not torch.allclose(grad_alpha, want_grad, **tol):
            fail(f"the gradient of temperature_loss with respect to log_alpha differs from the reference ({label})")


def check_polyak(polyak_fn: Callable[..., Any]) -> None:
    """Compare ``polyak_fn(target, source, tau)`` with :func:`rlcourse.algos.common.polyak_update`:
    the target's own parameter tensors updated in place, without autograd history, the source untouched."""
    tol = TOLERANCES
    for target, source in polyak_modules():
        kind = type(target).__name__
        for tau in (0.005, 0.3, 1.0, 0.0):
            params = list(target.parameters())
            before = [p.detach().clone() for p in params]
            source_before = [p.detach().clone() for p in source.parameters()]
            expected = copy.deepcopy(target)
            reference_common.polyak_update(expected, source, tau)
            try:
                polyak_fn(target, source, tau)
            except RuntimeError as exc:
                if "leaf Variable" in str(exc) or "in-place operation" in str(exc):
                    fail("polyak_update raised an autograd error on a target whose parameters require gradients: "
                         "the update must not be recorded by autograd (run it under torch.no_grad())")
                raise
            now = list(target.parameters())
            if len(now) != len(params) or any(a is not b for a, b in zip(now, params)):
                fail("polyak_update replaced the target's parameters; update the existing tensors in place")
            if any(p.grad_fn is not None for p in now):
                fail("the updated target parameters carry autograd history: run the update under torch.no_grad()")
            if any(not torch.equal(a.detach(), b) for a, b in zip(source.parameters(), source_before)):
                fail("polyak_update changed the source network; only the target moves")
            for got, want, old in zip(now, expected.parameters(), before):
                if not torch.allclose(got.detach(), want.detach(), **tol):
                    if torch.equal(got.detach(), old) and tau > 0:
                        fail(f"polyak_update left the target unchanged (tau={tau}, {kind}): assigning to a loop "
                             "variable does not change the network; update the tensors in place")
                    fail(f"the target's parameters differ from the reference after polyak_update(tau={tau}, {kind}): "
                         "theta' <- tau * theta + (1 - tau) * theta'")
            # start the next tau from the reference result, so one mistake is not compounded
            with torch.no_grad():
                for p, q in zip(target.parameters(), expected.parameters()):
                    p.copy_(q)


def check_training(ns: Mapping[str, Any]) -> None:
    """The graded cell's evaluated agent (``result``, ``agent``) reaches the pinned pass mark."""
    check_evaluated_return(LAB, ns, "the four functions above")


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: the deterministic policy's mean evaluation return, and the
    mean return of uniformly random actions on the same evaluation episodes (``random_result``)."""
    measured = measure_evaluated_return(ns)
    random_result = ns.get("random_result")
    if not isinstance(random_result, Mapping) or "episode_return_mean" not in random_result:
        fail("the training cell must leave `random_result`, the evaluation of random actions")
    measured["random_return"] = float(random_result["episode_return_mean"])
    return measured


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Halfway from random actions to the worst reference seed: ``baseline + 0.5 * (reference_min -
    baseline)``, the baseline being the best mean return of random actions over the seeds (the
    highest, so the pass mark beats random actions on every seed's evaluation episodes by a
    margin). A reference that does not swing the pendulum up is refused."""
    returns = [run["measured"]["return"] for run in runs]
    if min(returns) < MAX_REFERENCE_RETURN:
        raise RuntimeError(f"the reference SAC reached only {min(returns):.1f} on some seed ({returns}); not pinning")
    random_returns = [run["measured"]["random_return"] for run in runs]
    baseline = round(max(random_returns), 2)
    mark = margin_pass_mark(returns, "return", baseline=baseline)
    mark["threshold_rule"] += " (baseline: random_max, the best mean return of uniformly random actions over the seeds)"
    mark["random_returns"] = [round(r, 2) for r in random_returns]
    mark["random_max"] = baseline
    return mark
