"""Hidden checks of lab 5 (SAC): the soft critic target, the tanh log-probability, the temperature
loss, the Polyak update, and the trained agent.

The hidden test cells of ``solutions/lab5_sac/lab5_sac.ipynb`` call the entry points at the end
of this module. Each check is in two halves (:mod:`rlcourse.grading.hidden`): ``call`` runs the
student's function on a case (in the grading sandbox), ``judge`` computes the reference from
:mod:`rlcourse.algos.sac` (and :func:`rlcourse.algos.common.polyak_update`) on the same case and
compares (in the grader's process). The cases are fixed ones plus fresh random ones drawn from
a seed the grader picks for each submission.

Pendulum returns are negative (0 is perfect), so the pass mark is measured from what random
actions score, not from 0: the graded cell also evaluates uniformly random actions on its
evaluation episodes (``random_result``). The grader re-evaluates the trained policy itself, on
fresh episodes, against that pinned pass mark.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.grading.common import (
    TOLERANCES,
    fail,
    judge_evaluated_return,
    margin_pass_mark,
    measure_evaluated_return,
    record_policy,
)
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point

LAB = "lab5_sac"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# The grader's re-evaluation of the trained policy: as many episodes, on as many envs, as the graded cell.
EVALUATION = {"algo": "sac", "env_id": "Pendulum-v1", "num_envs": 5, "episodes": 10}
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
# The graded cell passes the student's four functions to SAC, which then calls none of these.
WITHHELD = {
    "rlcourse.algos.sac": ("sac_critic_target", "squashed_gaussian_log_prob", "temperature_loss"),
    "rlcourse.algos.common": ("polyak_update",),
}
# A reference worse than this on some seed has not learned to swing up; nothing is pinned.
MAX_REFERENCE_RETURN = -500.0
# |u| above which the log-prob check counts an input as "large": there 1 - tanh(u)^2 is below
# 0.07 and loses precision in float32 (or to an epsilon added to it) as |u| grows.
LARGE_PRE_TANH = 2.0
POLYAK_TAUS = (0.005, 0.3, 1.0, 0.0)


# --------------------------------------------------------------------------- inputs
def _critic_target_batch(g: torch.Generator, B: int) -> dict[str, torch.Tensor]:
    """One minibatch of ``B`` transitions, about a quarter terminal."""
    rewards = torch.randn(B, generator=g)
    next_q1 = torch.randn(B, generator=g) * 3.0
    next_q2 = torch.randn(B, generator=g) * 3.0  # min(Q1, Q2) picks either critic about equally often
    next_log_prob = torch.randn(B, generator=g) - 1.0
    dones = (torch.rand(B, generator=g) < 0.25).float()
    dones[0], dones[1] = 1.0, 0.0
    return {"rewards": rewards, "next_q1": next_q1, "next_q2": next_q2, "next_log_prob": next_log_prob,
            "dones": dones}


def critic_target_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Minibatches of 64 transitions; alpha as a float and as a 0-dim tensor (SAC passes
    ``log_alpha.exp()``). With ``seed``, two random minibatches of random size, gamma and alpha follow."""
    batch = _critic_target_batch(torch.Generator().manual_seed(5101), 64)
    cases = [{**batch, "gamma": gamma, "alpha": alpha}
             for gamma, alpha in ((0.99, 0.2), (0.9, torch.tensor(0.05)), (0.5, 1.0))]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for alpha_as_tensor in (False, True):
            B = int(torch.randint(8, 128, (1,), generator=g))
            batch = _critic_target_batch(g, B)
            gamma = round(0.8 + 0.199 * float(torch.rand(1, generator=g)), 4)
            alpha = round(0.01 + float(torch.rand(1, generator=g)), 4)
            cases.append({**batch, "gamma": gamma, "alpha": torch.tensor(alpha) if alpha_as_tensor else alpha})
    return cases


def _log_prob_batch(g: torch.Generator, B: int, A: int) -> dict[str, torch.Tensor]:
    """Pre-tanh samples of ``B`` rows and ``A`` action dimensions; a quarter of the rows far in
    the tails of tanh (``|u|`` 10 to 25), where 1 - tanh(u)^2 rounds to 0 in float32."""
    mean = torch.randn(B, A, generator=g) * 0.7
    log_std = torch.rand(B, A, generator=g) * 2.5 - 2.0  # std in [0.14, 1.6]
    pre_tanh = mean + log_std.exp() * torch.randn(B, A, generator=g)
    far = torch.arange(B) % 4 == 0
    n_far = int(far.sum())
    shift = (torch.rand(n_far, A, generator=g) * 15.0 + 10.0) * torch.sign(torch.randn(n_far, A, generator=g))
    mean[far] = mean[far] + shift
    pre_tanh[far] = pre_tanh[far] + shift
    return {"pre_tanh": pre_tanh, "mean": mean, "log_std": log_std}


def _split_by_magnitude(batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The rows of ``batch`` with every ``|u| <= 2`` (region "moderate") and the others ("large"),
    as two cases: a failure then says which region is wrong."""
    large = (batch["pre_tanh"].abs() > LARGE_PRE_TANH).any(dim=1)
    return [{**{k: v[rows].clone() for k, v in batch.items()}, "region": region}
            for region, rows in (("moderate", ~large), ("large", large)) if bool(rows.any())]


def log_prob_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Pre-tanh samples with moderate (``|u| <= 2``) and large ``|u|`` (up to ~25), 1 to 3 action
    dimensions, each batch split into its two regions. With ``seed``, one random batch of 1 to 4
    action dimensions follows."""
    g = torch.Generator().manual_seed(5102)
    batches = [_log_prob_batch(g, B, A) for B, A in ((32, 1), (32, 2), (16, 3))]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        B, A = int(torch.randint(16, 64, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        batches.append(_log_prob_batch(g, B, A))
    return [case for batch in batches for case in _split_by_magnitude(batch)]


def temperature_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Batches of log-probabilities above and below the target entropy. With ``seed``, one random
    batch with a random temperature and target follows."""
    g = torch.Generator().manual_seed(5103)
    cases = []
    for log_alpha, target_entropy, shift in ((math.log(0.2), -1.0, 0.0), (math.log(1.5), -2.0, 1.5), (-3.0, 0.5, -1.0)):
        cases.append({"log_alpha": torch.tensor(log_alpha), "log_prob": torch.randn(40, generator=g) + shift,
                      "target_entropy": target_entropy})
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(8, 256, (1,), generator=g))
        cases.append({"log_alpha": torch.randn((), generator=g), "log_prob": torch.randn(n, generator=g) * 2.0,
                      "target_entropy": round(-4.0 * float(torch.rand(1, generator=g)), 4)})
    return cases


def polyak_modules(arch: str, sizes: list[int]) -> tuple[nn.Module, nn.Module]:
    """A ``(target, source)`` pair of the architecture a Polyak case names: ``"mlp"`` with
    ``sizes = [in, hidden, out]`` or SAC's batched twin critics ``"critics"`` with ``sizes =
    [num_obs, num_actions, hidden...]``. Their parameters require gradients (a generic
    module's do). The global random generator is left as it was (initialization draws from it)."""
    def make() -> nn.Module:
        if arch == "mlp":
            n_in, hidden, n_out = sizes
            return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))
        if arch == "critics":
            return reference_common.QCritics(sizes[0], sizes[1], tuple(sizes[2:]), "relu", num_critics=2)
        raise ValueError(f"unknown architecture {arch!r}")

    with torch.random.fork_rng(devices=[]):
        return make(), make()


def _polyak_weights(g: torch.Generator, arch: str, sizes: list[int]) -> dict[str, Any]:
    """Random target and source weights (every entry differs) for one architecture."""
    target, source = polyak_modules(arch, sizes)
    state = {name: {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in module.state_dict().items()}
             for name, module in (("target", target), ("source", source))}
    return {"arch": arch, "sizes": list(sizes), **state}


def polyak_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """A small MLP and SAC's twin critics, each with tau = 0.005, 0.3, 1 and 0. With ``seed``,
    one MLP and one pair of critics of random sizes with a random tau follow."""
    g = torch.Generator().manual_seed(5104)
    cases = []
    for arch, sizes in (("mlp", [3, 5, 2]), ("critics", [3, 1, 8])):
        weights = _polyak_weights(g, arch, sizes)
        cases.extend({**weights, "tau": tau} for tau in POLYAK_TAUS)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for arch in ("mlp", "critics"):
            sizes = [int(x) for x in torch.randint(1, 9, (3,), generator=g)]
            weights = _polyak_weights(g, arch, sizes)
            cases.append({**weights, "tau": round(0.01 + 0.98 * float(torch.rand(1, generator=g)), 4)})
    return cases


def _tensor(value: Any, message: str) -> torch.Tensor:
    """``value`` as a float tensor, or a failure with ``message`` (the sandbox may return anything)."""
    if not isinstance(value, torch.Tensor) or value.is_complex():
        fail(message)
    return value.detach().float()


# --------------------------------------------------------------------------- critic target
TARGET_INPUTS = ("rewards", "next_q1", "next_q2", "next_log_prob", "dones")


def call_critic_target(case: dict[str, Any], target_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's target on a copy of the case."""
    inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    out = target_fn(*(inputs[k] for k in TARGET_INPUTS), inputs["gamma"], inputs["alpha"])
    return {"out": out, "modified": [k for k in TARGET_INPUTS if not torch.equal(inputs[k], case[k])]}


def judge_critic_target(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference target on the same case, compared; a wrong target is
    matched against the usual mistakes to name the one made."""
    tol = TOLERANCES
    modified = outputs.get("modified")
    if modified:
        fail(f"sac_critic_target modified its input {str(modified[0])!r} in place; work on new tensors")
    got = _tensor(outputs.get("out"), "sac_critic_target must return a torch tensor")
    want = reference.sac_critic_target(*(case[k] for k in TARGET_INPUTS), case["gamma"], case["alpha"])
    if got.shape != want.shape:
        fail(f"sac_critic_target returned shape {tuple(got.shape)}; it must be (B,) = {tuple(want.shape)}")
    if torch.allclose(got, want, **tol):
        return
    label = f"gamma={case['gamma']}, alpha={float(case['alpha'])}"
    bad = ~torch.isclose(got, want, **tol)
    terminal = case["dones"].bool()
    if bool((bad & terminal).any()) and not bool((bad & ~terminal).any()):
        fail(f"sac_critic_target differs from the reference ({label}) on terminal transitions (done = 1) only: "
             "a terminal transition's target is its reward alone")
    r, gamma, alpha, lp = case["rewards"], case["gamma"], case["alpha"], case["next_log_prob"]
    not_done = 1 - case["dones"]
    q_min, q_max = torch.min(case["next_q1"], case["next_q2"]), torch.max(case["next_q1"], case["next_q2"])
    variants = {
        "the larger of the two critics is used; take the minimum (clipped double-Q)":
            r + gamma * not_done * (q_max - alpha * lp),
        "the entropy term is missing: subtract alpha * log pi(a'|s') from min(Q1', Q2')":
            r + gamma * not_done * q_min,
        "the entropy term has the wrong sign: it is - alpha * log pi(a'|s')":
            r + gamma * not_done * (q_min + alpha * lp),
    }
    for hint, value in variants.items():
        if torch.allclose(got, value, **tol):
            fail(f"sac_critic_target differs from the reference ({label}): {hint}")
    fail(f"sac_critic_target differs from the reference ({label}) on non-terminal transitions (done = 0)")


# --------------------------------------------------------------------------- log-probability
LOG_PROB_INPUTS = ("pre_tanh", "mean", "log_std")


def call_log_prob(case: dict[str, Any], log_prob_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's log-probability and the gradients of its sum."""
    inputs = [case[k].clone().requires_grad_(True) for k in LOG_PROB_INPUTS]
    out = log_prob_fn(*inputs)
    if not isinstance(out, torch.Tensor):
        return {"out": out}
    grads = None
    if out.requires_grad:
        grads = list(torch.autograd.grad(out.sum(), inputs, allow_unused=True))
    return {"out": out, "requires_grad": bool(out.requires_grad), "grads": grads}


def judge_log_prob(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference value and gradients on the same rows, compared."""
    tol = TOLERANCES
    A = case["pre_tanh"].shape[1]
    inputs = [case[k].clone().requires_grad_(True) for k in LOG_PROB_INPUTS]
    want = reference.squashed_gaussian_log_prob(*inputs)
    got = _tensor(outputs.get("out"), "squashed_gaussian_log_prob must return a torch tensor")
    if got.shape != want.shape:
        fail(f"squashed_gaussian_log_prob returned shape {tuple(got.shape)} for {A} action dimension(s); "
             f"it must be (B,) = {tuple(want.shape)}: sum the log-probabilities over the action dimensions")
    large = case["region"] == "large"
    where = f"with {A} action dimension(s), for {'large |u| (2 to 25)' if large else '|u| <= 2'}"
    if not bool(torch.isfinite(got).all()):
        fail(f"squashed_gaussian_log_prob is not finite {where}: log(1 - tanh(u)^2) must be computed "
             "in the numerically stable form")
    if not torch.allclose(got, want.detach(), **tol):
        if large:
            fail(f"squashed_gaussian_log_prob differs from the reference {where}: in float32, 1 - tanh(u)^2 "
                 "rounds to 0 (or to a small epsilon you added) there; use the stable identity "
                 "log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))")
        fail(f"squashed_gaussian_log_prob differs from the reference {where}: check the Gaussian "
             "log-density (its normalization) and the sign of the tanh correction")
    grads = outputs.get("grads")
    if outputs.get("requires_grad") is not True or not isinstance(grads, list) or len(grads) != len(inputs):
        fail("squashed_gaussian_log_prob is not differentiable (was something detached or built with numpy?): "
             "the actor's loss needs its gradient")
    want_grads = torch.autograd.grad(want.sum(), inputs)
    for name, grad, want_grad in zip(LOG_PROB_INPUTS, grads, want_grads):
        # An input the output does not depend on has no gradient: zero.
        grad = torch.zeros_like(want_grad) if grad is None else grad
        if not (isinstance(grad, torch.Tensor) and grad.shape == want_grad.shape
                and torch.allclose(grad.detach().float(), want_grad, **tol)):
            fail(f"the gradient of squashed_gaussian_log_prob with respect to {name} differs from the "
                 f"reference {where}")


# --------------------------------------------------------------------------- temperature
def call_temperature(case: dict[str, Any], loss_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's loss and its gradients with respect to ``log_alpha`` and
    ``log_prob`` (which requires gradients, as in SAC where it carries the actor's graph)."""
    log_alpha = case["log_alpha"].clone().requires_grad_(True)
    log_prob = case["log_prob"].clone().requires_grad_(True)
    loss = loss_fn(log_alpha, log_prob, case["target_entropy"])
    if not isinstance(loss, torch.Tensor):
        return {"loss": loss}
    out: dict[str, Any] = {"loss": loss, "requires_grad": bool(loss.requires_grad)}
    if loss.requires_grad and loss.dim() == 0:
        out["grad_log_alpha"], out["grad_log_prob"] = torch.autograd.grad(loss, [log_alpha, log_prob],
                                                                          allow_unused=True)
    return out


def judge_temperature(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference loss and its gradient on the same case, compared; no
    gradient may reach ``log_prob``."""
    tol = TOLERANCES
    label = f"target_entropy={case['target_entropy']}"
    message = "temperature_loss must return a scalar (0-dim) torch tensor: the mean over the batch"
    loss = _tensor(outputs.get("loss"), message)
    if loss.dim() != 0:
        fail(message)
    log_alpha = case["log_alpha"].clone().requires_grad_(True)
    want = reference.temperature_loss(log_alpha, case["log_prob"], case["target_entropy"])
    if not torch.allclose(loss, want.detach(), **tol):
        alpha_form = -(case["log_alpha"].exp() * (case["log_prob"] + case["target_entropy"])).mean()
        if torch.allclose(loss, alpha_form, **tol):
            fail(f"temperature_loss differs from the reference ({label}): this lab's loss multiplies "
                 "log_alpha, not alpha = exp(log_alpha)")
        fail(f"temperature_loss differs from the reference ({label}): check the sign and what multiplies what")
    if outputs.get("requires_grad") is not True:
        fail("temperature_loss is not differentiable with respect to log_alpha (was log_alpha detached?)")
    grad_log_prob = outputs.get("grad_log_prob")
    if grad_log_prob is not None and not (isinstance(grad_log_prob, torch.Tensor) and bool((grad_log_prob == 0).all())):
        fail("temperature_loss sends gradients into log_prob: detach it, this loss trains alpha only")
    (want_grad,) = torch.autograd.grad(want, log_alpha)
    grad = outputs.get("grad_log_alpha")
    if not (isinstance(grad, torch.Tensor) and grad.shape == want_grad.shape
            and torch.allclose(grad.detach().float(), want_grad, **tol)):
        fail(f"the gradient of temperature_loss with respect to log_alpha differs from the reference ({label})")


# --------------------------------------------------------------------------- Polyak
def call_polyak(case: dict[str, Any], polyak_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: builds the case's modules, runs the student's update, and returns what
    became of them: both state dicts, whether the target's parameter tensors were replaced or
    carry autograd history, or the error an autograd refusal raised."""
    target, source = polyak_modules(case["arch"], case["sizes"])
    target.load_state_dict(case["target"])
    source.load_state_dict(case["source"])
    params = list(target.parameters())
    try:
        polyak_fn(target, source, case["tau"])
    except RuntimeError as exc:  # e.g. autograd refusing an in-place update of a leaf: the judge words it
        return {"error": str(exc)}
    now = list(target.parameters())
    return {"replaced": len(now) != len(params) or any(a is not b for a, b in zip(now, params)),
            "history": any(p.grad_fn is not None for p in now),
            "target": target.state_dict(), "source": source.state_dict()}


def _recorded_state(value: Any, like: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """A recorded state dict with the names and shapes of ``like``, or a failure."""
    if not (isinstance(value, Mapping) and set(value) == set(like)
            and all(isinstance(value[k], torch.Tensor) and value[k].shape == v.shape for k, v in like.items())):
        fail(f"polyak_update changed the names or shapes of the {what}'s parameters; update them in place")
    return {k: value[k].detach().float() for k in like}


def judge_polyak(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference update on its own copies of the modules, compared; the
    target's own tensors must be updated in place, outside autograd, and the source must not move."""
    tol = TOLERANCES
    tau, kind = case["tau"], "Sequential" if case["arch"] == "mlp" else "QCritics"
    error = outputs.get("error")
    if error is not None:
        if "leaf Variable" in str(error) or "in-place operation" in str(error):
            fail("polyak_update raised an autograd error on a target whose parameters require gradients: "
                 "the update must not be recorded by autograd (run it under torch.no_grad())")
        first_line = str(error).splitlines()[0][:200] if str(error) else "RuntimeError"
        fail(f"polyak_update raised an error (tau={tau}, {kind}): {first_line}")
    if outputs.get("replaced") is not False:
        fail("polyak_update replaced the target's parameters; update the existing tensors in place")
    if outputs.get("history") is not False:
        fail("the updated target parameters carry autograd history: run the update under torch.no_grad()")
    source = _recorded_state(outputs.get("source"), case["source"], "source")
    if any(not torch.equal(source[k], v) for k, v in case["source"].items()):
        fail("polyak_update changed the source network; only the target moves")
    got = _recorded_state(outputs.get("target"), case["target"], "target")
    expected, source_module = polyak_modules(case["arch"], case["sizes"])
    expected.load_state_dict(case["target"])
    source_module.load_state_dict(case["source"])
    reference_common.polyak_update(expected, source_module, tau)
    for k, want in expected.state_dict().items():
        if not torch.allclose(got[k], want, **tol):
            if torch.equal(got[k], case["target"][k]) and tau > 0:
                fail(f"polyak_update left the target unchanged (tau={tau}, {kind}): assigning to a loop "
                     "variable does not change the network; update the tensors in place")
            fail(f"the target's parameters differ from the reference after polyak_update(tau={tau}, {kind}): "
                 "theta' <- tau * theta + (1 - tau) * theta'")


# --------------------------------------------------------------------------- training
def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """The grader loads the trained networks into its own SAC agent and evaluates it anew."""
    judge_evaluated_return(LAB, record, seed, functions="the four functions above", **EVALUATION)


CRITIC_TARGET = FunctionCheck("critic_target", critic_target_cases, call_critic_target, judge_critic_target)
LOG_PROB = FunctionCheck("log_prob", log_prob_cases, call_log_prob, judge_log_prob)
TEMPERATURE = FunctionCheck("temperature_loss", temperature_cases, call_temperature, judge_temperature)
POLYAK = FunctionCheck("polyak", polyak_cases, call_polyak, judge_polyak)
TRAINING = TrainingCheck("training", record_policy, judge_training)

# The hidden test cells' calls.
check_critic_target = entry_point(CRITIC_TARGET, "Check ``sac_critic_target`` against the reference soft target.")
check_log_prob = entry_point(LOG_PROB, "Check ``squashed_gaussian_log_prob``: values and gradients, small and large u.")
check_temperature_loss = entry_point(TEMPERATURE, "Check ``temperature_loss``: value, gradient, none into log_prob.")
check_polyak = entry_point(POLYAK, "Check ``polyak_update``: the target updated in place, the source untouched.")
check_training = entry_point(TRAINING, "Check the graded run: the trained policy, re-evaluated, reaches the pass mark.")


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
