"""Hidden checks of lab 2 (PPO): the student's GAE and clipped surrogate, and the trained agent.

The hidden test cells of ``solutions/lab2_ppo/lab2_ppo.ipynb`` call these functions, so the
test code a student could see in a traceback is a one-line call. Every check compares the
student's function with the reference in :mod:`rlcourse.algos.ppo` *in the same process on
the same inputs* (no stored arrays that drift with library versions), with the tolerances
stored in ``autograder/pinned_metrics.json``. Failure messages say what is wrong, never the
expected numbers: they end up in the student's feedback.

The training protocol (:data:`PROTOCOL`) is shared by the notebook's graded training cell
and by ``rlcourse pin lab2_ppo``, which measures the reference solution under it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from rlcourse.algos import ppo as reference

LAB = "lab2_ppo"
PINS_ENV_VAR = "RLCOURSE_PINNED_METRICS"
PINS_RELPATH = Path("autograder") / "pinned_metrics.json"

# The graded training run. The notebook's training cell spells these values out (students
# should see the real API call); tests/test_grading_lab2.py checks the two agree.
PROTOCOL: dict[str, Any] = {
    "env": "CartPole-v1",
    "num_envs": 8,
    "total_steps": 100_000,
    "seed": 0,  # training seed of the graded run
    "eval_episodes": 20,
    "eval_seed": 10_000,  # evaluation env seed = eval_seed + training seed
    "metric": "episode_return_mean",
}

# Default tolerances (the pinned file can override them).
DEFAULT_TOLERANCES = {"atol": 1e-5, "rtol": 1e-4}


# --------------------------------------------------------------------------- pins
def find_pins(start: str | os.PathLike | None = None) -> Path:
    """Locate ``autograder/pinned_metrics.json``.

    Order: the ``RLCOURSE_PINNED_METRICS`` environment variable; then every folder from
    ``start`` (default: the working directory) up to the file system root, so it is found
    from ``labs/<lab>/``, from ``autograder/autograded/<student>/<lab>/`` and from a copy
    of the course; finally the repository this package was installed from.
    """
    env_path = os.environ.get(PINS_ENV_VAR)
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise FileNotFoundError(f"{PINS_ENV_VAR}={env_path} does not point at a file")
        return path
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PINS_RELPATH).is_file():
            return folder / PINS_RELPATH
    package_repo = Path(__file__).resolve().parents[2]
    if (package_repo / PINS_RELPATH).is_file():
        return package_repo / PINS_RELPATH
    raise FileNotFoundError(
        f"no {PINS_RELPATH} above {here}; run `rlcourse pin {LAB}` or set {PINS_ENV_VAR}"
    )


def load_pins(lab: str = LAB, start: str | os.PathLike | None = None) -> dict[str, Any]:
    """The pinned entry of ``lab`` (raises a clear error if the file has none)."""
    path = find_pins(start)
    data = json.loads(path.read_text())
    if lab not in data:
        raise KeyError(f"{path} has no entry for {lab!r}; run `rlcourse pin {lab}`")
    return data[lab]


def _tolerances(pins: dict[str, Any] | None, key: str) -> dict[str, float]:
    tol = dict(DEFAULT_TOLERANCES)
    if pins is not None:
        tol.update(pins.get(key, {}).get("tolerance", {}))
    return tol


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
def _fail(message: str) -> None:
    raise AssertionError(message)


def check_gae(gae_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``gae_fn`` with :func:`rlcourse.algos.ppo.compute_gae` on :func:`gae_cases`."""
    tol = _tolerances(pins, "gae")
    for case in gae_cases():
        label = f"gamma={case['gamma']}, lam={case['lam']}"
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        out = gae_fn(inputs["rewards"], inputs["values"], inputs["dones"], inputs["last_values"],
                     case["gamma"], case["lam"])
        for k in ("rewards", "values", "dones", "last_values"):
            if not torch.equal(inputs[k], case[k]):
                _fail(f"compute_gae modified its input {k!r} in place; work on new tensors")
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            _fail("compute_gae must return a tuple (advantages, returns)")
        adv, ret = (torch.as_tensor(x, dtype=torch.float32) for x in out)
        want_adv, want_ret = reference.compute_gae(case["rewards"], case["values"], case["dones"],
                                                   case["last_values"], case["gamma"], case["lam"])
        if adv.shape != want_adv.shape or ret.shape != want_ret.shape:
            _fail(f"compute_gae returned shapes {tuple(adv.shape)} and {tuple(ret.shape)}; "
                  f"both must be (T, N) = {tuple(want_adv.shape)}")
        if not torch.allclose(adv, want_adv, **tol):
            where = _first_bad_step(adv, want_adv, tol)
            _fail(f"advantages differ from the reference ({label}) on a rollout with a termination and "
                  f"a time-out in the middle; first wrong entry at {where}")
        if not torch.allclose(ret, want_ret, **tol):
            _fail(f"returns differ from the reference ({label}); returns are advantages + values")


def _first_bad_step(got: torch.Tensor, want: torch.Tensor, tol: dict[str, float]) -> str:
    bad = ~torch.isclose(got, want, **tol)
    t, n = (int(i) for i in bad.nonzero()[0])
    return f"step t={t}, env {n}"


def check_surrogate(surrogate_fn: Callable[..., Any], pins: dict[str, Any] | None = None) -> None:
    """Compare ``surrogate_fn`` (value and gradient) with the reference clipped surrogate loss."""
    tol = _tolerances(pins, "surrogate")
    for case in surrogate_cases():
        label = f"clip_eps={case['clip_eps']}"
        lp = case["log_probs"].clone().requires_grad_(True)
        lp_ref = case["log_probs"].clone().requires_grad_(True)
        loss = surrogate_fn(lp, case["old_log_probs"].clone(), case["advantages"].clone(), case["clip_eps"])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            _fail("clipped_surrogate_loss must return a scalar (0-dim) torch tensor")
        want = reference.clipped_surrogate_loss(lp_ref, case["old_log_probs"], case["advantages"], case["clip_eps"])
        if not torch.allclose(loss.detach(), want.detach(), **tol):
            _fail(f"loss value differs from the reference ({label}) on ratios inside and outside the clip range")
        if not loss.requires_grad:
            _fail("the loss is not differentiable with respect to log_probs (was it detached or built with numpy?)")
        (grad,) = torch.autograd.grad(loss, lp)
        (want_grad,) = torch.autograd.grad(want, lp_ref)
        if not torch.allclose(grad, want_grad, **tol):
            _fail(f"the gradient with respect to log_probs differs from the reference ({label}): check which "
                  "samples the clipping should stop and the sign of the loss")


def check_evaluated_return(result: dict[str, Any], training: dict[str, Any], lab: str,
                           protocol_used: dict[str, Any], functions: str) -> None:
    """The shared body of the labs' ``check_training``: protocol, then the pinned pass mark.

    Args:
        result: the dict returned by :func:`rlcourse.evaluate`.
        training: the ``training`` entry of the lab's pins (``protocol``, ``threshold``).
        lab: the lab id, for the instructor's message.
        protocol_used: the constants the training cell used (``total_steps``, ``seed``...);
            they must equal the pinned protocol (tuples compare as the lists JSON stores),
            otherwise the threshold means nothing.
        functions: what the student should re-check, e.g. ``"the two functions above"``.
    """
    for key, value in protocol_used.items():
        pinned = training["protocol"].get(key)
        value = json.loads(json.dumps(value))  # tuples -> lists, as in pinned_metrics.json
        if pinned != value:
            raise RuntimeError(
                f"the training cell uses {key}={value!r} but the pinned metrics were measured with "
                f"{pinned!r}; the instructor must re-run `rlcourse pin {lab}`"
            )
    metric = training["protocol"]["metric"]
    if metric not in result:
        _fail(f"the evaluation result has no {metric!r}; pass the dict returned by rlcourse.evaluate")
    if int(result.get("episodes", 0)) < int(training["protocol"]["eval_episodes"]):
        _fail("the agent was evaluated on fewer episodes than the protocol asks for")
    value = float(result[metric])
    if not (math.isfinite(value) and value >= float(training["threshold"])):
        _fail("the trained agent's evaluation return is below the pinned threshold for this lab "
              f"(see the header); check {functions}")


def check_training(result: dict[str, Any], pins: dict[str, Any] | None = None, **protocol_used: Any) -> None:
    """The evaluated agent of the graded training cell reaches the pinned threshold.

    Args:
        result: the dict returned by :func:`rlcourse.evaluate`.
        pins: the lab's pinned entry (default: :func:`load_pins`).
        **protocol_used: the constants the training cell used (``total_steps``, ``seed``...);
            they must equal the pinned protocol, otherwise the threshold means nothing.
    """
    pins = load_pins() if pins is None else pins
    check_evaluated_return(result, pins["training"], LAB, protocol_used, "the two functions above")


# --------------------------------------------------------------------------- reference run
def train_and_evaluate(
    gae_fn: Callable[..., Any] = reference.compute_gae,
    surrogate_fn: Callable[..., Any] = reference.clipped_surrogate_loss,
    seed: int | None = None,
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train PPO exactly as the notebook's graded cell does and evaluate it (used by the pins)."""
    from rlcourse.grading.pins import train_and_evaluate_agent

    p = {**PROTOCOL, **(protocol or {})}
    seed = p["seed"] if seed is None else int(seed)
    return train_and_evaluate_agent(
        p, seed, lambda env, s: reference.PPO(env, seed=s, gae_fn=gae_fn, surrogate_fn=surrogate_fn), eval_envs=8
    )


def agent_config() -> dict[str, Any]:
    """Every PPO hyperparameter of the graded run (the CartPole preset).

    Read by :func:`rlcourse.grading.pins.agent_config` (stored with the pins, checked by grade).
    """
    from rlcourse.grading.pins import built_config

    return built_config(PROTOCOL["env"], PROTOCOL["num_envs"], lambda env: reference.PPO(env, seed=0))
