"""Hidden checks of lab 1 (DQN): the student's epsilon-greedy and TD loss, and the trained agent.

The hidden test cells of ``solutions/lab1_dqn/lab1_dqn.ipynb`` call the entry points at the end
of this module. Each check is in two halves (:mod:`rlcourse.grading.hidden`): ``call`` runs the
student's function on a case (in the grading sandbox) and returns what it produced, ``judge``
computes the reference from :mod:`rlcourse.algos.dqn` on the same case and compares (in the
grader's process). The cases are fixed ones plus fresh random ones drawn from a seed the
grader picks for each submission.

The TD loss of a minibatch is run with two small Q-networks the grader builds from the case's
weights (a target network whose parameters require grad, so a target built with gradient
shows); its value and its gradient with respect to the online network are compared with the
reference, and a wrong value that equals one of the classic mistakes (``TD_MISTAKES``: the Q of
all or of the best actions, the wrong network picking or evaluating in double DQN, time-outs as
terminal, MSE instead of Huber, the sum instead of the mean, ...) is named. Epsilon-greedy
is random, so it is judged by its properties: exactly greedy at ``epsilon = 0``, reproducible
from its generator and independent of the global random state, and action frequencies on
20,000 rows within about six standard deviations of the exact probabilities (a correct
function fails with a probability below 1e-8).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rlcourse.algos import dqn as reference
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

LAB = "lab1_dqn"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# The grader's re-evaluation of the trained policy: as many episodes as the graded cell.
EVALUATION = {"algo": "dqn", "env_id": "CartPole-v1", "num_envs": 8, "episodes": 20}
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
# The graded training cell passes the student's two functions to DQN, so it needs none of them;
# td_loss's parts are withheld too (the lab asks for the whole loss).
WITHHELD = {"rlcourse.algos.dqn": ("epsilon_greedy", "td_loss", "dqn_target", "double_dqn_target", "huber_loss")}
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


# The roles of the transitions in a TD-loss minibatch: the episode goes on, it terminated (the
# pole fell: done = 1), or it was cut by the time limit (time_out = 1, done = 0: it bootstraps).
GOES_ON, TERMINATED, TIME_OUT = 0, 1, 2
TD_HIDDEN = 16  # hidden units of the checks' small Q-networks


def q_network(weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A small Q-network ``Linear -> tanh -> Linear`` with the given weights (``state_dict`` keys
    ``0.weight, 0.bias, 2.weight, 2.bias``); the checks build the online and the target network
    from a case with it, in the sandbox and in the grader alike."""
    hidden, num_obs = weights["0.weight"].shape
    net = nn.Sequential(nn.Linear(num_obs, hidden), nn.Tanh(), nn.Linear(hidden, weights["2.weight"].shape[0]))
    net.load_state_dict({k: v.clone() for k, v in weights.items()})
    return net


def _q_weights(num_obs: int, num_actions: int, g: torch.Generator, offset: float) -> dict[str, torch.Tensor]:
    # Output weights large enough that Q-values spread over several units: TD errors land on
    # both sides of delta, and the networks disagree on the best next action.
    return {"0.weight": torch.randn(TD_HIDDEN, num_obs, generator=g), "0.bias": torch.randn(TD_HIDDEN, generator=g),
            "2.weight": torch.randn(num_actions, TD_HIDDEN, generator=g) * 0.6,
            "2.bias": torch.randn(num_actions, generator=g) + offset}


def _td_case(batch_size: int, num_obs: int, num_actions: int, gamma: float, delta: float, double: bool,
             g: torch.Generator) -> dict[str, Any]:
    """One minibatch with every role (the first three rows: goes on, terminated, time-out) and
    an online and a target network with their own weights."""
    roles = torch.randint(0, 3, (batch_size,), generator=g)
    roles[:3] = torch.tensor([GOES_ON, TERMINATED, TIME_OUT])
    return {"obs": torch.randn(batch_size, num_obs, generator=g),
            "actions": torch.randint(0, num_actions, (batch_size,), generator=g),
            "rewards": torch.rand(batch_size, generator=g) * 2.0 - 0.5,
            "next_obs": torch.randn(batch_size, num_obs, generator=g),
            "dones": (roles == TERMINATED).float(), "time_outs": (roles == TIME_OUT).float(),
            "online": _q_weights(num_obs, num_actions, g, 0.0), "target": _q_weights(num_obs, num_actions, g, 1.0),
            "gamma": gamma, "delta": delta, "double": double}


def td_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Minibatches for the TD-loss check. Fixed: 48 transitions of 4-dim observations, 3
    actions, about a third each going on, terminated and timed out, for (gamma, delta, double) =
    (0.99, 1, double), (0.9, 2, double), (0.5, 0.5, double) and (0.99, 1, plain DQN). With
    ``seed``, two random minibatches of random size, action count, gamma, delta and target kind
    follow (one of each kind)."""
    g = torch.Generator().manual_seed(1101)
    cases = [_td_case(48, 4, 3, gamma, delta, double, g)
             for gamma, delta, double in ((0.99, 1.0, True), (0.9, 2.0, True), (0.5, 0.5, True), (0.99, 1.0, False))]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        first_double = bool(torch.rand(1, generator=g) < 0.5)
        for double in (first_double, not first_double):
            batch_size = int(torch.randint(16, 129, (1,), generator=g))
            num_obs, num_actions = int(torch.randint(2, 9, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g))
            gamma = round(0.8 + 0.199 * float(torch.rand(1, generator=g)), 4)
            delta = round(0.5 + 1.5 * float(torch.rand(1, generator=g)), 4)
            cases.append(_td_case(batch_size, num_obs, num_actions, gamma, delta, double, g))
    return cases


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
            actions.append(tensor_or_type(out))
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


# --------------------------------------------------------------------------- TD loss
BATCH_FIELDS = ("obs", "actions", "rewards", "next_obs", "dones", "time_outs")


def call_td_loss(case: dict[str, Any], td_loss_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's loss on a copy of the minibatch, with the case's two
    networks (the target network's parameters require grad here, so a target built with
    gradient shows), and the loss's gradients with respect to both networks' parameters."""
    batch = ReplayBatch(**{k: case[k].clone() for k in BATCH_FIELDS})
    online, target = q_network(case["online"]), q_network(case["target"])
    loss = td_loss_fn(batch, online, target, case["gamma"], case["delta"], case["double"])
    return record_loss(loss, batch, case, BATCH_FIELDS, online.parameters(), target.parameters(), "online_grads")


# The mistakes the judge recognizes, each a change to the reference (see _td_loss_variant), and
# what the student reads. Checked in this order; one is named only where it differs from the
# reference on the case.
TD_MISTAKES: tuple[tuple[str, dict[str, str], str], ...] = (
    ("q_of_best_action", {"q": "max"},
     "Q(s, a) must be the online network's value of the action taken in each transition "
     "(batch.actions), not of the best action: gather along the action dimension (dim 1)"),
    ("gather_wrong_dim", {"q": "gather0"},
     "Q(s, a) picks the wrong entries of q_network(batch.obs): gather along the action dimension "
     "(dim 1) with index batch.actions[:, None], then squeeze"),
    ("q_all_pairs", {"q": "index_columns"},
     "Q(s, a) is a (B, B) table: q[:, batch.actions] takes every row's value of every sampled action; "
     "pick one entry per row (gather along dim 1, or q[torch.arange(B), batch.actions])"),
    ("select_with_target", {"select": "target"},
     "in double DQN the online network picks the next action (argmax over q_network(next_obs)); "
     "yours picks it with the target network (that is the plain DQN target)"),
    ("evaluate_with_online", {"evaluate": "online"},
     "in double DQN the target network evaluates the next action the online network picked; "
     "yours evaluates it with the online network"),
    ("ignores_double_flag", {"select": "online"},
     "with double=False the target is the plain DQN one: the target network both picks and "
     "evaluates the next action (max over target_network(next_obs))"),
    ("time_outs_terminal", {"mask": "dones_or_time_outs"},
     "time-outs are treated as terminal: only batch.dones (the episode terminated) stops the bootstrap; "
     "a time-out row (batch.time_outs = 1) bootstraps from next_obs like any other"),
    ("ignores_dones", {"mask": "none"},
     "terminal transitions (batch.dones = 1) bootstrap: their target is the reward alone, multiply "
     "the bootstrap by (1 - dones)"),
    ("mse", {"loss": "half_mse"},
     "the loss is the squared error, not the Huber loss: quadratic only for |TD error| <= delta, linear beyond"),
    ("mse_no_half", {"loss": "mse"},
     "the loss is the squared error, not the Huber loss: quadratic only for |TD error| <= delta, linear beyond"),
    ("huber_ignores_delta", {"loss": "huber_delta_1"},
     "the Huber loss must turn linear at the delta argument, not at 1"),
    ("sum", {"loss": "huber_sum"},
     "td_loss must return the mean of the Huber loss over the batch, not the sum"),
    ("no_gamma", {"gamma": "one"},
     "the bootstrap must be discounted by gamma"),
)


def _td_loss_variant(case: dict[str, Any], online: nn.Module, target: nn.Module, q: str = "gather",
                     select: str | None = None, evaluate: str = "target", mask: str = "dones",
                     loss: str = "huber", gamma: str = "gamma") -> torch.Tensor:
    """The reference TD loss of ``case`` (all defaults; ``select`` follows ``case["double"]``),
    or the loss with one mistake (one argument changed), differentiable w.r.t. ``online``."""
    obs, next_obs, actions = case["obs"], case["next_obs"], case["actions"]
    g = 1.0 if gamma == "one" else case["gamma"]
    select = select or ("online" if case["double"] else "target")
    nets = {"online": online, "target": target}
    with torch.no_grad():
        best = nets[select](next_obs).argmax(dim=1, keepdim=True)
        next_q = nets[evaluate](next_obs).gather(1, best).squeeze(1)
        stop = {"dones": case["dones"], "dones_or_time_outs": torch.clamp(case["dones"] + case["time_outs"], max=1.0),
                "none": torch.zeros_like(case["dones"])}[mask]
        y = case["rewards"] + g * (1.0 - stop) * next_q
    q_all = online(obs)
    if q == "gather":
        q_sa = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
    elif q == "max":
        q_sa = q_all.max(dim=1).values
    elif q == "gather0":
        q_sa = q_all.gather(0, actions.unsqueeze(1)).squeeze(1)
    else:  # index_columns: (B, B), broadcast against the (B,) targets
        q_sa = q_all[:, actions]
    y = y.expand_as(q_sa)
    delta = case["delta"]
    if loss == "huber":
        return F.huber_loss(q_sa, y, delta=delta)
    if loss == "huber_sum":
        return F.huber_loss(q_sa, y, delta=delta, reduction="sum")
    if loss == "huber_delta_1":
        return F.huber_loss(q_sa, y, delta=1.0)
    if loss == "half_mse":
        return 0.5 * F.mse_loss(q_sa, y)
    return F.mse_loss(q_sa, y)


def judge_td_loss(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: :func:`rlcourse.algos.dqn.td_loss` on the same minibatch and networks,
    value and gradient compared; a wrong value that equals one of the ``TD_MISTAKES`` is named."""
    tol = TOLERANCES
    loss, grads = judge_loss_record(
        "td_loss", outputs, "online_grads", returns="the mean loss over the batch",
        scalar="the mean Huber loss over the batch",
        not_differentiable="the loss is not differentiable with respect to the online network's parameters: "
                           "Q(s, a) must be computed with gradient (only the target is computed without)",
        target_gradient="gradient flows into the target network: compute the TD target under torch.no_grad() (or "
                        "detach it); the loss may only move the online network through Q(s, a)")
    online, target = q_network(case["online"]), q_network(case["target"])
    batch = ReplayBatch(**{k: case[k] for k in BATCH_FIELDS})
    want = reference.td_loss(batch, online, target, case["gamma"], case["delta"], case["double"])
    kind = "double DQN" if case["double"] else "plain DQN"
    setting = f"gamma={case['gamma']}, delta={case['delta']}, {kind}"
    loss = loss.float()
    if not torch.allclose(loss, want.detach(), **tol):
        for _, change, message in TD_MISTAKES:
            if "select" in change and (change["select"] == "online") == case["double"]:
                continue  # the change is the reference of this kind of target
            if "evaluate" in change and not case["double"]:
                continue
            wrong = _td_loss_variant(case, online, target, **change).detach()
            if torch.allclose(wrong, want.detach(), **tol):
                continue  # not told apart on this case
            if torch.allclose(loss, wrong, **tol):
                fail(f"{message} ({setting})")
        fail(f"the loss value differs from the reference ({setting}): Q(s, a) of the taken actions, the target "
             "r + gamma * (1 - dones) * Q_target(s', a') without gradient, and the mean Huber loss")
    if not same_grads(grads, torch.autograd.grad(want, list(online.parameters())), tol):
        fail(f"the loss value is right but its gradient with respect to the online network differs ({setting}): "
             "the gradient must flow through Q(s, a) only, the target carries none")


# --------------------------------------------------------------------------- training
def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """The grader loads the trained networks into its own DQN agent and evaluates it anew."""
    judge_evaluated_return(LAB, record, seed, functions="the two functions above", **EVALUATION)


EPSILON = FunctionCheck("epsilon_greedy", epsilon_cases, call_epsilon, judge_epsilon)
TD_LOSS = FunctionCheck("td_loss", td_cases, call_td_loss, judge_td_loss)
TRAINING = TrainingCheck("training", record_policy, judge_training)

# The hidden test cells' calls.
check_epsilon_greedy = entry_point(EPSILON, "Check ``epsilon_greedy(q_values, epsilon, generator)`` by its "
                                            "properties: greedy at 0, reproducible, right frequencies.")
check_td_loss = entry_point(TD_LOSS, "Check ``td_loss(batch, q_network, target_network, gamma, delta, double)``: "
                                     "value and gradient against the reference, classic mistakes named.")
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
