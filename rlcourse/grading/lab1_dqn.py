"""Hidden checks of lab 1 (DQN): the student's epsilon-greedy, TD targets and Huber loss, and the trained agent.

The hidden test cells of ``solutions/lab1_dqn/lab1_dqn.ipynb`` call these functions, so the
test code a student could see in a traceback is a one-line call. The TD targets and the
Huber loss are pure functions: they are compared with the reference in
:mod:`rlcourse.algos.dqn` in the same process on the same inputs. Epsilon-greedy is random,
so it is checked by its properties: exactly greedy at ``epsilon = 0``, reproducible from its
generator and independent of the global random state, and action frequencies on 20,000 rows
within about six standard deviations of the exact probabilities (a correct function fails
with a probability below 1e-8).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from rlcourse.algos import dqn as reference
from rlcourse.grading.common import TOLERANCES, check_evaluated_return, fail, margin_pass_mark, measure_evaluated_return

LAB = "lab1_dqn"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# A reference that does not reach this on every seed has not learned; nothing is pinned.
MIN_REFERENCE_RETURN = 100.0
# Epsilon-greedy statistics: rows per call and the allowed deviation of a frequency.
EPS_ROWS = 20_000
EPS_FREQ_TOL = 0.02  # ~6 standard deviations of a frequency near 1/2 on 20,000 rows


# --------------------------------------------------------------------------- fixed inputs
def td_cases() -> list[dict[str, Any]]:
    """Minibatches the hidden TD-target test uses: 64 transitions, 3 actions, about a quarter terminal.

    Time-outs are stored with ``done = 0`` (the buffer records ``terminated``), so they are
    ordinary bootstrapped rows here. The online and target Q-values disagree on the best
    next action in most rows, so a double-DQN target that picks with the wrong network differs.
    """
    g = torch.Generator().manual_seed(1101)
    B, A = 64, 3
    rewards = torch.randn(B, generator=g)
    next_q_online = torch.randn(B, A, generator=g) * 2.0
    next_q_target = torch.randn(B, A, generator=g) * 2.0 + 1.0
    dones = (torch.rand(B, generator=g) < 0.25).float()
    dones[0], dones[1] = 1.0, 0.0  # both kinds of row, whatever the draw
    return [{"rewards": rewards, "next_q_online": next_q_online, "next_q_target": next_q_target,
             "dones": dones, "gamma": gamma} for gamma in (0.99, 0.9, 0.5)]


def huber_cases() -> list[dict[str, Any]]:
    """TD errors inside and outside ``[-delta, delta]`` for several ``delta``."""
    g = torch.Generator().manual_seed(1102)
    n = 48
    targets = torch.randn(n, generator=g) * 2.0
    # errors spread over [-4, 4]: both branches are hit for every delta below
    errors = (torch.rand(n, generator=g) - 0.5) * 8.0
    return [{"predictions": targets + errors, "targets": targets, "delta": delta} for delta in (1.0, 0.5, 2.0)]


def _epsilon_q_values(rows: int = EPS_ROWS, actions: int = 4) -> torch.Tensor:
    """Q-values whose greedy action changes from row to row (no ties)."""
    g = torch.Generator().manual_seed(1103)
    return torch.randn(rows, actions, generator=g)


# --------------------------------------------------------------------------- checks
def check_epsilon_greedy(epsilon_fn: Callable[..., Any]) -> None:
    """Check ``epsilon_fn(q_values, epsilon, generator)`` by its properties (see the module docstring)."""
    q = _epsilon_q_values()
    rows, num_actions = q.shape
    greedy = q.argmax(dim=1)
    q_before = q.clone()

    def call(epsilon: float, seed: int, values: torch.Tensor = q) -> torch.Tensor:
        out = epsilon_fn(values, epsilon, torch.Generator().manual_seed(seed))
        if not torch.equal(values, q_before[: values.shape[0]]):
            fail("epsilon_greedy modified q_values in place")
        if not isinstance(out, torch.Tensor):
            fail("epsilon_greedy must return a torch tensor of actions")
        if out.shape != (values.shape[0],):
            fail(f"epsilon_greedy returned shape {tuple(out.shape)}; it must be (N,) = ({values.shape[0]},), "
                 "one action per row of q_values")
        if out.dtype != torch.int64:
            fail(f"epsilon_greedy returned dtype {out.dtype}; actions must be torch.int64 (long) indices")
        if bool(((out < 0) | (out >= num_actions)).any()):
            fail("epsilon_greedy returned an action index outside [0, num_actions)")
        return out

    with torch.random.fork_rng(devices=[]):  # whatever the student draws, the caller's RNG is untouched
        if not torch.equal(call(0.0, 0), greedy):
            fail("with epsilon = 0 every action must be the greedy one, argmax over each row of q_values")
        small = q[:7]
        if not torch.equal(call(0.0, 0, small), greedy[:7]):
            fail("with epsilon = 0 every action must be the greedy one, also for a small batch")

        torch.manual_seed(1)
        a = call(0.5, 123)
        torch.manual_seed(2)
        b = call(0.5, 123)
        if not torch.equal(a, b):
            fail("epsilon_greedy must draw its random numbers from the generator argument "
                 "(the same generator seed must give the same actions whatever the global seed)")
        if torch.equal(a, call(0.5, 124)):
            fail("different generator seeds gave the same actions: is the generator used at all?")

        for epsilon, seed in ((1.0, 11), (0.3, 12), (0.5, 13)):
            out = call(epsilon, seed)
            is_greedy = (out == greedy).float().mean().item()
            want_greedy = 1.0 - epsilon + epsilon / num_actions
            if abs(is_greedy - want_greedy) > EPS_FREQ_TOL:
                if epsilon == 1.0:
                    fail("with epsilon = 1 every action must be equally likely, the greedy one included "
                         "(the random action is drawn uniformly from all actions)")
                fail(f"with epsilon = {epsilon} the greedy action is chosen too often or too rarely: "
                     "each row explores with probability epsilon, independently of the other rows, "
                     "and an exploring row draws uniformly from all actions")
            counts = torch.bincount(out, minlength=num_actions).float() / rows
            want_each = 1.0 / num_actions if epsilon == 1.0 else None
            if want_each is not None and bool(((counts - want_each).abs() > EPS_FREQ_TOL).any()):
                fail("with epsilon = 1 the actions are not uniformly distributed")
            # Among the exploring rows that did not pick the greedy action, every other action is equally likely.
            not_greedy = out[out != greedy]
            if epsilon < 1.0 and not_greedy.numel() > 0:
                rel = (not_greedy - greedy[out != greedy]) % num_actions  # 1 .. A-1, uniform if correct
                freq = torch.bincount(rel, minlength=num_actions)[1:].float() / not_greedy.numel()
                if bool(((freq - 1.0 / (num_actions - 1)).abs() > 3 * EPS_FREQ_TOL).any()):
                    fail(f"with epsilon = {epsilon} the non-greedy actions are not equally likely")


def check_td_targets(dqn_target_fn: Callable[..., Any], double_dqn_target_fn: Callable[..., Any]) -> None:
    """Compare both target functions with :func:`rlcourse.algos.dqn.dqn_target` and ``double_dqn_target``."""
    tol = TOLERANCES
    for case in td_cases():
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        gamma = case["gamma"]
        plain = dqn_target_fn(inputs["rewards"], inputs["next_q_target"], inputs["dones"], gamma)
        double = double_dqn_target_fn(inputs["rewards"], inputs["next_q_online"], inputs["next_q_target"],
                                      inputs["dones"], gamma)
        for k in ("rewards", "next_q_online", "next_q_target", "dones"):
            if not torch.equal(inputs[k], case[k]):
                fail(f"a target function modified its input {k!r} in place; work on new tensors")
        want_plain = reference.dqn_target(case["rewards"], case["next_q_target"], case["dones"], gamma)
        want_double = reference.double_dqn_target(case["rewards"], case["next_q_online"], case["next_q_target"],
                                                  case["dones"], gamma)
        for name, got, want in (("dqn_target", plain, want_plain), ("double_dqn_target", double, want_double)):
            if not isinstance(got, torch.Tensor):
                fail(f"{name} must return a torch tensor")
            if got.shape != want.shape:
                fail(f"{name} returned shape {tuple(got.shape)}; it must be (B,) = {tuple(want.shape)}, "
                     "one target per transition")
            got = got.detach().float()
            if torch.allclose(got, want, **tol):
                continue
            bad = ~torch.isclose(got, want, **tol)
            terminal = case["dones"].bool()
            where = []
            if bool((bad & terminal).any()):
                where.append("terminal transitions (done = 1)")
            if bool((bad & ~terminal).any()):
                where.append("non-terminal transitions (done = 0)")
            hint = ""
            if name == "double_dqn_target" and bool((bad & ~terminal).any()):
                hint = ("; the online network's Q-values pick the next action (argmax), "
                        "the target network's Q-values evaluate it")
            fail(f"{name} differs from the reference (gamma={gamma}) on {' and '.join(where)}{hint}")


def check_huber(huber_fn: Callable[..., Any]) -> None:
    """Compare ``huber_fn`` (value and gradient) with :func:`rlcourse.algos.dqn.huber_loss`."""
    tol = TOLERANCES
    for case in huber_cases():
        delta = case["delta"]
        errors = (case["predictions"] - case["targets"]).abs()
        # The two branches on their own first (a more useful message), then the whole batch.
        for label, mask in ((" for TD errors with |error| <= delta (the quadratic branch)", errors <= delta),
                            (" for TD errors with |error| > delta (the linear branch)", errors > delta),
                            ("", torch.ones_like(errors, dtype=torch.bool))):
            pred = case["predictions"][mask].clone().requires_grad_(True)
            pred_ref = case["predictions"][mask].clone().requires_grad_(True)
            targets = case["targets"][mask]
            loss = huber_fn(pred, targets.clone(), delta)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                fail("huber_loss must return a scalar (0-dim) torch tensor: the mean over the batch")
            want = reference.huber_loss(pred_ref, targets, delta)
            if not loss.requires_grad:
                fail("the loss is not differentiable with respect to predictions (was it detached or built with numpy?)")
            if not torch.allclose(loss.detach(), want.detach(), **tol):
                if pred.numel() > 1 and torch.allclose(loss.detach(), want.detach() * pred.numel(), **tol):
                    fail("huber_loss must return the mean over the batch, not the sum")
                fail(f"the loss value differs from the reference (delta={delta}){label}")
            (grad,) = torch.autograd.grad(loss, pred)
            (want_grad,) = torch.autograd.grad(want, pred_ref)
            if not torch.allclose(grad, want_grad, **tol):
                fail(f"the gradient with respect to predictions differs from the reference (delta={delta}){label}")


def check_training(ns: Mapping[str, Any]) -> None:
    """The graded cell's evaluated agent (``result``, ``agent``) reaches the pinned pass mark."""
    check_evaluated_return(LAB, ns, "the three functions above")


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: the greedy policy's mean evaluation return."""
    return measure_evaluated_return(ns)


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Half the worst reference seed's return; a reference that does not learn is refused."""
    returns = [run["measured"]["return"] for run in runs]
    if min(returns) < MIN_REFERENCE_RETURN:
        raise RuntimeError(f"the reference DQN reached only {min(returns):.1f} on some seed ({returns}); not pinning")
    return margin_pass_mark(returns, "return")
