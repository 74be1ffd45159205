"""Hidden checks of lab 2 (PPO): the student's time-out bootstrapping, GAE and clipped surrogate,
and the trained agent.

The hidden test cells of ``solutions/lab2_ppo/lab2_ppo.ipynb`` call the entry points at the end
of this module. Each check is in two halves (:mod:`rlcourse.grading.hidden`): ``call`` runs the
student's function on a case (in the grading sandbox), ``judge`` computes the reference from
:mod:`rlcourse.algos.ppo` on the same case and compares (in the grader's process). The cases are
fixed ones plus fresh random ones drawn from a seed the grader picks for each submission.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from rlcourse.algos import ppo as reference
from rlcourse.grading.common import (
    TOLERANCES,
    fail,
    judge_evaluated_return,
    margin_pass_mark,
    measure_evaluated_return,
    record_policy,
)
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point

LAB = "lab2_ppo"
PIN_SEEDS = (0, 1, 2, 3, 4)
# The grader's re-evaluation of the trained policy: as many episodes as the graded cell.
EVALUATION = {"algo": "ppo", "env_id": "CartPole-v1", "num_envs": 8, "episodes": 20}
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
WITHHELD = {"rlcourse.algos.ppo": ("bootstrap_time_outs", "compute_gae", "clipped_surrogate_loss")}


# --------------------------------------------------------------------------- inputs
# The roles of the fixed case's 8 envs in the step: the episode goes on, terminates (pole fell)
# or is cut by the time limit. Where an episode ended, the env has already reset: next_obs is the
# next episode's first observation, final_obs the one the episode ended in.
GOES_ON, TERMINATED, TIME_OUT = 0, 1, 2
FIXED_ROLES = (GOES_ON, GOES_ON, TERMINATED, TIME_OUT, TIME_OUT, TERMINATED, GOES_ON, TIME_OUT)


def _bootstrap_case(roles: torch.Tensor, num_obs: int, gamma: float, g: torch.Generator) -> dict[str, Any]:
    """One env step with the given roles; the critic is linear, ``V(o) = o @ w + b``, large
    enough that ``V(final_obs)`` and ``V(next_obs)`` are far apart."""
    n = roles.numel()
    next_obs = torch.randn(n, num_obs, generator=g)
    ended = roles != GOES_ON
    final_obs = next_obs.clone()
    # The cut-off episodes ended far from where the new ones start (a reset puts the pole upright).
    final_obs[ended] = next_obs[ended] + 2.0 + torch.rand(int(ended.sum()), num_obs, generator=g)
    return {"rewards": torch.rand(n, generator=g) + 0.5, "terminated": roles == TERMINATED,
            "time_outs": roles == TIME_OUT, "next_obs": next_obs, "final_obs": final_obs,
            "value_w": torch.rand(num_obs, generator=g) * 4.0 + 1.0, "value_b": torch.tensor(3.0),
            "gamma": gamma}


def bootstrap_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Env steps for the time-out check. Fixed: 8 envs (``FIXED_ROLES``: episodes that go on,
    terminate and time out in the same step) for several gammas, and a step in which no episode
    ends. With ``seed``, two random steps of random size, roles and gamma follow (each with at
    least one env of every role)."""
    g = torch.Generator().manual_seed(20240612)
    roles = torch.tensor(FIXED_ROLES)
    cases = [_bootstrap_case(roles, 4, gamma, g) for gamma in (0.99, 0.9, 0.5)]
    cases.append(_bootstrap_case(torch.full((6,), GOES_ON), 4, 0.99, g))
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for _ in range(2):
            n, num_obs = int(torch.randint(6, 40, (1,), generator=g)), int(torch.randint(2, 8, (1,), generator=g))
            roles = torch.randint(0, 3, (n,), generator=g)
            roles[:3] = torch.tensor([GOES_ON, TERMINATED, TIME_OUT])
            roles = roles[torch.randperm(n, generator=g)]
            gamma = round(0.8 + 0.199 * float(torch.rand(1, generator=g)), 4)
            cases.append(_bootstrap_case(roles, num_obs, gamma, g))
    return cases


def gae_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Rollouts for the GAE check. Fixed: ``(T, N) = (12, 4)`` with episode ends in the middle:

    * env 0 terminates (pole fell) at t = 3;
    * env 1 is cut by the time limit at t = 6: as in :meth:`PPO.process_env_step` the
      reward there already holds ``r + gamma * V(final_obs)``, and ``done = 1``;
    * env 2 ends twice (t = 2 and t = 9), env 3 ends on the last step;
    * several (gamma, lambda), including the lambda = 0 and lambda = 1 ends.

    With ``seed``, two random rollouts of random shape, episode ends and (gamma, lambda) follow.
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
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for _ in range(2):
            T, N = (int(x) for x in torch.randint(5, 24, (2,), generator=g))
            cases.append({"rewards": torch.randn(T, N, generator=g), "values": torch.randn(T, N, generator=g),
                          "dones": (torch.rand(T, N, generator=g) < 0.15).float(),
                          "last_values": torch.randn(N, generator=g),
                          "gamma": round(0.8 + 0.199 * float(torch.rand(1, generator=g)), 4),
                          "lam": round(float(torch.rand(1, generator=g)), 4)})
    return cases


def surrogate_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """Probability ratios inside and outside ``[1 - eps, 1 + eps]``, advantages of both signs;
    with ``seed``, one random batch with a random clip range follows."""
    g = torch.Generator().manual_seed(7)
    n = 64
    old = torch.randn(n, generator=g) * 0.5 - 1.0
    # log-ratio spread over [-0.6, 0.6]: ratios 0.55 ... 1.8, so both clip edges are hit.
    log_ratio = (torch.rand(n, generator=g) - 0.5) * 1.2
    advantages = torch.randn(n, generator=g)
    cases = [{"log_probs": old + log_ratio, "old_log_probs": old, "advantages": advantages, "clip_eps": eps}
             for eps in (0.2, 0.1, 0.3)]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(16, 256, (1,), generator=g))
        old = torch.randn(n, generator=g) - 1.0
        cases.append({"log_probs": old + (torch.rand(n, generator=g) - 0.5), "old_log_probs": old,
                      "advantages": torch.randn(n, generator=g) * 2.0,
                      "clip_eps": round(0.05 + 0.3 * float(torch.rand(1, generator=g)), 4)})
    return cases


def _as_float_tensor(value: Any, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        fail(f"{what} must be a torch tensor")


# --------------------------------------------------------------------------- time-out bootstrapping
BOOTSTRAP_INPUTS = ("rewards", "terminated", "time_outs", "next_obs", "final_obs")


def _linear_critic(case: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    w, b = case["value_w"], case["value_b"]
    return lambda obs: obs @ w + b


def call_bootstrap(case: dict[str, Any], bootstrap_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's function on a copy of one env step, with a linear critic."""
    inputs = {k: case[k].clone() for k in BOOTSTRAP_INPUTS}
    out = bootstrap_fn(*(inputs[k] for k in BOOTSTRAP_INPUTS), _linear_critic(case), case["gamma"])
    return {"out": list(out) if isinstance(out, tuple) else out,
            "modified": [k for k in BOOTSTRAP_INPUTS if not torch.equal(inputs[k], case[k])]}


def judge_bootstrap(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference on the same step, compared env group by env group so the
    message names the kind of episode end that went wrong."""
    tol = TOLERANCES
    label = f"gamma={case['gamma']}"
    if outputs.get("modified"):
        fail(f"bootstrap_time_outs modified its input {outputs['modified'][0]!r} in place; work on new tensors")
    out = outputs.get("out")
    if not (isinstance(out, list) and len(out) == 2):
        fail("bootstrap_time_outs must return a tuple (rewards, dones)")
    rewards, dones = (_as_float_tensor(x, "bootstrap_time_outs's rewards and dones") for x in out)
    critic = _linear_critic(case)
    want_rewards, want_dones = reference.bootstrap_time_outs(*(case[k] for k in BOOTSTRAP_INPUTS), critic,
                                                             case["gamma"])
    n = want_rewards.shape[0]
    if rewards.shape != (n,) or dones.shape != (n,):
        fail(f"bootstrap_time_outs returned shapes {tuple(rewards.shape)} and {tuple(dones.shape)}; "
             f"both must be (N,) = ({n},)")
    time_outs, terminated = case["time_outs"], case["terminated"]
    goes_on = ~(time_outs | terminated)
    if not torch.equal(dones[goes_on], want_dones[goes_on]) or not torch.equal(dones[terminated], want_dones[terminated]):
        fail("dones must be 1.0 exactly where an episode ended in this step (terminated or timed out), 0.0 elsewhere")
    if not torch.equal(dones[time_outs], want_dones[time_outs]):
        fail("a step cut by the time limit must be marked done too: the env has already reset, so GAE must "
             "not carry the next episode's values back into the cut one (the bootstrap replaces them)")
    if not torch.allclose(rewards[goes_on], want_rewards[goes_on], **tol):
        fail(f"rewards of envs whose episode goes on must stay as they are ({label}); bootstrap only the "
             "envs whose episode was cut by the time limit")
    if not torch.allclose(rewards[terminated], want_rewards[terminated], **tol):
        fail(f"rewards of terminated episodes must stay as they are ({label}): a terminal state has no future "
             "to bootstrap; only time-outs get + gamma * V(final observation)")
    if not torch.allclose(rewards[time_outs], want_rewards[time_outs], **tol):
        from_next = case["rewards"] + case["gamma"] * critic(case["next_obs"])
        if torch.allclose(rewards[time_outs], from_next[time_outs], **tol):
            fail(f"rewards of time-out steps were bootstrapped from next_obs ({label}): after the same-step "
                 "reset it is the first observation of the *next* episode; use final_obs, the observation "
                 "the cut episode ended in")
        fail(f"rewards of time-out steps differ from the reference ({label}): each must be "
             "r + gamma * V(final observation of the cut episode)")


# --------------------------------------------------------------------------- GAE
def call_gae(case: dict[str, Any], gae_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's GAE on a copy of the case."""
    names = ("rewards", "values", "dones", "last_values")
    inputs = {k: case[k].clone() for k in names}
    out = gae_fn(inputs["rewards"], inputs["values"], inputs["dones"], inputs["last_values"],
                 case["gamma"], case["lam"])
    return {"out": list(out) if isinstance(out, tuple) else out,
            "modified": [k for k in names if not torch.equal(inputs[k], case[k])]}


def judge_gae(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference GAE on the same case, compared."""
    tol = TOLERANCES
    label = f"gamma={case['gamma']}, lam={case['lam']}"
    if outputs.get("modified"):
        fail(f"compute_gae modified its input {outputs['modified'][0]!r} in place; work on new tensors")
    out = outputs.get("out")
    if not (isinstance(out, list) and len(out) == 2):
        fail("compute_gae must return a tuple (advantages, returns)")
    adv, ret = (_as_float_tensor(x, "compute_gae's advantages and returns") for x in out)
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


# --------------------------------------------------------------------------- clipped surrogate
def call_surrogate(case: dict[str, Any], surrogate_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's loss and its gradient with respect to ``log_probs``."""
    lp = case["log_probs"].clone().requires_grad_(True)
    loss = surrogate_fn(lp, case["old_log_probs"].clone(), case["advantages"].clone(), case["clip_eps"])
    if not isinstance(loss, torch.Tensor):
        return {"loss": loss}
    grad = None
    if loss.requires_grad and loss.dim() == 0:
        (grad,) = torch.autograd.grad(loss, lp, allow_unused=True)
    return {"loss": loss, "requires_grad": bool(loss.requires_grad), "grad": grad}


def judge_surrogate(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the reference loss and gradient on the same case, compared."""
    tol = TOLERANCES
    label = f"clip_eps={case['clip_eps']}"
    loss = outputs.get("loss")
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        fail("clipped_surrogate_loss must return a scalar (0-dim) torch tensor")
    lp_ref = case["log_probs"].clone().requires_grad_(True)
    want = reference.clipped_surrogate_loss(lp_ref, case["old_log_probs"], case["advantages"], case["clip_eps"])
    if not torch.allclose(loss.float(), want.detach(), **tol):
        fail(f"loss value differs from the reference ({label}) on ratios inside and outside the clip range")
    grad = outputs.get("grad")
    if not outputs.get("requires_grad") or grad is None:
        fail("the loss is not differentiable with respect to log_probs (was it detached or built with numpy?)")
    (want_grad,) = torch.autograd.grad(want, lp_ref)
    if not (isinstance(grad, torch.Tensor) and grad.shape == want_grad.shape
            and torch.allclose(grad.float(), want_grad, **tol)):
        fail(f"the gradient with respect to log_probs differs from the reference ({label}): check which "
             "samples the clipping should stop and the sign of the loss")


# --------------------------------------------------------------------------- training
def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """The grader loads the trained networks into its own PPO agent and evaluates it anew."""
    judge_evaluated_return(LAB, record, seed, functions="the three functions above", **EVALUATION)


BOOTSTRAP = FunctionCheck("bootstrap", bootstrap_cases, call_bootstrap, judge_bootstrap)
GAE = FunctionCheck("gae", gae_cases, call_gae, judge_gae)
SURROGATE = FunctionCheck("surrogate", surrogate_cases, call_surrogate, judge_surrogate)
TRAINING = TrainingCheck("training", record_policy, judge_training)

# The hidden test cells' calls.
check_bootstrap = entry_point(BOOTSTRAP, "Check ``bootstrap_time_outs`` on env steps with terminations and "
                              "time-outs after same-step resets.")
check_gae = entry_point(GAE, "Check ``compute_gae`` against the reference GAE on rollouts with episode ends.")
check_surrogate = entry_point(SURROGATE, "Check ``clipped_surrogate_loss``: value and gradient against the reference.")
check_training = entry_point(TRAINING, "Check the graded run: the trained policy, re-evaluated, reaches the pass mark.")


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: the deterministic policy's mean evaluation return."""
    return measure_evaluated_return(ns)


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Half the worst reference seed's return; a reference that does not learn is refused."""
    returns = [run["measured"]["return"] for run in runs]
    if min(returns) < 100:
        raise RuntimeError(f"the reference PPO reached only {min(returns):.1f} on some seed ({returns}); not pinning")
    return margin_pass_mark(returns, "return")
