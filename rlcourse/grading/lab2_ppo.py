"""Hidden checks of lab 2 (PPO): the student's GAE and clipped surrogate, and the trained agent.

The hidden test cells of ``solutions/lab2_ppo/lab2_ppo.ipynb`` call these functions, so the
test code a student could see in a traceback is a one-line call. Every check compares the
student's function with the reference in :mod:`rlcourse.algos.ppo` in the same process on the
same inputs (no stored arrays that drift with library versions).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from rlcourse.algos import ppo as reference
from rlcourse.grading.common import TOLERANCES, check_evaluated_return, fail, margin_pass_mark, measure_evaluated_return

LAB = "lab2_ppo"
PIN_SEEDS = (0, 1, 2, 3, 4)


# --------------------------------------------------------------------------- fixed inputs
def gae_cases() -> list[dict[str, Any]]:
    """Rollouts the hidden GAE test uses: ``(T, N) = (12, 4)`` with episode ends in the middle.

    * env 0 terminates (pole fell) at t = 3;
    * env 1 is cut by the time limit at t = 6: as in :meth:`PPO.process_env_step` the
      reward there already holds ``r + gamma * V(final_obs)``, and ``done = 1``;
    * env 2 ends twice (t = 2 and t = 9), env 3 ends on the last step;
    * several (gamma, lambda), including the lambda = 0 and lambda = 1 ends.
    """
    g = torch.Generator().manual_seed(20240611)
    T, N = 12, 4
    rewards = torch.rand(T, N, generator=g) * 2.0 - 0.5
    values = torch.randn(T, N, generator=g)
    last_values = torch.randn(N, generator=g)
    dones = torch.zeros(T, N)
    dones[3, 0] = 1.0
    dones[6, 1] = 1.0
    dones[2, 2] = dones[9, 2] = 1.0
    dones[T - 1, 3] = 1.0
    cases = []
    for gamma, lam in [(0.99, 0.95), (0.9, 0.0), (0.98, 1.0), (0.5, 0.7)]:
        r = rewards.clone()
        v_final = 0.8  # critic value of the observation the time-out cut off
        r[6, 1] += gamma * v_final
        cases.append({"rewards": r, "values": values.clone(), "dones": dones.clone(),
                      "last_values": last_values.clone(), "gamma": gamma, "lam": lam})
    return cases


def surrogate_cases() -> list[dict[str, Any]]:
    """Probability ratios inside and outside ``[1 - eps, 1 + eps]``, advantages of both signs."""
    g = torch.Generator().manual_seed(7)
    n = 64
    old = torch.randn(n, generator=g) * 0.5 - 1.0
    # log-ratio spread over [-0.6, 0.6]: ratios 0.55 ... 1.8, so both clip edges are hit.
    log_ratio = (torch.rand(n, generator=g) - 0.5) * 1.2
    advantages = torch.randn(n, generator=g)
    return [{"log_probs": old + log_ratio, "old_log_probs": old, "advantages": advantages, "clip_eps": eps}
            for eps in (0.2, 0.1, 0.3)]


# --------------------------------------------------------------------------- checks
def check_gae(gae_fn: Callable[..., Any]) -> None:
    """Compare ``gae_fn`` with :func:`rlcourse.algos.ppo.compute_gae` on :func:`gae_cases`."""
    tol = TOLERANCES
    for case in gae_cases():
        label = f"gamma={case['gamma']}, lam={case['lam']}"
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        out = gae_fn(inputs["rewards"], inputs["values"], inputs["dones"], inputs["last_values"],
                     case["gamma"], case["lam"])
        for k in ("rewards", "values", "dones", "last_values"):
            if not torch.equal(inputs[k], case[k]):
                fail(f"compute_gae modified its input {k!r} in place; work on new tensors")
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            fail("compute_gae must return a tuple (advantages, returns)")
        adv, ret = (torch.as_tensor(x, dtype=torch.float32) for x in out)
        want_adv, want_ret = reference.compute_gae(case["rewards"], case["values"], case["dones"],
                                                   case["last_values"], case["gamma"], case["lam"])
        if adv.shape != want_adv.shape or ret.shape != want_ret.shape:
            fail(f"compute_gae returned shapes {tuple(adv.shape)} and {tuple(ret.shape)}; "
                  f"both must be (T, N) = {tuple(want_adv.shape)}")
        if not torch.allclose(adv, want_adv, **tol):
            where = _first_bad_step(adv, want_adv, tol)
            fail(f"advantages differ from the reference ({label}) on a rollout with a termination and "
                  f"a time-out in the middle; first wrong entry at {where}")
        if not torch.allclose(ret, want_ret, **tol):
            fail(f"returns differ from the reference ({label}); returns are advantages + values")


def _first_bad_step(got: torch.Tensor, want: torch.Tensor, tol: dict[str, float]) -> str:
    bad = ~torch.isclose(got, want, **tol)
    t, n = (int(i) for i in bad.nonzero()[0])
    return f"step t={t}, env {n}"


def check_surrogate(surrogate_fn: Callable[..., Any]) -> None:
    """Compare ``surrogate_fn`` (value and gradient) with the reference clipped surrogate loss."""
    tol = TOLERANCES
    for case in surrogate_cases():
        label = f"clip_eps={case['clip_eps']}"
        lp = case["log_probs"].clone().requires_grad_(True)
        lp_ref = case["log_probs"].clone().requires_grad_(True)
        loss = surrogate_fn(lp, case["old_log_probs"].clone(), case["advantages"].clone(), case["clip_eps"])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            fail("clipped_surrogate_loss must return a scalar (0-dim) torch tensor")
        want = reference.clipped_surrogate_loss(lp_ref, case["old_log_probs"], case["advantages"], case["clip_eps"])
        if not torch.allclose(loss.detach(), want.detach(), **tol):
            fail(f"loss value differs from the reference ({label}) on ratios inside and outside the clip range")
        if not loss.requires_grad:
            fail("the loss is not differentiable with respect to log_probs (was it detached or built with numpy?)")
        (grad,) = torch.autograd.grad(loss, lp)
        (want_grad,) = torch.autograd.grad(want, lp_ref)
        if not torch.allclose(grad, want_grad, **tol):
            fail(f"the gradient with respect to log_probs differs from the reference ({label}): check which "
                  "samples the clipping should stop and the sign of the loss")


def check_training(ns: Mapping[str, Any]) -> None:
    """The graded cell's evaluated agent (``result``, ``agent``) reaches the pinned pass mark."""
    check_evaluated_return(LAB, ns, "the two functions above")


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: the deterministic policy's mean evaluation return."""
    return measure_evaluated_return(ns)


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Half the worst reference seed's return; a reference that does not learn is refused."""
    returns = [run["measured"]["return"] for run in runs]
    if min(returns) < 100:
        raise RuntimeError(f"the reference PPO reached only {min(returns):.1f} on some seed ({returns}); not pinning")
    return margin_pass_mark(returns, "return")
