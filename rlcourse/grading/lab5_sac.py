"""Hidden checks of lab 5 (SAC): the soft critic target, the tanh log-probability, the temperature
loss, the Polyak update, and the trained agent.

The hidden test cells of ``solutions/lab5_sac/lab5_sac.ipynb`` call these functions, so the
test code a student could see in a traceback is a one-line call. Every check compares the
student's function with the reference in :mod:`rlcourse.algos.sac` (and
:func:`rlcourse.algos.common.polyak_update`) *in the same process on the same inputs*, with
the tolerances stored in ``autograder/pinned_metrics.json``. Failure messages say what is
wrong, never the expected numbers: they end up in the student's feedback.

The training protocol (:data:`PROTOCOL`) is shared by the notebook's graded training cell
and by ``rlcourse pin lab5_sac``, which measures the reference solution under it. Pendulum
returns are negative (0 is perfect, a random policy gets about -1100), so the pass mark
sits a fraction of the way from the untrained policy's return to the worst reference seed.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.grading import lab2 as _lab2

LAB = "lab5_sac"

# The graded training run (hyperparameters not listed: rlcourse/presets/sac.yaml for
# Pendulum-v1). The notebook's training cell spells these values out;
# tests/test_grading_lab5.py checks the two agree.
PROTOCOL: dict[str, Any] = {
    "env": "Pendulum-v1",
    "num_envs": 1,
    "total_steps": 5_000,
    "seed": 0,  # training seed of the graded run
    "eval_episodes": 10,
    "eval_seed": 10_000,  # evaluation env seed = eval_seed + training seed
    "metric": "episode_return_mean",
}
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# Pass mark = untrained + MARGIN * (worst reference seed - untrained), rounded.
MARGIN = 0.5
# A reference worse than this on some seed has not learned to swing up; nothing is pinned.
MAX_REFERENCE_RETURN = -500.0

DEFAULT_TOLERANCES = {"atol": 1e-5, "rtol": 1e-4}
# |u| above which the log-prob check counts an input as "large": there 1 - tanh(u)^2 is below
# 0.07 and loses precision in float32 (or to an epsilon added to it) as |u| grows.
LARGE_PRE_TANH = 2.0


# --------------------------------------------------------------------------- pins
def find_pins(start: str | os.PathLike | None = None) -> Path:
    """``autograder/pinned_metrics.json``, found as :func:`rlcourse.grading.lab2.find_pins` does."""
    return _lab2.find_pins(start)


def load_pins(lab: str = LAB, start: str | os.PathLike | None = None) -> dict[str, Any]:
    """The pinned entry of lab 5 (raises a clear error if the file has none)."""
    return _lab2.load_pins(lab, start)


def _tolerances(pins: dict[str, Any] | None, key: str) -> dict[str, float]:
    tol = dict(DEFAULT_TOLERANCES)
    if pins is not None:
        tol.update(pins.get(key, {}).get("tolerance", {}))
    return tol


def _fail(message: str) -> None:
    raise AssertionError(message)


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
def check_critic_target(target_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``target_fn`` with :func:`rlcourse.algos.sac.sac_critic_target` on :func:`critic_target_cases`."""
    tol = _tolerances(pins, "critic_target")
    for case in critic_target_cases():
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        got = target_fn(inputs["rewards"], inputs["next_q1"], inputs["next_q2"], inputs["next_log_prob"],
                        inputs["dones"], inputs["gamma"], inputs["alpha"])
        for k in ("rewards", "next_q1", "next_q2", "next_log_prob", "dones"):
            if not torch.equal(inputs[k], case[k]):
                _fail(f"sac_critic_target modified its input {k!r} in place; work on new tensors")
        want = reference.sac_critic_target(**case)
        if not isinstance(got, torch.Tensor):
            _fail("sac_critic_target must return a torch tensor")
        if got.shape != want.shape:
            _fail(f"sac_critic_target returned shape {tuple(got.shape)}; it must be (B,) = {tuple(want.shape)}")
        got = got.detach().float()
        if torch.allclose(got, want, **tol):
            continue
        label = f"gamma={case['gamma']}, alpha={float(case['alpha'])}"
        bad = ~torch.isclose(got, want, **tol)
        terminal = case["dones"].bool()
        if bool((bad & terminal).any()) and not bool((bad & ~terminal).any()):
            _fail(f"sac_critic_target differs from the reference ({label}) on terminal transitions (done = 1) only: "
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
                _fail(f"sac_critic_target differs from the reference ({label}): {hint}")
        _fail(f"sac_critic_target differs from the reference ({label}) on non-terminal transitions (done = 0)")


def check_log_prob(log_prob_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``log_prob_fn`` (value and gradients) with :func:`rlcourse.algos.sac.squashed_gaussian_log_prob`."""
    tol = _tolerances(pins, "log_prob")
    for case in log_prob_cases():
        B, A = case["pre_tanh"].shape
        large = (case["pre_tanh"].abs() > LARGE_PRE_TANH).any(dim=1)
        for label, rows in (("moderate", ~large), ("large", large)):
            inputs = {k: v[rows].clone().requires_grad_(True) for k, v in case.items()}
            ref_inputs = {k: v[rows].clone().requires_grad_(True) for k, v in case.items()}
            got = log_prob_fn(inputs["pre_tanh"], inputs["mean"], inputs["log_std"])
            want = reference.squashed_gaussian_log_prob(ref_inputs["pre_tanh"], ref_inputs["mean"], ref_inputs["log_std"])
            if not isinstance(got, torch.Tensor):
                _fail("squashed_gaussian_log_prob must return a torch tensor")
            if got.shape != want.shape:
                _fail(f"squashed_gaussian_log_prob returned shape {tuple(got.shape)} for {A} action dimension(s); "
                      f"it must be (B,) = {tuple(want.shape)}: sum the log-probabilities over the action dimensions")
            where = f"with {A} action dimension(s), for {'|u| <= 2' if label == 'moderate' else 'large |u| (2 to 25)'}"
            if not bool(torch.isfinite(got).all()):
                _fail(f"squashed_gaussian_log_prob is not finite {where}: log(1 - tanh(u)^2) must be computed "
                      "in the numerically stable form")
            if not torch.allclose(got.detach(), want.detach(), **tol):
                if label == "large":
                    _fail(f"squashed_gaussian_log_prob differs from the reference {where}: in float32, 1 - tanh(u)^2 "
                          "rounds to 0 (or to a small epsilon you added) there; use the stable identity "
                          "log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))")
                _fail(f"squashed_gaussian_log_prob differs from the reference {where}: check the Gaussian "
                      "log-density (its normalization) and the sign of the tanh correction")
            if not got.requires_grad:
                _fail("squashed_gaussian_log_prob is not differentiable (was something detached or built with numpy?): "
                      "the actor's loss needs its gradient")
            grads = torch.autograd.grad(got.sum(), [inputs["pre_tanh"], inputs["mean"], inputs["log_std"]],
                                        allow_unused=True)
            want_grads = torch.autograd.grad(want.sum(), [ref_inputs["pre_tanh"], ref_inputs["mean"], ref_inputs["log_std"]])
            for name, grad, want_grad in zip(("pre_tanh", "mean", "log_std"), grads, want_grads):
                if grad is None:
                    grad = torch.zeros_like(want_grad)
                if not torch.allclose(grad, want_grad, **tol):
                    _fail(f"the gradient of squashed_gaussian_log_prob with respect to {name} differs from the "
                          f"reference {where}")


def check_temperature_loss(loss_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``loss_fn`` with :func:`rlcourse.algos.sac.temperature_loss`: value, gradient with respect
    to ``log_alpha``, and no gradient into ``log_prob``."""
    tol = _tolerances(pins, "temperature")
    for case in temperature_cases():
        label = f"target_entropy={case['target_entropy']}"
        log_alpha = case["log_alpha"].clone().requires_grad_(True)
        log_prob = case["log_prob"].clone().requires_grad_(True)  # as in SAC: it carries the actor's graph
        loss = loss_fn(log_alpha, log_prob, case["target_entropy"])
        ref_log_alpha = case["log_alpha"].clone().requires_grad_(True)
        want = reference.temperature_loss(ref_log_alpha, case["log_prob"], case["target_entropy"])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            _fail("temperature_loss must return a scalar (0-dim) torch tensor: the mean over the batch")
        if not torch.allclose(loss.detach(), want.detach(), **tol):
            alpha_form = -(case["log_alpha"].exp() * (case["log_prob"] + case["target_entropy"])).mean()
            if torch.allclose(loss.detach(), alpha_form, **tol):
                _fail(f"temperature_loss differs from the reference ({label}): this lab's loss multiplies "
                      "log_alpha, not alpha = exp(log_alpha)")
            _fail(f"temperature_loss differs from the reference ({label}): check the sign and what multiplies what")
        if not loss.requires_grad:
            _fail("temperature_loss is not differentiable with respect to log_alpha (was log_alpha detached?)")
        grad_alpha, grad_log_prob = torch.autograd.grad(loss, [log_alpha, log_prob], allow_unused=True)
        if grad_log_prob is not None and bool((grad_log_prob != 0).any()):
            _fail("temperature_loss sends gradients into log_prob: detach it, this loss trains alpha only")
        (want_grad,) = torch.autograd.grad(want, ref_log_alpha)
        if grad_alpha is None or not torch.allclose(grad_alpha, want_grad, **tol):
            _fail(f"the gradient of temperature_loss with respect to log_alpha differs from the reference ({label})")


def check_polyak(polyak_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``polyak_fn(target, source, tau)`` with :func:`rlcourse.algos.common.polyak_update`:
    the target's own parameter tensors updated in place, without autograd history, the source untouched."""
    tol = _tolerances(pins, "polyak")
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
                    _fail("polyak_update raised an autograd error on a target whose parameters require gradients: "
                          "the update must not be recorded by autograd (run it under torch.no_grad())")
                raise
            now = list(target.parameters())
            if len(now) != len(params) or any(a is not b for a, b in zip(now, params)):
                _fail("polyak_update replaced the target's parameters; update the existing tensors in place")
            if any(p.grad_fn is not None for p in now):
                _fail("the updated target parameters carry autograd history: run the update under torch.no_grad()")
            if any(not torch.equal(a.detach(), b) for a, b in zip(source.parameters(), source_before)):
                _fail("polyak_update changed the source network; only the target moves")
            for got, want, old in zip(now, expected.parameters(), before):
                if not torch.allclose(got.detach(), want.detach(), **tol):
                    if torch.equal(got.detach(), old) and tau > 0:
                        _fail(f"polyak_update left the target unchanged (tau={tau}, {kind}): assigning to a loop "
                              "variable does not change the network; update the tensors in place")
                    _fail(f"the target's parameters differ from the reference after polyak_update(tau={tau}, {kind}): "
                          "theta' <- tau * theta + (1 - tau) * theta'")
            # start the next tau from the reference result, so one mistake is not compounded
            with torch.no_grad():
                for p, q in zip(target.parameters(), expected.parameters()):
                    p.copy_(q)


def check_training(result: dict[str, Any], pins: dict[str, Any] | None = None, **protocol_used: Any) -> None:
    """The evaluated agent of the graded training cell reaches the pinned threshold.

    ``protocol_used`` holds the constants the training cell used; they must equal the pinned
    protocol, otherwise the threshold means nothing.
    """
    pins = load_pins() if pins is None else pins
    _lab2.check_evaluated_return(result, pins["training"], LAB, protocol_used, "the four functions above")


# --------------------------------------------------------------------------- reference run
def train_and_evaluate(
    target_fn: Callable[..., Any] = reference.sac_critic_target,
    log_prob_fn: Callable[..., Any] = reference.squashed_gaussian_log_prob,
    temperature_loss_fn: Callable[..., Any] = reference.temperature_loss,
    polyak_fn: Callable[..., Any] = reference_common.polyak_update,
    seed: int | None = None,
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train SAC exactly as the notebook's graded cell does and evaluate it (used by the pins and tests)."""
    from rlcourse.grading.pins import train_and_evaluate_agent

    p = {**PROTOCOL, **(protocol or {})}
    seed = p["seed"] if seed is None else int(seed)
    return train_and_evaluate_agent(
        p, seed,
        lambda env, s: reference.SAC(env, seed=s, target_fn=target_fn, log_prob_fn=log_prob_fn,
                                     temperature_loss_fn=temperature_loss_fn, polyak_fn=polyak_fn),
        eval_envs=5,
    )


def agent_config() -> dict[str, Any]:
    """Every SAC hyperparameter of the graded run (the Pendulum preset).

    Read by :func:`rlcourse.grading.pins.agent_config` (stored with the pins, checked by grade).
    """
    from rlcourse.grading.pins import built_config

    return built_config(PROTOCOL["env"], PROTOCOL["num_envs"], lambda env: reference.SAC(env, seed=0))


def untrained_return(protocol: dict[str, Any] | None = None, seed: int | None = None) -> float:
    """Mean return of uniformly random actions on the protocol's evaluation episodes (the pass mark's zero)."""
    import rlcourse

    p = {**PROTOCOL, **(protocol or {})}
    seed = p["seed"] if seed is None else int(seed)
    eval_env = rlcourse.envs.make(p["env"], num_envs=5, seed=p["eval_seed"] + seed)
    g = torch.Generator().manual_seed(seed)
    low = torch.as_tensor(eval_env.single_action_space.low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(eval_env.single_action_space.high, dtype=torch.float32).reshape(-1)

    def random_policy(obs: torch.Tensor) -> torch.Tensor:
        return low + (high - low) * torch.rand(obs.shape[0], low.numel(), generator=g)

    result = rlcourse.evaluate(random_policy, eval_env, episodes=p["eval_episodes"])
    eval_env.close()
    return float(result[p["metric"]])


def pin(seeds: tuple[int, ...] = PIN_SEEDS, workers: int | None = None) -> dict[str, Any]:
    """``rlcourse pin lab5_sac``: train the reference SAC under :data:`PROTOCOL` on ``seeds``."""
    from rlcourse.grading.pins import evaluated_return_run, reference_runs, return_training_entry
    from rlcourse.machine import versions

    run = functools.partial(evaluated_return_run, train_and_evaluate, PROTOCOL["metric"])
    seeds, runs, seconds = reference_runs(run, seeds, PROTOCOL["seed"], workers)
    returns = [r["return"] for r in runs]
    worst = min(returns)
    if worst < MAX_REFERENCE_RETURN:
        raise RuntimeError(f"the reference SAC reached only {worst:.1f} on some seed ({returns}); not pinning")
    untrained = untrained_return()
    return {
        "critic_target": {
            "check": "sac_critic_target vs rlcourse.algos.sac.sac_critic_target on lab5.critic_target_cases()",
            "tolerance": dict(DEFAULT_TOLERANCES),
        },
        "log_prob": {
            "check": "value and gradients vs rlcourse.algos.sac.squashed_gaussian_log_prob on lab5.log_prob_cases()",
            "tolerance": dict(DEFAULT_TOLERANCES),
        },
        "temperature": {
            "check": "value, d/dlog_alpha, no gradient into log_prob vs rlcourse.algos.sac.temperature_loss "
                     "on lab5.temperature_cases()",
            "tolerance": dict(DEFAULT_TOLERANCES),
        },
        "polyak": {
            "check": "in-place update vs rlcourse.algos.common.polyak_update on lab5.polyak_modules()",
            "tolerance": dict(DEFAULT_TOLERANCES),
        },
        "training": return_training_entry(
            PROTOCOL, seeds, runs, float(round(untrained + MARGIN * (worst - untrained))),
            f"round(untrained_return + {MARGIN} * (reference_min - untrained_return))",
            untrained_return=round(untrained, 2),
        ),
        "produced_by": "rlcourse pin lab5_sac (rlcourse.grading.lab5.pin -> lab5.train_and_evaluate with the "
                       "reference sac_critic_target, squashed_gaussian_log_prob, temperature_loss and polyak_update)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(seconds, 1),
        "versions": versions(),
    }
