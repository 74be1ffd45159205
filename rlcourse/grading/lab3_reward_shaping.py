"""Hidden checks of lab 3 (reward shaping on the Ant): the student's five reward terms and the trained robots.

The hidden test cells of ``solutions/lab3_reward_shaping/lab3_reward_shaping.ipynb`` call these
functions. Each term is compared with its reference in
:data:`rlcourse.envs.locomotion.shaping.BUILTIN_TERMS` in the same process, on the same fixed
batch of robot states (:func:`state_batch`: a real ``AntEnv`` whose 24 robots were put into
chosen poses and velocities: upright, tilted, upside down, fallen, timed out, moving
backward...). Failure messages say which term and what kind of state is wrong, never the
expected numbers.

The graded metric is the forward speed (m/s along +x) of the *training* robots, exploration
noise included, averaged over the last iterations of the graded cell's run and measured from
their torso positions (:class:`~rlcourse.envs.locomotion.shaping.ForwardSpeedMeter`), so it does
not depend on the reward terms. The deterministic policy's walk after so short a training is
bimodal across seeds (a gait has "taken off" or not); the training speed is not.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion.shaping import BUILTIN_TERMS, TERM_NAMES
from rlcourse.grading.common import (
    TOLERANCES,
    check_agent_config,
    check_at_least,
    config_dict,
    fail,
    load_pins,
    margin_pass_mark,
)

LAB = "lab3_reward_shaping"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# A reference whose robots do not reach this speed (m/s) on every seed has not learned to move.
MIN_REFERENCE_SPEED = 0.04
BATCH_SIZE = 24


# --------------------------------------------------------------------------- the fixed batch
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


# --------------------------------------------------------------------------- term checks
def check_term(name: str, fn: Callable[..., Any], batch: tuple[Any, list[str]] | None = None) -> None:
    """Compare the student's term ``name`` with its reference on :func:`state_batch` (or ``batch``)."""
    if name not in BUILTIN_TERMS:
        raise KeyError(f"unknown term {name!r}; terms: {', '.join(TERM_NAMES)}")
    if not callable(fn):
        fail(f"{name} must be a function of the env, got {type(fn).__name__}")
    env, labels = batch if batch is not None else state_batch()
    try:
        _check_term_on(name, fn, env, labels)
    finally:
        if batch is None:
            env.close()


def _check_term_on(name: str, fn: Callable[..., Any], env: Any, labels: list[str]) -> None:
    want = BUILTIN_TERMS[name](env).detach().to(torch.float32)
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
        fail(f"{name} modified the env's state in place (e.g. abs_() or +=); compute on new tensors")
    if not isinstance(got, torch.Tensor):
        fail(f"{name} must return a torch tensor, got {type(got).__name__}")
    if tuple(got.shape) != (env.num_envs,):
        fail(f"{name} must return one value per robot, shape (num_envs,) = ({env.num_envs},); "
             f"got shape {tuple(got.shape)}")
    if not got.is_floating_point():
        fail(f"{name} must return a float tensor (a bool tensor needs .float())")
    got = got.detach().to(torch.float32)
    if not torch.isfinite(got).all():
        fail(f"{name} returned NaN or inf on the fixed batch of robot states")
    close = torch.isclose(got, want, **TOLERANCES)
    if not bool(close.all()):
        bad = (~close).nonzero().flatten().tolist()
        if bool(torch.isclose(-got, want, **TOLERANCES).all()):
            hint = " (only the sign differs: the term returns the quantity itself, the weight carries the sign)"
        else:
            hint = ""
        fail(f"{name} differs from the reference on {len(bad)} of {env.num_envs} robots of the fixed batch; "
             f"first: robot {bad[0]} ({labels[bad[0]]}){hint}")


def check_terms(functions: Mapping[str, Callable[..., Any]]) -> None:
    """:func:`check_term` for each ``{name: function}``, on one fixed batch."""
    batch = state_batch()
    try:
        for name, fn in functions.items():
            check_term(name, fn, batch)
    finally:
        batch[0].close()


def check_task_terms(forward_velocity: Callable[..., Any], alive_bonus: Callable[..., Any]) -> None:
    """Hidden check of ``test_task_terms``."""
    check_terms({"forward_velocity": forward_velocity, "alive_bonus": alive_bonus})


def check_cost_terms(energy_penalty: Callable[..., Any], orientation_penalty: Callable[..., Any]) -> None:
    """Hidden check of ``test_cost_terms``."""
    check_terms({"energy_penalty": energy_penalty, "orientation_penalty": orientation_penalty})


def check_fall_term(fall_penalty: Callable[..., Any]) -> None:
    """Hidden check of ``test_fall_term``."""
    check_terms({"fall_penalty": fall_penalty})


# --------------------------------------------------------------------------- the graded run
def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: ``result["forward_speed"]`` (m/s, graded), the PPO iterations
    run, the speed of every iteration and (not graded) the deterministic policy's mean walk."""
    result, agent = ns.get("result"), ns.get("agent")
    if not isinstance(result, Mapping) or "forward_speed" not in result:
        fail("the training cell must leave `result`, the dict with the training robots' forward_speed")
    if agent is None or not hasattr(agent, "cfg"):
        fail("the training cell must leave the trained `agent`")
    measured: dict[str, Any] = {"forward_speed": float(result["forward_speed"]),
                                "iterations": int(result.get("iterations", 0))}
    meter = ns.get("meter")
    if meter is not None and hasattr(meter, "speeds"):
        measured["speeds"] = [round(float(v), 4) for v in meter.speeds]
    distances = ns.get("distances")
    if distances is not None:
        measured["forward_distance_mean"] = round(float(np.mean(distances)), 3)
    measured["agent_config"] = config_dict(agent.cfg)
    return measured


def check_training(ns: Mapping[str, Any]) -> None:
    """The graded cell's training robots moved forward at least as fast as the pinned pass mark,
    with the pinned hyperparameters and as many PPO iterations as the reference."""
    pins = load_pins(LAB)
    measured = measure(ns)
    check_agent_config(LAB, measured["agent_config"], pins)
    if measured["iterations"] < min(run["measured"]["iterations"] for run in pins["runs"]):
        fail("the training ran fewer PPO iterations than the training cell asks for")
    check_at_least(measured["forward_speed"], pins["threshold"],
                   "the training robots' forward speed is below the pinned pass mark of this lab "
                   "(see the header); check your five reward terms above")


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Half the worst reference seed's training speed, in m/s to 3 digits; a reference whose robots
    do not move is refused."""
    speeds = [run["measured"]["forward_speed"] for run in runs]
    if min(speeds) < MIN_REFERENCE_SPEED:
        raise RuntimeError(f"the reference reward reached only {min(speeds):.3f} m/s on some seed ({speeds}); "
                           "not pinning")
    return margin_pass_mark(speeds, "forward_speed", digits=3,
                            unit="m/s: mean +x speed of the training robots over the graded cell's last iterations")
