"""Hidden checks of lab 3 (reward shaping on the Ant): the student's five reward terms and a short training.

The hidden test cells of ``solutions/lab3_reward_shaping/lab3_reward_shaping.ipynb`` call
these functions. Each term is compared with the reference term of
:mod:`rlcourse.envs.locomotion.ant` *live*, in the same process, on the same fixed batch of
robot states (:func:`state_batch`: a real ``AntEnv`` whose 24 robots were put into chosen
poses and velocities: upright, tilted, upside down, fallen, timed out, moving backward...).
Failure messages say which term and what kind of state is wrong, never the expected numbers:
they end up in the student's feedback.

The training protocol (:data:`PROTOCOL`) is shared by the notebook's graded training cell
and by ``rlcourse pin lab3_reward_shaping`` (:func:`pin`), which trains the reference terms
on several seeds and sets the pass mark well below the worst of them.

The graded metric is the forward speed of the *training* robots (exploration noise included)
over the last iterations, measured from their torso positions. After 100 iterations the
deterministic policy's walk is bimodal (measured: 0.05 m to 6.2 m in 10 s over six seeds of
the reference, depending on whether a gait has "taken off" yet), while the training speed is
not (0.42 to 0.66 m/s on the same six seeds).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlcourse.grading import lab2 as _lab2  # find_pins / load_pins are shared

LAB = "lab3_reward_shaping"
PINS_ENV_VAR = _lab2.PINS_ENV_VAR

# The five terms of the lab, in the order of the notebook: student function name -> reference.
TERM_NAMES = ("forward_velocity", "alive_bonus", "energy_penalty", "orientation_penalty", "fall_penalty")
REFERENCE_NAMES = {
    "forward_velocity": "forward_velocity",
    "alive_bonus": "is_alive",
    "energy_penalty": "energy",
    "orientation_penalty": "flat_orientation_l2",
    "fall_penalty": "is_terminated",
}
# Graded test cells and the terms each one checks (a cell gives all its points or none).
GRADED_GROUPS = {
    "test_task_terms": ("forward_velocity", "alive_bonus"),
    "test_cost_terms": ("energy_penalty", "orientation_penalty"),
    "test_fall_term": ("fall_penalty",),
}

# The graded training run. The notebook's training cell spells these values out;
# tests/test_grading_lab3.py checks that the two agree.
PROTOCOL: dict[str, Any] = {
    "env": "Ant",
    "num_envs": 128,
    "iterations": 100,          # PPO iterations of 16 steps per env (Ant preset)
    "total_steps": 204_800,     # = iterations * 16 * num_envs
    "seed": 0,
    "weights": {
        "forward_velocity": 2.0,
        "alive_bonus": 0.5,
        "energy_penalty": -0.05,
        "orientation_penalty": -0.5,
        "fall_penalty": -2.0,
    },
    "speed_iterations": 20,     # the metric averages the last 20 iterations of training
    "metric": "forward_speed",  # m/s along +x of the training robots (exploration noise included)
    # Reported, not graded: the deterministic policy's walk in 10-s episodes.
    "eval_episodes": 32,
    "eval_episode_length": 200,
    "eval_seed": 2000,
}

DEFAULT_TOLERANCES = {"atol": 1e-5, "rtol": 1e-4}
SEEDS = (0, 1, 2, 3, 4, 5)
MARGIN = 0.5


# --------------------------------------------------------------------------- pins
def find_pins(start: str | os.PathLike | None = None) -> Path:
    """``autograder/pinned_metrics.json`` (see :func:`rlcourse.grading.lab2.find_pins`)."""
    return _lab2.find_pins(start)


def load_pins(lab: str = LAB, start: str | os.PathLike | None = None) -> dict[str, Any]:
    return _lab2.load_pins(lab, start)


def _tolerances(pins: Mapping[str, Any] | None) -> dict[str, float]:
    tol = dict(DEFAULT_TOLERANCES)
    if pins is not None:
        tol.update(pins.get("terms", {}).get("tolerance", {}))
    return tol


def reference_terms() -> dict[str, Callable[..., torch.Tensor]]:
    """``{lab term name: reference function}`` from :mod:`rlcourse.envs.locomotion.ant`."""
    from rlcourse.envs.locomotion import ant

    return {name: getattr(ant, ref) for name, ref in REFERENCE_NAMES.items()}


# --------------------------------------------------------------------------- the fixed batch
BATCH_SIZE = 24


def _quat(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def state_batch() -> tuple[Any, list[str]]:
    """A real ``AntEnv`` with 24 robots in fixed states, and a label for each robot.

    The states cover what the terms must handle: level and tilted torsos (up to upside
    down) with any heading, forward, backward and sideways motion, robots below the fall
    height (``terminated``), robots whose episode hit the time limit (``time_outs``, not a
    fall), joint velocities of both signs and actions at and inside the limits. Only NumPy
    and torch random draws with fixed seeds are involved, so the batch is the same on
    every machine; the expected values are always recomputed with the reference terms.
    """
    from rlcourse.envs.locomotion.ant import AntEnv

    n = BATCH_SIZE
    env = AntEnv(num_envs=n, seed=0, nthread=1)
    env.reset()
    rng = np.random.default_rng(31)
    nv = env.sim.nv
    qpos = np.tile(env.init_qpos, (n, 1))
    qvel = np.zeros((n, nv))
    tilts = [0.0, 0.0, 0.0, 0.25, 0.5, 0.8, 1.2, math.pi / 2, 2.0, 2.6, math.pi, 0.1]
    heights = [0.55, 0.62, 0.48, 0.40, 0.33, 0.30, 0.25, 0.20]
    labels = []
    lo, hi = env._dof_limits_np
    for i in range(n):
        tilt = tilts[i % len(tilts)]
        yaw = rng.uniform(-math.pi, math.pi) if i % 3 else 0.0
        tilt_axis = np.array([math.cos(rng.uniform(0, 2 * math.pi)), math.sin(rng.uniform(0, 2 * math.pi)), 0.0])
        q = _quat_mul(_quat(np.array([0.0, 0.0, 1.0]), yaw), _quat(tilt_axis, tilt) if tilt else np.array([1.0, 0, 0, 0]))
        qpos[i, 0:2] = rng.uniform(-3.0, 3.0, size=2)
        qpos[i, 2] = heights[i % len(heights)]
        qpos[i, 3:7] = q / np.linalg.norm(q)
        qpos[i, env.act_qpos_idx] = rng.uniform(lo, hi)
        speed = [1.5, -1.0, 0.3, 3.0, 0.0, -2.5][i % 6]
        qvel[i, 0:3] = [speed, rng.uniform(-1.0, 1.0), rng.uniform(-0.8, 0.8)]
        qvel[i, 3:6] = rng.uniform(-2.0, 2.0, size=3)
        qvel[i, env.act_dof_idx] = rng.uniform(-12.0, 12.0, size=len(env.act_dof_idx))
        labels.append(f"torso tilted {math.degrees(tilt):.0f} deg, height {qpos[i, 2]:.2f} m, "
                      f"moving {'forward' if speed > 0 else 'backward' if speed < 0 else 'sideways'}")
    env.sim.set_state(np.arange(n), qpos, qvel)
    env._refresh()
    gen = torch.Generator().manual_seed(5)
    actions = torch.rand(n, env.num_actions, generator=gen) * 2.4 - 1.2
    env.actions = actions.clamp(-1.0, 1.0)          # as the env clips them: some exactly at the limits
    env.prev_actions = torch.rand(n, env.num_actions, generator=gen) * 2 - 1
    env.terminated = env._get_terminated()
    time_outs = torch.zeros(n, dtype=torch.bool)
    time_outs[[1, 2, 10, 17]] = True
    env.time_outs = time_outs & ~env.terminated
    env.episode_length[:] = torch.where(env.time_outs, env.max_episode_length, 100)
    for i in range(n):
        if bool(env.terminated[i]):
            labels[i] += ", fell (terminated)"
        if bool(env.time_outs[i]):
            labels[i] += ", episode cut by the time limit (not a fall)"
    return env, labels


def _state_snapshot(env: Any) -> list[torch.Tensor]:
    return [t.clone() for t in (env._packed, env.actions, env.prev_actions, env.terminated, env.time_outs)]


# --------------------------------------------------------------------------- checks
def _fail(message: str) -> None:
    raise AssertionError(message)


def check_term(name: str, fn: Callable[..., Any], pins: Mapping[str, Any] | None = None,
               batch: tuple[Any, list[str]] | None = None) -> None:
    """Compare the student's term ``name`` with its reference on :func:`state_batch`."""
    if name not in REFERENCE_NAMES:
        raise KeyError(f"unknown term {name!r}; terms: {', '.join(TERM_NAMES)}")
    if not callable(fn):
        _fail(f"{name} must be a function of the env, got {type(fn).__name__}")
    tol = _tolerances(pins)
    env, labels = batch if batch is not None else state_batch()
    want = reference_terms()[name](env).detach().to(torch.float32)
    before = _state_snapshot(env)
    try:
        got = fn(env)
    finally:
        after = _state_snapshot(env)
        changed = any(not torch.equal(a, b) for a, b in zip(before, after))
        if changed:  # restore, so the next check sees the fixed batch
            env._packed.copy_(before[0])
            env.actions, env.prev_actions, env.terminated, env.time_outs = before[1:]
    if changed:
        _fail(f"{name} modified the env's state in place (e.g. abs_() or +=); compute on new tensors")
    if not isinstance(got, torch.Tensor):
        _fail(f"{name} must return a torch tensor, got {type(got).__name__}")
    if tuple(got.shape) != (env.num_envs,):
        _fail(f"{name} must return one value per robot, shape (num_envs,) = ({env.num_envs},); "
              f"got shape {tuple(got.shape)}")
    if not got.is_floating_point():
        _fail(f"{name} must return a float tensor (a bool tensor needs .float())")
    got = got.detach().to(torch.float32)
    if not torch.isfinite(got).all():
        _fail(f"{name} returned NaN or inf on the fixed batch of robot states")
    close = torch.isclose(got, want, **tol)
    if not bool(close.all()):
        bad = (~close).nonzero().flatten().tolist()
        if bool((torch.isclose(-got, want, **tol)).all()):
            hint = " (only the sign differs: the term returns the quantity itself, the weight carries the sign)"
        else:
            hint = ""
        _fail(f"{name} differs from the reference on {len(bad)} of {env.num_envs} robots of the fixed batch; "
              f"first: robot {bad[0]} ({labels[bad[0]]}){hint}")


def check_terms(functions: Mapping[str, Callable[..., Any]], pins: Mapping[str, Any] | None = None) -> None:
    """:func:`check_term` for each ``{name: function}`` (one hidden test cell checks a group)."""
    batch = state_batch()
    try:
        for name, fn in functions.items():
            check_term(name, fn, pins, batch)
    finally:
        batch[0].close()


def check_training(result: Mapping[str, Any], pins: Mapping[str, Any] | None = None, **protocol_used: Any) -> None:
    """The robots of the graded training cell moved forward at least as fast as the pinned pass mark.

    Args:
        result: ``{"forward_speed": m/s, "iterations": n}`` from the training cell.
        pins: the lab's pinned entry (default: :func:`load_pins`).
        **protocol_used: the constants the training cell used; they must equal the pinned
            protocol, otherwise the pass mark means nothing.
    """
    pins = load_pins() if pins is None else pins
    training = pins["training"]
    for key, value in protocol_used.items():
        if training["protocol"].get(key) != value:
            raise RuntimeError(
                f"the training cell uses {key}={value!r} but the pinned metrics were measured with "
                f"{training['protocol'].get(key)!r}; the instructor must re-run `rlcourse pin {LAB}`"
            )
    metric = training["protocol"]["metric"]
    if metric not in result:
        _fail(f"the evaluation result has no {metric!r}")
    if int(result.get("iterations", 0)) < int(training["protocol"]["iterations"]):
        _fail("the training ran fewer PPO iterations than the protocol asks for")
    value = float(result[metric])
    if not math.isfinite(value) or not value >= float(training["threshold"]):
        _fail("the training robots' forward speed is below the pinned pass mark of this lab "
              "(see the header); check your five reward terms above")


# --------------------------------------------------------------------------- the graded run
def lab_rewards(funcs: Mapping[str, Callable[..., Any]], weights: Mapping[str, float]) -> dict[str, Any]:
    """``rewards=`` for ``make("Ant")``: the default terms removed, the five lab terms added."""
    from rlcourse.envs.locomotion import AntEnv, RewardTerm

    spec = {name: None for name in AntEnv.default_rewards()}
    spec.update({name: RewardTerm(funcs[name], float(weights[name])) for name in TERM_NAMES})
    return spec


class ForwardSpeedMeter:
    """Runner callback: mean speed (m/s) along +x of the training robots over each PPO iteration,
    measured from their torso positions (so it does not depend on the reward terms)."""

    def __init__(self, env):
        self.env = env
        self.speeds = []
        self._x = self._length = None

    def __call__(self, runner):
        x, length = self.env.root_pos_w[:, 0].clone(), self.env.episode_length.clone()
        if self._x is not None:
            steps = runner.algo.num_steps_per_env
            same_episode = (length - self._length) == steps  # robots that did not fall or restart meanwhile
            if bool(same_episode.any()):
                self.speeds.append(float((x - self._x)[same_episode].mean()) / (steps * self.env.step_dt))
        self._x, self._length = x, length


@torch.no_grad()
def forward_distance(policy: Callable[[torch.Tensor], torch.Tensor], episodes: int, episode_length: int,
                     seed: int) -> list[float]:
    """x displacement (m) of the first episode of each of ``episodes`` envs (at most ``episode_length`` steps)."""
    import rlcourse

    env = rlcourse.envs.make("Ant", num_envs=episodes, seed=seed, episode_length=episode_length)
    obs, _ = env.reset()
    distance = torch.full((episodes,), float("nan"))
    while bool(distance.isnan().any()):
        obs, _, _, _, extras = env.step(policy(obs))
        if "episode" in extras:
            ids = extras["episode"]["env_ids"]
            first = distance[ids].isnan()
            distance[ids[first]] = extras["episode"]["x_distance"][first]
    env.close()
    return distance.tolist()


def train_and_evaluate(functions: Mapping[str, Callable[..., Any]] | None = None, seed: int | None = None,
                       protocol: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train PPO on the Ant exactly as the notebook's graded cell does.

    Returns the graded ``forward_speed`` (mean +x speed of the training robots over the last
    ``speed_iterations`` iterations, m/s) and, not graded, the deterministic policy's walk.
    """
    import rlcourse
    from rlcourse.grading.pins import seed_everything

    p = {**PROTOCOL, **(protocol or {})}
    functions = reference_terms() if functions is None else functions
    seed = p["seed"] if seed is None else int(seed)
    seed_everything(seed)
    env = rlcourse.envs.make(p["env"], num_envs=p["num_envs"], seed=seed, rewards=lab_rewards(functions, p["weights"]))
    agent = rlcourse.PPO(env, seed=seed)
    meter = ForwardSpeedMeter(env)
    agent.learn(p["total_steps"], eval_episodes=0, progress=False, callback=meter)
    env.close()
    distances = forward_distance(agent.inference_policy(), p["eval_episodes"], p["eval_episode_length"],
                                 p["eval_seed"])
    return {"forward_speed": float(np.mean(meter.speeds[-p["speed_iterations"]:])),
            "iterations": len(meter.speeds) + 1, "speeds": meter.speeds,
            "forward_distance_mean": float(np.mean(distances)), "forward_distance_std": float(np.std(distances))}


def agent_config() -> dict[str, Any]:
    """Every PPO hyperparameter of the graded run (the Ant preset).

    Read by :func:`rlcourse.grading.pins.agent_config` (stored with the pins, checked by grade).
    """
    import rlcourse
    from rlcourse.grading.pins import built_config

    return built_config(PROTOCOL["env"], PROTOCOL["num_envs"], lambda env: rlcourse.PPO(env, seed=0))


def _pin_run(seed: int) -> dict[str, Any]:
    """One reference run (module level so a spawned process pool can pickle it)."""
    torch.set_num_threads(1)   # as in the notebook
    start = time.perf_counter()
    result = train_and_evaluate(seed=seed)
    print(f"lab3 reference seed {seed}: forward speed {result['forward_speed']:+.3f} m/s, deterministic walk "
          f"{result['forward_distance_mean']:+.2f} m "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return {"seed": seed, "forward_speed": round(result["forward_speed"], 4),
            "speeds": [round(v, 4) for v in result["speeds"]],
            "forward_distance_mean": round(result["forward_distance_mean"], 3),
            "wall_time_s": round(time.perf_counter() - start, 1)}


def pin(seeds: tuple[int, ...] = SEEDS, workers: int | None = None) -> dict[str, Any]:
    """The lab's entry of ``pinned_metrics.json``: the reference terms trained on ``seeds``.

    ``threshold = round(MARGIN * worst seed, 3)`` m/s. Workers default to 1: the
    training already uses the machine's cores for physics (``RLCOURSE_PIN_WORKERS`` overrides).
    """
    from rlcourse.grading.pins import reference_runs
    from rlcourse.machine import versions

    workers = workers or int(os.environ.get("RLCOURSE_PIN_WORKERS", "1"))
    seeds, runs, seconds = reference_runs(_pin_run, seeds, PROTOCOL["seed"], workers)
    values = [r["forward_speed"] for r in runs]
    worst = min(values)
    if worst < 0.04:
        raise RuntimeError(f"the reference reward reached only {worst:.3f} m/s on some seed ({runs}); not pinning")
    return {
        "terms": {
            "check": "each term vs rlcourse.envs.locomotion.ant.<reference> on rlcourse.grading.lab3.state_batch()",
            "references": dict(REFERENCE_NAMES),
            "tolerance": dict(DEFAULT_TOLERANCES),
        },
        "training": {
            "protocol": dict(PROTOCOL),
            "reference_seeds": list(seeds),
            "reference_values": [round(v, 4) for v in values],
            "reference_mean": round(float(np.mean(values)), 4),
            "reference_min": round(worst, 4),
            "threshold": round(MARGIN * worst, 3),
            "threshold_rule": f"round({MARGIN} * reference_min, 3) m/s: mean +x speed of the training robots "
                              f"over the last {PROTOCOL['speed_iterations']} iterations",
            "runs": runs,
        },
        "produced_by": "rlcourse pin lab3_reward_shaping (rlcourse.grading.lab3.pin -> lab3.train_and_evaluate "
                       "with the reference terms of rlcourse.envs.locomotion.ant)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(seconds, 1),
        "versions": versions(),
    }
