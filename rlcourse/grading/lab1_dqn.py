"""Hidden checks of lab 1 (DQN): the student's epsilon-greedy, TD targets and Huber loss, and the trained agent.

The hidden test cells of ``solutions/lab1_dqn/lab1_dqn.ipynb`` call the entry points at the end
of this module. Each check is in two halves (:mod:`rlcourse.grading.hidden`): ``call`` runs the
student's function on a case (in the grading sandbox) and returns what it produced, ``judge``
computes the reference from :mod:`rlcourse.algos.dqn` on the same case and compares (in the
grader's process). The cases are fixed ones plus fresh random ones drawn from a seed the
grader picks for each submission.

The TD targets and the Huber loss are pure functions, compared with the reference. Epsilon-greedy
is random, so it is judged by its properties: exactly greedy at ``epsilon = 0``, reproducible
from its generator and independent of the global random state, and action frequencies on
20,000 rows within about six standard deviations of the exact probabilities (a correct
function fails with a probability below 1e-8).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from rlcourse.algos import dqn as reference
from rlcourse.grading.common import (
    TOLERANCES,
    fail,
    judge_evaluated_return,
    margin_pass_mark,
    measure_evaluated_return,
    record_policy,
)
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point

LAB = "lab1_dqn"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# The grader's re-evaluation of the trained policy: as many episodes as the graded cell.
EVALUATION = {"algo": "dqn", "env_id": "CartPole-v1", "num_envs": 8, "episodes": 20}
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
# The graded training cell passes the student's three functions to DQN, so it needs none of them.
WITHHELD = {"rlcourse.algos.dqn": ("epsilon_greedy", "dqn_target", "double_dqn_target", "huber_loss")}
# A reference that does not reach this on every seed has not learned; nothing is pinned.
MIN_REFERENCE_RETURN = 100.0
# Epsilon-greedy statistics: rows per call and the allowed deviation of a frequency.
EPS_ROWS = 20_000
EPS_FREQ_TOL = 0.02  # ~6 standard deviations of a frequency near 1/2 on 20,000 rows


# --------------------------------------------------------------------------- inputs
def epsilon_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Q-values without ties and the calls of ``epsilon_greedy`` made on them.

    Each call names its ``rows`` (the first rows of the Q-values), ``epsilon``, the seed of the
    generator it gets, where set, the global seed set just before it (a correct function
    ignores it), and whether its action frequencies are judged. Fixed: 4 actions; greedy at
    epsilon 0 (also on a small batch), the same generator seed under two global seeds, another
    generator seed, then the frequencies at epsilon 1, 0.3 and 0.5. With ``seed``: 3 to 6
    actions, greedy at epsilon 0 and the frequencies at a random epsilon in [0.25, 0.9].
    """
    g = torch.Generator().manual_seed(1103)

    def call(epsilon: float, generator_seed: int, rows: int = EPS_ROWS, global_seed: int | None = None,
             frequencies: bool = False) -> dict[str, Any]:
        return {"rows": rows, "epsilon": epsilon, "generator_seed": generator_seed, "global_seed": global_seed,
                "frequencies": frequencies}

    cases = [{"q_values": torch.randn(EPS_ROWS, 4, generator=g), "calls": [
        call(0.0, 0), call(0.0, 0, rows=7),
        call(0.5, 123, global_seed=1), call(0.5, 123, global_seed=2), call(0.5, 124),
        call(1.0, 11, frequencies=True), call(0.3, 12, frequencies=True), call(0.5, 13, frequencies=True),
    ]}]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        actions = int(torch.randint(3, 7, (1,), generator=g))
        epsilon = round(0.25 + 0.65 * float(torch.rand(1, generator=g)), 4)
        generator_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        cases.append({"q_values": torch.randn(EPS_ROWS, actions, generator=g),
                      "calls": [call(0.0, generator_seed), call(epsilon, generator_seed, frequencies=True)]})
    return cases


def td_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Minibatches the hidden TD-target test uses: 64 transitions, 3 actions, about a quarter terminal.

    Time-outs are stored with ``done = 0`` (the buffer records ``terminated``), so they are
    ordinary bootstrapped rows here. The online and target Q-values disagree on the best
    next action in most rows, so a double-DQN target that picks with the wrong network differs.
    With ``seed``, one random minibatch of random size, action count and gamma follows.
    """
    g = torch.Generator().manual_seed(1101)
    B, A = 64, 3
    rewards = torch.randn(B, generator=g)
    next_q_online = torch.randn(B, A, generator=g) * 2.0
    next_q_target = torch.randn(B, A, generator=g) * 2.0 + 1.0
    dones = (torch.rand(B, generator=g) < 0.25).float()
    dones[0], dones[1] = 1.0, 0.0  # both kinds of row, whatever the draw
    cases = [{"rewards": rewards, "next_q_online": next_q_online, "next_q_target": next_q_target,
              "dones": dones, "gamma": gamma} for gamma in (0.99, 0.9, 0.5)]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        B, A = int(torch.randint(16, 257, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g))
        dones = (torch.rand(B, generator=g) < 0.25).float()
        dones[0], dones[1] = 1.0, 0.0
        cases.append({"rewards": torch.randn(B, generator=g), "next_q_online": torch.randn(B, A, generator=g) * 2.0,
                      "next_q_target": torch.randn(B, A, generator=g) * 2.0, "dones": dones,
                      "gamma": round(0.5 + 0.499 * float(torch.rand(1, generator=g)), 4)})
    return cases


def huber_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """TD errors inside and outside ``[-delta, delta]`` for several ``delta``; with ``seed``,
    one random batch with a random ``delta`` follows."""
    g = torch.Generator().manual_seed(1102)
    n = 48
    targets = torch.randn(n, generator=g) * 2.0
    # errors spread over [-4, 4]: both branches are hit for every delta below
    errors = (torch.rand(n, generator=g) - 0.5) * 8.0
    cases = [{"predictions": targets + errors, "targets": targets, "delta": delta} for delta in (1.0, 0.5, 2.0)]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(16, 257, (1,), generator=g))
        delta = round(0.3 + 2.0 * float(torch.rand(1, generator=g)), 4)
        targets = torch.randn(n, generator=g) * 2.0
        # errors over [-3 delta, 3 delta]: both branches are hit
        errors = (torch.rand(n, generator=g) - 0.5) * 6.0 * delta
        cases.append({"predictions": targets + errors, "targets": targets, "delta": delta})
    return cases


def _tensor_or_type(value: Any) -> Any:
    """A returned tensor as it is, anything else as the name of its type (so that the judge can
    tell a tensor from a numpy array or a list, which records would turn into tensors)."""
    return value if isinstance(value, torch.Tensor) else f"<{type(value).__qualname__}>"


# --------------------------------------------------------------------------- epsilon-greedy
def call_epsilon(case: dict[str, Any], epsilon_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's epsilon-greedy, once per call of the case, each on a
    fresh copy of the Q-values; the caller's global random state is left untouched."""
    q = case["q_values"]
    actions, modified = [], []
    with torch.random.fork_rng(devices=[]):
        for spec in case["calls"]:
            values = q[: spec["rows"]].clone()
            if spec["global_seed"] is not None:
                torch.manual_seed(spec["global_seed"])
            out = epsilon_fn(values, spec["epsilon"], torch.Generator().manual_seed(spec["generator_seed"]))
            actions.append(_tensor_or_type(out))
            modified.append(not torch.equal(values, q[: spec["rows"]]))
    return {"actions": actions, "modified": modified}


def _valid_actions(out: Any, modified: Any, rows: int, num_actions: int) -> torch.Tensor:
    """``out`` if it is a valid batch of actions for ``rows`` rows, else fail with the reason."""
    if modified is True:
        fail("epsilon_greedy modified q_values in place")
    if not isinstance(out, torch.Tensor):
        fail("epsilon_greedy must return a torch tensor of actions")
    if tuple(out.shape) != (rows,):
        fail(f"epsilon_greedy returned shape {tuple(out.shape)}; it must be (N,) = ({rows},), "
             "one action per row of q_values")
    if out.dtype != torch.int64:
        fail(f"epsilon_greedy returned dtype {out.dtype}; actions must be torch.int64 (long) indices")
    if bool(((out < 0) | (out >= num_actions)).any()):
        fail("epsilon_greedy returned an action index outside [0, num_actions)")
    return out


def _judge_frequencies(out: torch.Tensor, greedy: torch.Tensor, epsilon: float, num_actions: int) -> None:
    """The action frequencies of one call at ``epsilon`` against the exact probabilities."""
    is_greedy = (out == greedy).float().mean().item()
    want_greedy = 1.0 - epsilon + epsilon / num_actions
    if abs(is_greedy - want_greedy) > EPS_FREQ_TOL:
        if epsilon == 1.0:
            fail("with epsilon = 1 every action must be equally likely, the greedy one included "
                 "(the random action is drawn uniformly from all actions)")
        fail(f"with epsilon = {epsilon} the greedy action is chosen too often or too rarely: "
             "each row explores with probability epsilon, independently of the other rows, "
             "and an exploring row draws uniformly from all actions")
    if epsilon == 1.0:
        counts = torch.bincount(out, minlength=num_actions).float() / len(out)
        if bool(((counts - 1.0 / num_actions).abs() > EPS_FREQ_TOL).any()):
            fail("with epsilon = 1 the actions are not uniformly distributed")
        return
    # Among the exploring rows that did not pick the greedy action, every other action is equally likely.
    off = out != greedy
    if bool(off.any()):
        rel = (out[off] - greedy[off]) % num_actions  # 1 .. A-1, uniform if correct
        freq = torch.bincount(rel, minlength=num_actions)[1:].float() / int(off.sum())
        if bool(((freq - 1.0 / (num_actions - 1)).abs() > 3 * EPS_FREQ_TOL).any()):
            fail(f"with epsilon = {epsilon} the non-greedy actions are not equally likely")


def judge_epsilon(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: every call's actions valid, greedy at epsilon 0, drawn from the
    generator only (same generator seed, same actions; another seed, other actions), and the
    frequencies of the exploring calls right."""
    q = case["q_values"]
    num_actions = q.shape[1]
    greedy = q.argmax(dim=1)
    calls = case["calls"]
    actions, modified = outputs.get("actions"), outputs.get("modified")
    if not (isinstance(actions, list) and isinstance(modified, list) and len(actions) == len(modified) == len(calls)):
        fail("the epsilon_greedy check recorded outputs for other inputs than it was given")
    outs = [_valid_actions(out, mod, spec["rows"], num_actions) for out, mod, spec in zip(actions, modified, calls)]
    # Greedy at epsilon 0, on every batch size.
    for out, spec in zip(outs, calls):
        if spec["epsilon"] == 0.0 and not torch.equal(out, greedy[: spec["rows"]]):
            fail("with epsilon = 0 every action must be the greedy one, argmax over each row of q_values"
                 + (", also for a small batch" if spec["rows"] < len(greedy) else ""))
    # Reproducible from the generator: of two calls with the same epsilon and batch, the same
    # generator seed (under other global seeds) gives the same actions, another one other actions.
    exploring = [(out, spec) for out, spec in zip(outs, calls) if spec["epsilon"] > 0.0]
    for i, (a, spec_a) in enumerate(exploring):
        for b, spec_b in exploring[i + 1:]:
            if (spec_a["epsilon"], spec_a["rows"]) != (spec_b["epsilon"], spec_b["rows"]):
                continue
            if spec_a["generator_seed"] == spec_b["generator_seed"] and not torch.equal(a, b):
                fail("epsilon_greedy must draw its random numbers from the generator argument "
                     "(the same generator seed must give the same actions whatever the global seed)")
            if spec_a["generator_seed"] != spec_b["generator_seed"] and torch.equal(a, b):
                fail("different generator seeds gave the same actions: is the generator used at all?")
    for out, spec in exploring:
        if spec["frequencies"]:
            _judge_frequencies(out, greedy, spec["epsilon"], num_actions)


# --------------------------------------------------------------------------- TD targets
TD_INPUTS = ("rewards", "next_q_online", "next_q_target", "dones")


def call_td(case: dict[str, Any], dqn_target_fn: Callable[..., Any],
            double_dqn_target_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: both of the student's target functions on a copy of the case."""
    inputs = {k: case[k].clone() for k in TD_INPUTS}
    gamma = case["gamma"]
    plain_target = dqn_target_fn(inputs["rewards"], inputs["next_q_target"], inputs["dones"], gamma)
    double = double_dqn_target_fn(inputs["rewards"], inputs["next_q_online"], inputs["next_q_target"],
                                  inputs["dones"], gamma)
    return {"dqn_target": _tensor_or_type(plain_target), "double_dqn_target": _tensor_or_type(double),
            "modified": [k for k in TD_INPUTS if not torch.equal(inputs[k], case[k])]}


def judge_td(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: :func:`rlcourse.algos.dqn.dqn_target` and ``double_dqn_target`` on the
    same case, compared; the message names the kind of transition that is wrong."""
    tol = TOLERANCES
    gamma = case["gamma"]
    modified = outputs.get("modified")
    if isinstance(modified, list) and modified:
        fail(f"a target function modified its input {str(modified[0])!r} in place; work on new tensors")
    want = {
        "dqn_target": reference.dqn_target(case["rewards"], case["next_q_target"], case["dones"], gamma),
        "double_dqn_target": reference.double_dqn_target(case["rewards"], case["next_q_online"],
                                                         case["next_q_target"], case["dones"], gamma),
    }
    terminal = case["dones"].bool()
    for name, expected in want.items():
        got = outputs.get(name)
        if not isinstance(got, torch.Tensor):
            fail(f"{name} must return a torch tensor")
        if got.shape != expected.shape:
            fail(f"{name} returned shape {tuple(got.shape)}; it must be (B,) = {tuple(expected.shape)}, "
                 "one target per transition")
        got = got.float()
        if torch.allclose(got, expected, **tol):
            continue
        bad = ~torch.isclose(got, expected, **tol)
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


# --------------------------------------------------------------------------- Huber
def huber_parts(case: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The parts of a Huber case that are checked one after the other: the two branches on their
    own first (a more useful message), then the whole batch; as ``(label, mask)``."""
    errors = (case["predictions"] - case["targets"]).abs()
    delta = case["delta"]
    return [(" for TD errors with |error| <= delta (the quadratic branch)", errors <= delta),
            (" for TD errors with |error| > delta (the linear branch)", errors > delta),
            ("", torch.ones_like(errors, dtype=torch.bool))]


def call_huber(case: dict[str, Any], huber_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's loss on each part of the case, and its gradient with
    respect to the predictions."""
    parts = []
    for _, mask in huber_parts(case):
        pred = case["predictions"][mask].clone().requires_grad_(True)
        loss = huber_fn(pred, case["targets"][mask].clone(), case["delta"])
        part: dict[str, Any] = {"loss": _tensor_or_type(loss)}
        if isinstance(loss, torch.Tensor) and loss.dim() == 0:
            part["requires_grad"] = bool(loss.requires_grad)
            if loss.requires_grad:
                (part["grad"],) = torch.autograd.grad(loss, pred, allow_unused=True)
        parts.append(part)
    return {"parts": parts}


def judge_huber(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: :func:`rlcourse.algos.dqn.huber_loss` (value and gradient) on each
    part of the same case, compared."""
    tol = TOLERANCES
    delta = case["delta"]
    parts = outputs.get("parts")
    if not (isinstance(parts, list) and len(parts) == len(huber_parts(case))):
        fail("the huber_loss check recorded outputs for other inputs than it was given")
    for (label, mask), part in zip(huber_parts(case), parts):
        part = part if isinstance(part, dict) else {}
        loss = part.get("loss")
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            fail("huber_loss must return a scalar (0-dim) torch tensor: the mean over the batch")
        if not part.get("requires_grad"):
            fail("the loss is not differentiable with respect to predictions (was it detached or built with numpy?)")
        pred_ref = case["predictions"][mask].clone().requires_grad_(True)
        want = reference.huber_loss(pred_ref, case["targets"][mask], delta)
        loss = loss.float()
        if not torch.allclose(loss, want.detach(), **tol):
            n = int(mask.sum())
            if n > 1 and torch.allclose(loss, want.detach() * n, **tol):
                fail("huber_loss must return the mean over the batch, not the sum")
            fail(f"the loss value differs from the reference (delta={delta}){label}")
        (want_grad,) = torch.autograd.grad(want, pred_ref)
        grad = part.get("grad")
        if not (isinstance(grad, torch.Tensor) and grad.shape == want_grad.shape
                and torch.allclose(grad.float(), want_grad, **tol)):
            fail(f"the gradient with respect to predictions differs from the reference (delta={delta}){label}")


# --------------------------------------------------------------------------- training
def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """The grader loads the trained networks into its own DQN agent and evaluates it anew."""
    judge_evaluated_return(LAB, record, seed, functions="the three functions above", **EVALUATION)


EPSILON = FunctionCheck("epsilon_greedy", epsilon_cases, call_epsilon, judge_epsilon)
TD_TARGETS = FunctionCheck("td_targets", td_cases, call_td, judge_td)
HUBER = FunctionCheck("huber", huber_cases, call_huber, judge_huber)
TRAINING = TrainingCheck("training", record_policy, judge_training)

# The hidden test cells' calls.
check_epsilon_greedy = entry_point(EPSILON, "Check ``epsilon_greedy(q_values, epsilon, generator)`` by its "
                                            "properties: greedy at 0, reproducible, right frequencies.")
check_td_targets = entry_point(TD_TARGETS, "Check ``dqn_target`` and ``double_dqn_target`` against the reference.")
check_huber = entry_point(HUBER, "Check ``huber_loss``: value and gradient against the reference, branch by branch.")
check_training = entry_point(TRAINING, "Check the graded run: the trained agent, re-evaluated, reaches the pass mark.")


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: the greedy policy's mean evaluation return."""
    return measure_evaluated_return(ns)


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Half the worst reference seed's return; a reference that does not learn is refused."""
    returns = [run["measured"]["return"] for run in runs]
    if min(returns) < MIN_REFERENCE_RETURN:
        raise RuntimeError(f"the reference DQN reached only {min(returns):.1f} on some seed ({returns}); not pinning")
    return margin_pass_mark(returns, "return")
