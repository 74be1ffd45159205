"""Hidden checks of lab 5 (SAC): the critics' loss of a minibatch, the tanh log-probability, the
actor's and the temperature's losses, the Polyak update, and the trained agent.

The hidden test cells of ``solutions/lab5_sac/lab5_sac.ipynb`` call the entry points at the end
of this module. Each check is in two halves (:mod:`rlcourse.grading.hidden`): ``call`` runs the
student's function on a case (in the grading sandbox), ``judge`` computes the reference from
:mod:`rlcourse.algos.sac` (and :func:`rlcourse.algos.common.polyak_update`) on the same case and
compares (in the grader's process). The cases are fixed ones plus fresh random ones drawn from
a seed the grader picks for each submission.

The two losses are run with small twin critics (:class:`~rlcourse.algos.common.QCritics`) the
grader builds from the case's weights. The critics' loss gets a minibatch with running,
terminated and timed-out transitions and target critics whose parameters require grad (so a
target built with gradient shows); the actor's and the temperature's losses get fresh actions,
their log-probabilities and ``log_alpha``, all requiring grad. Values *and* gradients are
compared with the reference, a gradient that must not exist (into the target critics, into
``log_alpha`` from the actor's loss, into ``log pi`` from the temperature's loss) is named, and
a wrong value that equals one of the usual mistakes (``CRITIC_MISTAKES``, ``ACTOR_MISTAKES``:
time-outs as terminal, the larger critic, no entropy term, the online critics in the target,
...) is named too.

Pendulum returns are negative (0 is perfect), so the pass mark is measured from what random
actions score, not from 0: the graded cell also evaluates uniformly random actions on its
evaluation episodes (``random_result``). The grader re-evaluates the trained policy itself, on
fresh episodes, against that pinned pass mark.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.grading.common import (
    TOLERANCES,
    fail,
    judge_evaluated_return,
    judge_loss_record,
    margin_pass_mark,
    measure_evaluated_return,
    record_loss,
    record_policy,
    same_grads,
    tensor_or_type,
)
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point
from rlcourse.storage.replay import ReplayBatch

LAB = "lab5_sac"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# The grader's re-evaluation of the trained policy: as many episodes, on as many envs, as the graded cell.
EVALUATION = {"algo": "sac", "env_id": "Pendulum-v1", "num_envs": 5, "episodes": 10}
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
# The graded cell passes the student's four functions to SAC, which then calls none of these;
# the losses' parts are withheld too (the lab asks for the whole losses).
WITHHELD = {
    "rlcourse.algos.sac": ("sac_critic_loss", "_critic_loss_and_q", "sac_critic_target", "squashed_gaussian_log_prob",
                           "sac_actor_and_temperature_loss", "temperature_loss"),
    "rlcourse.algos.common": ("polyak_update",),
}
# A reference worse than this on some seed has not learned to swing up; nothing is pinned.
MAX_REFERENCE_RETURN = -500.0
# |u| above which the log-prob check counts an input as "large": there 1 - tanh(u)^2 is below
# 0.07 and loses precision in float32 (or to an epsilon added to it) as |u| grows.
LARGE_PRE_TANH = 2.0
POLYAK_TAUS = (0.005, 0.3, 1.0, 0.0)


# --------------------------------------------------------------------------- inputs
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


# The roles of the transitions in a critic-loss minibatch: the episode goes on, it terminated
# (done = 1), or it was cut by the time limit (time_out = 1, done = 0: it bootstraps).
GOES_ON, TERMINATED, TIME_OUT = 0, 1, 2
CRITIC_HIDDEN = 16  # hidden units of the checks' small twin critics


def critic_module(sizes: list[int], weights: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """SAC's twin critics (``(s, a) -> (2, B)``) of ``sizes = [num_obs, num_actions, hidden...]``,
    with ``weights`` loaded if given; their parameters require gradients. The checks build a
    case's critics and target critics with it, in the sandbox and in the grader alike. The
    global random generator is left as it was (initialization draws from it)."""
    with torch.random.fork_rng(devices=[]):
        critics = reference_common.QCritics(sizes[0], sizes[1], tuple(sizes[2:]), "relu", num_critics=2)
    if weights is not None:
        critics.load_state_dict({k: v.clone() for k, v in weights.items()})
    return critics


def _critic_weights(g: torch.Generator, sizes: list[int], obs: torch.Tensor, actions: torch.Tensor,
                    offset: float) -> dict[str, torch.Tensor]:
    """Random twin-critic weights, every entry drawn, then each critic's output bias shifted so
    that its mean over ``(obs, actions)`` is ``offset``: the two critics' Q-values spread over a
    few units around the same level, and which of them is smaller changes from row to row."""
    weights = {k: torch.randn(v.shape, generator=g) * 0.8 for k, v in critic_module(sizes).state_dict().items()}
    with torch.no_grad():
        mean = critic_module(sizes, weights)(obs, actions).mean(dim=1)   # (2,)
    out_bias = f"biases.{len(sizes) - 2}"
    weights[out_bias] = weights[out_bias] - mean.reshape(weights[out_bias].shape) + offset
    return weights


def _critic_case(B: int, num_obs: int, num_actions: int, gamma: float, alpha: float | torch.Tensor,
                 g: torch.Generator) -> dict[str, Any]:
    """One minibatch with every role (the first three rows: goes on, terminated, time-out), the
    next actions and their log-probabilities, and critics and target critics of their own."""
    roles = torch.randint(0, 3, (B,), generator=g)
    roles[:3] = torch.tensor([GOES_ON, TERMINATED, TIME_OUT])
    sizes = [num_obs, num_actions, CRITIC_HIDDEN]
    case = {"obs": torch.randn(B, num_obs, generator=g),
            "actions": torch.rand(B, num_actions, generator=g) * 2.0 - 1.0,
            "rewards": torch.randn(B, generator=g),
            "next_obs": torch.randn(B, num_obs, generator=g),
            "dones": (roles == TERMINATED).float(), "time_outs": (roles == TIME_OUT).float(),
            "next_actions": torch.rand(B, num_actions, generator=g) * 2.0 - 1.0,
            "next_log_prob": torch.randn(B, generator=g) - 1.0,
            "sizes": sizes, "gamma": gamma, "alpha": alpha}
    case["critics"] = _critic_weights(g, sizes, case["obs"], case["actions"], 0.0)
    case["critic_targets"] = _critic_weights(g, sizes, case["next_obs"], case["next_actions"], 1.0)
    return case


def critic_loss_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Minibatches for the critics' loss. Fixed: 48 transitions of 3-dim observations and 1-dim
    actions (Pendulum's sizes), about a third each going on, terminated and timed out, for
    (gamma, alpha) = (0.99, 0.2), (0.9, tensor 0.05) (SAC passes ``log_alpha.exp()``) and (0.5,
    1.0), and 32 transitions with 2-dim actions. With ``seed``, two random minibatches of random
    size, dimensions, gamma and alpha follow (alpha a float in one, a tensor in the other)."""
    g = torch.Generator().manual_seed(5101)
    cases = [_critic_case(48, 3, 1, gamma, alpha, g)
             for gamma, alpha in ((0.99, 0.2), (0.9, torch.tensor(0.05)), (0.5, 1.0))]
    cases.append(_critic_case(32, 4, 2, 0.95, 0.3, g))
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for alpha_as_tensor in (False, True):
            B = int(torch.randint(16, 129, (1,), generator=g))
            num_obs, num_actions = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
            gamma = round(0.8 + 0.199 * float(torch.rand(1, generator=g)), 4)
            alpha = round(0.01 + float(torch.rand(1, generator=g)), 4)
            cases.append(_critic_case(B, num_obs, num_actions, gamma, torch.tensor(alpha) if alpha_as_tensor else alpha, g))
    return cases


def _actor_case(B: int, num_obs: int, num_actions: int, log_alpha: float, target_entropy: float,
                g: torch.Generator) -> dict[str, Any]:
    """Observations, fresh actions in (-1, 1) with their log-probabilities (some above, some below
    the target entropy), twin critics, log(alpha) and the entropy target."""
    sizes = [num_obs, num_actions, CRITIC_HIDDEN]
    obs, actions = torch.randn(B, num_obs, generator=g), torch.tanh(torch.randn(B, num_actions, generator=g))
    return {"obs": obs, "actions": actions, "log_prob": torch.randn(B, generator=g) * 1.5 - 0.5,
            "sizes": sizes, "critics": _critic_weights(g, sizes, obs, actions, 0.0),
            "log_alpha": torch.tensor(log_alpha), "target_entropy": target_entropy}


def actor_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Batches for the actor's and the temperature's losses. Fixed: 40 rows with Pendulum's sizes
    for (log alpha, target entropy) = (log 0.2, -1), (log 1.5, -2) and (-3, 0.5), and 24 rows
    with 2-dim actions. With ``seed``, one random batch with a random temperature and target."""
    g = torch.Generator().manual_seed(5103)
    cases = [_actor_case(40, 3, 1, log_alpha, target_entropy, g)
             for log_alpha, target_entropy in ((math.log(0.2), -1.0), (math.log(1.5), -2.0), (-3.0, 0.5))]
    cases.append(_actor_case(24, 4, 2, math.log(0.1), -2.0, g))
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        B = int(torch.randint(8, 129, (1,), generator=g))
        num_obs, num_actions = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
        log_alpha = round(float(torch.randn((), generator=g)), 4)
        target_entropy = round(-4.0 * float(torch.rand(1, generator=g)), 4)
        cases.append(_actor_case(B, num_obs, num_actions, log_alpha, target_entropy, g))
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


# --------------------------------------------------------------------------- critics' loss
BATCH_FIELDS = ("obs", "actions", "rewards", "next_obs", "dones", "time_outs")
NEXT_INPUTS = ("next_actions", "next_log_prob")


def _alpha(case: dict[str, Any]) -> float | torch.Tensor:
    alpha = case["alpha"]
    return alpha.clone() if isinstance(alpha, torch.Tensor) else alpha


def call_critic_loss(case: dict[str, Any], loss_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's loss on a copy of the minibatch, with the case's critics
    and target critics (whose parameters require grad here, so a target built with gradient
    shows), and the loss's gradients with respect to the critics' parameters, and how much
    gradient reached the target critics and the next actions and log-probabilities."""
    batch = ReplayBatch(**{k: case[k].clone() for k in BATCH_FIELDS})
    next_inputs = [case[k].clone().requires_grad_(True) for k in NEXT_INPUTS]
    critics = critic_module(case["sizes"], case["critics"])
    targets = critic_module(case["sizes"], case["critic_targets"])
    loss = loss_fn(batch, *next_inputs, critics, targets, case["gamma"], _alpha(case))
    return record_loss(loss, batch, case, BATCH_FIELDS, critics.parameters(), [*targets.parameters(), *next_inputs],
                       "critic_grads")


# The mistakes the judge recognizes, each a change to the reference (see _critic_loss_variant),
# and what the student reads. Checked in this order; one is named only where it differs from
# the reference on the case.
CRITIC_MISTAKES: tuple[tuple[str, dict[str, str], str], ...] = (
    ("time_outs_terminal", {"mask": "dones_or_time_outs"},
     "time-outs are treated as terminal: only batch.dones (the episode terminated) stops the bootstrap; "
     "a time-out row (batch.time_outs = 1) bootstraps from next_obs like any other"),
    ("ignores_dones", {"mask": "none"},
     "terminal transitions (batch.dones = 1) bootstrap: their target is the reward alone, multiply "
     "the bootstrap by (1 - dones)"),
    ("max_of_targets", {"next_q": "max"},
     "the target uses the larger of the two target critics; take the minimum (clipped double-Q)"),
    ("mean_of_targets", {"next_q": "mean"},
     "the target uses the mean of the two target critics; take the minimum (clipped double-Q)"),
    ("no_entropy", {"entropy": "none"},
     "the entropy term is missing from the target: subtract alpha * log pi(a'|s') from min(Q1', Q2')"),
    ("entropy_sign", {"entropy": "plus"},
     "the entropy term of the target has the wrong sign: it is min(Q1', Q2') - alpha * log pi(a'|s')"),
    ("online_critics_in_target", {"target_net": "critics"},
     "the target is computed with the critics being trained; it must use the target critics "
     "(critic_targets), which trail them slowly"),
    ("batch_actions_in_target", {"target_action": "batch"},
     "the target evaluates the target critics at (s', a) with the stored action a; it needs the next "
     "action a' ~ pi(.|s') (next_actions), with its log-probability"),
    ("one_critic", {"regress": "first"},
     "only the first critic is trained: the loss is the sum of both critics' mean squared errors"),
    ("min_of_critics_regressed", {"regress": "min"},
     "the loss regresses min(Q1, Q2)(s, a): each critic must be regressed on the target on its own "
     "(the sum of both critics' mean squared errors)"),
    ("mean_of_critic_losses", {"reduce": "half"},
     "the loss is half of the reference: it is the sum of both critics' mean squared errors (not their mean, "
     "no factor 1/2)"),
    ("sum_over_batch", {"reduce": "sum_over_batch"},
     "the loss sums the squared errors over the batch; take the mean over the batch for each critic"),
    ("no_gamma", {"gamma": "one"},
     "the bootstrap must be discounted by gamma"),
)


def _critic_loss_variant(case: dict[str, Any], critics: nn.Module, targets: nn.Module, mask: str = "dones",
                         next_q: str = "min", entropy: str = "minus", target_net: str = "targets",
                         target_action: str = "next", regress: str = "both", reduce: str = "sum_of_means",
                         gamma: str = "gamma") -> torch.Tensor:
    """The reference critics' loss of ``case`` (all defaults), or the loss with one mistake (one
    argument changed), differentiable w.r.t. ``critics``."""
    g = 1.0 if gamma == "one" else case["gamma"]
    alpha, lp = case["alpha"], case["next_log_prob"]
    with torch.no_grad():
        net = targets if target_net == "targets" else critics
        a_next = case["next_actions"] if target_action == "next" else case["actions"]
        q1, q2 = net(case["next_obs"], a_next)
        q_next = {"min": torch.min(q1, q2), "max": torch.max(q1, q2), "mean": 0.5 * (q1 + q2)}[next_q]
        soft = {"minus": q_next - alpha * lp, "plus": q_next + alpha * lp, "none": q_next}[entropy]
        stop = {"dones": case["dones"], "dones_or_time_outs": torch.clamp(case["dones"] + case["time_outs"], max=1.0),
                "none": torch.zeros_like(case["dones"])}[mask]
        y = case["rewards"] + g * (1.0 - stop) * soft
    q = critics(case["obs"], case["actions"])
    if regress == "first":
        return F.mse_loss(q[0], y)
    if regress == "min":
        return F.mse_loss(q.min(dim=0).values, y)
    if reduce == "half":
        return 0.5 * (F.mse_loss(q[0], y) + F.mse_loss(q[1], y))
    if reduce == "sum_over_batch":
        return F.mse_loss(q[0], y, reduction="sum") + F.mse_loss(q[1], y, reduction="sum")
    return F.mse_loss(q[0], y) + F.mse_loss(q[1], y)


def judge_critic_loss(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: :func:`rlcourse.algos.sac.sac_critic_loss` on the same minibatch and
    critics, value and gradient compared; a wrong value that equals one of the
    ``CRITIC_MISTAKES`` is named."""
    tol = TOLERANCES
    loss, grads = judge_loss_record(
        "critic_loss", outputs, "critic_grads", returns="the loss of both critics",
        scalar="the sum of both critics' mean squared errors",
        not_differentiable="the loss is not differentiable with respect to the critics' parameters: Q1(s, a) and "
                           "Q2(s, a) must be computed with gradient (only the target is computed without)",
        target_gradient="gradient flows into the target: compute it under torch.no_grad() (or detach it); the loss "
                        "may only move the critics through Q1(s, a) and Q2(s, a), not the target critics or the next "
                        "actions")
    critics, targets = critic_module(case["sizes"], case["critics"]), critic_module(case["sizes"], case["critic_targets"])
    batch = ReplayBatch(**{k: case[k] for k in BATCH_FIELDS})
    want = reference.sac_critic_loss(batch, case["next_actions"], case["next_log_prob"], critics, targets,
                                     case["gamma"], case["alpha"])
    setting = f"gamma={case['gamma']}, alpha={float(case['alpha'])}"
    loss = loss.float()
    if not torch.allclose(loss, want.detach(), **tol):
        for _, change, message in CRITIC_MISTAKES:
            wrong = _critic_loss_variant(case, critics, targets, **change).detach()
            if torch.allclose(wrong, want.detach(), **tol):
                continue  # not told apart on this case
            if torch.allclose(loss, wrong, **tol):
                fail(f"{message} ({setting})")
        fail(f"the loss value differs from the reference ({setting}): both critics' Q(s, a) of the stored actions, "
             "one target r + gamma * (1 - dones) * (min(Q1', Q2')(s', a') - alpha * log pi(a'|s')) from the target "
             "critics without gradient, and the sum of the two mean squared errors")
    if not same_grads(grads, torch.autograd.grad(want, list(critics.parameters())), tol):
        fail(f"the loss value is right but its gradient with respect to the critics differs ({setting}): "
             "the gradient must flow through Q1(s, a) and Q2(s, a) only, the target carries none")


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


# --------------------------------------------------------------------------- actor and temperature
ACTOR_INPUTS = ("actions", "log_prob", "log_alpha")  # the inputs that require grad, in this order
LOSS_NAMES = ("actor_loss", "temperature_loss")


def call_actor(case: dict[str, Any], loss_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's two losses, and the gradient of each with respect to the
    actions, their log-probabilities and ``log_alpha`` (all requiring grad, as in SAC where the
    actions and log-probabilities carry the actor's graph)."""
    inputs = {k: case[k].clone().requires_grad_(True) for k in ACTOR_INPUTS}
    critics = critic_module(case["sizes"], case["critics"])
    out = loss_fn(case["obs"].clone(), inputs["actions"], inputs["log_prob"], critics, inputs["log_alpha"],
                  case["target_entropy"])
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return {"pair": False, "type": tensor_or_type(out)}
    record: dict[str, Any] = {"pair": True}
    for name, loss in zip(LOSS_NAMES, out):
        record[name] = tensor_or_type(loss)
        if isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad:
            grads = torch.autograd.grad(loss, list(inputs.values()), retain_graph=True, allow_unused=True)
            record[f"{name}_grads"] = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(inputs.values(), grads)]
    return record


# The mistakes in the actor's loss the judge recognizes (see _actor_loss_variant), and what the
# student reads. Checked in this order; one is named only where it differs from the reference.
ACTOR_MISTAKES: tuple[tuple[dict[str, str], str], ...] = (
    ({"q": "first"}, "the actor's loss uses the first critic only; use min(Q1, Q2)(s, a) of the fresh actions"),
    ({"q": "max"}, "the actor's loss uses the larger of the two critics; use min(Q1, Q2)(s, a)"),
    ({"q": "mean"}, "the actor's loss uses the mean of the two critics; use min(Q1, Q2)(s, a)"),
    ({"entropy": "none"}, "the entropy term is missing from the actor's loss: mean(alpha * log pi(a|s) - min Q)"),
    ({"sign": "flipped"}, "the actor's loss has the wrong sign: minimize mean(alpha * log pi(a|s) - min(Q1, Q2)(s, a))"),
    ({"alpha": "log_alpha"}, "the actor's loss weighs log pi(a|s) with log_alpha; the weight is alpha = exp(log_alpha)"),
    ({"reduce": "sum"}, "the actor's loss sums over the batch; take the mean"),
)


def _actor_loss_variant(case: dict[str, Any], critics: nn.Module, inputs: Mapping[str, torch.Tensor],
                        q: str = "min", entropy: str = "yes", sign: str = "right", alpha: str = "exp",
                        reduce: str = "mean") -> torch.Tensor:
    """The reference actor's loss of ``case`` (all defaults) or one with one mistake."""
    log_alpha = inputs["log_alpha"].detach()
    weight = log_alpha.exp() if alpha == "exp" else log_alpha
    q1, q2 = critics(case["obs"], inputs["actions"])
    q_pi = {"min": torch.min(q1, q2), "first": q1, "max": torch.max(q1, q2), "mean": 0.5 * (q1 + q2)}[q]
    per_row = (weight * inputs["log_prob"] if entropy == "yes" else torch.zeros_like(q_pi)) - q_pi
    if sign == "flipped":
        per_row = -per_row
    return per_row.sum() if reduce == "sum" else per_row.mean()


def judge_actor(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: :func:`rlcourse.algos.sac.sac_actor_and_temperature_loss` on the same
    case, both values and their gradients compared; a gradient one loss must not send (into
    ``log_alpha`` from the actor's loss, into ``log pi`` from the temperature's loss) is named."""
    tol = TOLERANCES
    message = ("actor_and_temperature_loss must return (actor_loss, temperature_loss): two scalar (0-dim) torch "
               "tensors, each the mean over the batch")
    if outputs.get("pair") is not True:
        fail(message)
    got = {}
    for name in LOSS_NAMES:
        value = outputs.get(name)
        if not isinstance(value, torch.Tensor) or value.is_complex() or value.dim() != 0:
            fail(message)
        got[name] = value.detach().float()
    critics = critic_module(case["sizes"], case["critics"])
    inputs = {k: case[k].clone().requires_grad_(True) for k in ACTOR_INPUTS}
    want = dict(zip(LOSS_NAMES, reference.sac_actor_and_temperature_loss(
        case["obs"], inputs["actions"], inputs["log_prob"], critics, inputs["log_alpha"], case["target_entropy"])))
    label = f"log_alpha={float(case['log_alpha']):.4g}, target_entropy={case['target_entropy']}"
    close = {name: bool(torch.allclose(got[name], want[name].detach(), **tol)) for name in LOSS_NAMES}
    if not any(close.values()) and torch.allclose(got["actor_loss"], want["temperature_loss"].detach(), **tol) \
            and torch.allclose(got["temperature_loss"], want["actor_loss"].detach(), **tol):
        fail("actor_and_temperature_loss returns the two losses in the wrong order: (actor_loss, temperature_loss)")

    # The actor's loss: value, then its gradients.
    if not close["actor_loss"]:
        for change, hint in ACTOR_MISTAKES:
            wrong = _actor_loss_variant(case, critics, inputs, **change).detach()
            if not torch.allclose(wrong, want["actor_loss"].detach(), **tol) and torch.allclose(got["actor_loss"], wrong, **tol):
                fail(f"{hint} ({label})")
        fail(f"the actor's loss differs from the reference ({label}): mean(alpha * log pi(a|s) - min(Q1, Q2)(s, a)) "
             "with alpha = exp(log_alpha) and the fresh actions")
    grads = outputs.get("actor_loss_grads")
    if not isinstance(grads, list) or len(grads) != len(ACTOR_INPUTS):
        fail("the actor's loss is not differentiable (was something detached or computed under torch.no_grad()?): "
             "the actor learns from its gradient")
    d_actions, d_log_prob, d_log_alpha = grads
    if not (isinstance(d_log_alpha, torch.Tensor) and not bool(d_log_alpha.any())):
        fail("the actor's loss sends gradient into log_alpha: alpha is a constant there (log_alpha.detach().exp()); "
             "only the temperature's loss may train it")
    want_grads = list(torch.autograd.grad(want["actor_loss"], [inputs["actions"], inputs["log_prob"]], retain_graph=True))
    if isinstance(d_actions, torch.Tensor) and not bool(d_actions.any()):
        fail("the actor's loss sends no gradient through the actions: the fresh (reparameterized) actions must "
             "stay attached, so that min(Q1, Q2)(s, a) can move the actor; do not detach them")
    if isinstance(d_log_prob, torch.Tensor) and not bool(d_log_prob.any()):
        fail("the actor's loss sends no gradient into log pi(a|s): the entropy term must train the actor; do not "
             "detach log_prob there")
    if not same_grads([d_actions, d_log_prob], want_grads, tol):
        fail(f"the actor's loss has the right value but its gradient differs ({label}): it must flow through the "
             "actions (into min(Q1, Q2)) and through log pi(a|s), with alpha a constant")

    # The temperature's loss: value, then its gradients.
    if not close["temperature_loss"]:
        alpha_form = -(case["log_alpha"].exp() * (case["log_prob"] + case["target_entropy"])).mean()
        if torch.allclose(got["temperature_loss"], alpha_form, **tol):
            fail(f"the temperature's loss differs from the reference ({label}): this lab's loss multiplies "
                 "log_alpha, not alpha = exp(log_alpha)")
        fail(f"the temperature's loss differs from the reference ({label}): -mean(log_alpha * (log pi(a|s) + "
             "target_entropy)); check the sign and what multiplies what")
    grads = outputs.get("temperature_loss_grads")
    if not isinstance(grads, list) or len(grads) != len(ACTOR_INPUTS):
        fail("the temperature's loss is not differentiable with respect to log_alpha (was log_alpha detached?)")
    d_actions, d_log_prob, d_log_alpha = grads
    if any(not (isinstance(gr, torch.Tensor) and not bool(gr.any())) for gr in (d_actions, d_log_prob)):
        fail("the temperature's loss sends gradients into log pi(a|s): detach log_prob there, this loss trains "
             "alpha only")
    (want_grad,) = torch.autograd.grad(want["temperature_loss"], [inputs["log_alpha"]])
    if not same_grads([d_log_alpha], [want_grad], tol):
        fail(f"the gradient of the temperature's loss with respect to log_alpha differs from the reference ({label})")


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


CRITIC_LOSS = FunctionCheck("critic_loss", critic_loss_cases, call_critic_loss, judge_critic_loss)
LOG_PROB = FunctionCheck("log_prob", log_prob_cases, call_log_prob, judge_log_prob)
ACTOR = FunctionCheck("actor_and_temperature_loss", actor_cases, call_actor, judge_actor)
POLYAK = FunctionCheck("polyak", polyak_cases, call_polyak, judge_polyak)
TRAINING = TrainingCheck("training", record_policy, judge_training)

# The hidden test cells' calls.
check_critic_loss = entry_point(CRITIC_LOSS, "Check ``critic_loss(batch, next_actions, next_log_prob, critics, "
                                             "critic_targets, gamma, alpha)``: value and gradient against the "
                                             "reference, classic mistakes named.")
check_log_prob = entry_point(LOG_PROB, "Check ``squashed_gaussian_log_prob``: values and gradients, small and large u.")
check_actor_and_temperature_loss = entry_point(ACTOR, "Check ``actor_and_temperature_loss``: both values and their "
                                                      "gradients, none into log_alpha or log pi where it must not go.")
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

