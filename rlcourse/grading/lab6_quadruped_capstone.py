"""Hidden checks of lab 6 (capstone: velocity-command tracking with the Quadruped).

The hidden test cells of ``solutions/lab6_quadruped_capstone/lab6_quadruped_capstone.ipynb`` call
the entry points at the end of this module (:mod:`rlcourse.grading.hidden` splits each check into
a half that runs the student's code in the sandbox and a half that judges in the grader):

* the term checks: a case is a batch of :data:`BATCH_SIZE` Quadruped states as plain tensors
  (:func:`batch_case`: base poses with any heading and tilt, velocities, joints inside and
  outside their soft limits, feet on the ground or in the air and sliding, touchdowns after long
  and short swings, commands to walk, turn or stand). ``call`` builds a real ``QuadrupedEnv`` in
  those states (:func:`build_env`) and runs the student's terms; ``judge`` builds the same env
  and compares with the reference terms of :mod:`rlcourse.envs.locomotion.quadruped`.
* the training check: the graded cell trains PPO with the student's reward and randomization;
  ``record`` keeps the trained networks and ``judge`` loads them into the grader's own PPO agent
  and measures the deterministic policy's command-tracking error
  (:func:`rlcourse.envs.locomotion.tracking.evaluate_tracking`) on a grid of commands x physical
  conditions (:data:`GRID_COMMANDS`, :data:`GRID_CONDITIONS`) that the notebook does not show,
  from robots' initial poses drawn from the grader's seed, against the pinned pass mark.

Failure messages say which term and what kind of state is wrong, never the expected numbers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion import quadruped as reference
from rlcourse.grading.common import EVAL_SEED, config_dict, fail, load_pins, load_policy, term_check
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point

LAB = "lab6_quadruped_capstone"
PIN_SEEDS = (0, 1, 2, 3, 4)
BATCH_SIZE = 24

# The graded grid. Commands lie inside the training ranges (v_x, v_y, yaw rate in m/s, m/s, rad/s);
# conditions are what a real robot meets, of realistic size for a 15-kg robot: friction of a
# smooth floor, a 4-kg payload (about a quarter of its mass), motors at 80 % of their rated torque,
# one control step (20 ms) of latency, a servo tuned 20 % stiffer with 20 % less damping.
GRID_COMMANDS = ((0.5, 0.0, 0.0), (1.0, 0.0, 0.0), (-0.5, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, -0.3, 0.0),
                 (0.0, 0.0, 0.8), (0.0, 0.0, -0.8), (0.6, 0.0, 0.5), (0.0, 0.0, 0.0))
GRID_CONDITIONS = {
    "nominal": {},
    "slippery floor": {"friction": 0.4},
    "4 kg payload": {"added_mass": 4.0},
    "weak motors": {"motor_strength": 0.8},
    "20 ms latency": {"latency_steps": 1},
    "retuned servos": {"kp_scale": 1.2, "kd_scale": 0.8},
}
EPISODE_S = 10.0
SETTLE_S = 1.0
# A reference policy's error must stay below this fraction of standing still's on every seed to be
# pinned (2026-12-06: 0.23-0.38 of 0.47 on seeds 0-4; the payload and weak-motor cells cost most).
MAX_REFERENCE_FRACTION = 0.85

# The names the lab asks for (term -> the reference function the judge compares with).
TERMS = {
    "track_lin_vel_xy": reference.track_lin_vel_xy_exp,
    "track_ang_vel_z": reference.track_ang_vel_z_exp,
    "foot_slip": reference.foot_slip,
    "feet_air_time": reference.feet_air_time,
    "joint_limits": reference.dof_pos_limits,
}
# The env's own default reward runs the tracking terms, so the references are guarded (they raise
# when a submission calls them) rather than withheld.
GUARDED = {"rlcourse.envs.locomotion.quadruped": ("track_lin_vel_xy_exp", "track_ang_vel_z_exp", "foot_slip",
                                                  "feet_air_time", "dof_pos_limits")}


# --------------------------------------------------------------------------- batches of robot states
def _yaw_tilt_quat(yaw: float, tilt: float, tilt_dir: float) -> np.ndarray:
    """Unit quaternion (w, x, y, z): a yaw about z, then a tilt about a horizontal axis."""
    qz = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
    ax = np.array([math.cos(tilt_dir), math.sin(tilt_dir), 0.0])
    qt = np.concatenate([[math.cos(tilt / 2)], math.sin(tilt / 2) * ax])
    w1, x1, y1, z1 = qz
    w2, x2, y2, z2 = qt
    q = np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                  w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])
    return q / np.linalg.norm(q)


def batch_case(seed: int | None = None) -> dict[str, Any]:
    """A batch of robot states as plain data, one label per robot. ``seed=None`` is the fixed batch.

    Keys: ``qpos`` ``(n, 19)``, ``qvel`` ``(n, 18)`` (MuJoCo's state), ``commands`` ``(n, 3)``,
    ``feet_force`` ``(n, 4)`` (touch sensors, N), ``feet_vel`` ``(n, 12)`` (world frame),
    ``last_air_time`` and ``first_contact`` ``(n, 4)``, ``labels``, ``batch``.
    """
    n = BATCH_SIZE
    rng = np.random.default_rng(17 if seed is None else [seed, 6])
    env = reference.QuadrupedEnv(num_envs=1, seed=0, nthread=1)
    try:
        home, lo, hi = env.home_qpos.copy(), *env._dof_limits_np
        joints_q, joints_v = env.act_qpos_idx, env.act_dof_idx
    finally:
        env.close()
    qpos, qvel = np.tile(home, (n, 1)), np.zeros((n, 18))
    commands = np.zeros((n, 3))
    feet_force, feet_vel = np.zeros((n, 4)), np.zeros((n, 12))
    last_air, first = np.zeros((n, 4)), np.zeros((n, 4))
    labels = []
    for i in range(n):
        yaw = 0.0 if i % 4 == 0 else rng.uniform(-math.pi, math.pi)
        tilt = 0.0 if i % 3 else rng.uniform(0.1, 0.6)
        qpos[i, 3:7] = _yaw_tilt_quat(yaw, tilt, rng.uniform(0, 2 * math.pi))
        qpos[i, 2] = rng.uniform(0.25, 0.4)
        qvel[i, 0:3] = rng.uniform(-1.2, 1.2, 3) * [1.0, 1.0, 0.3]        # world frame
        qvel[i, 3:6] = rng.uniform(-1.5, 1.5, 3)                            # body frame
        # Joints: most inside the soft limits, some beyond them on either side (up to the hard limits).
        span = hi - lo
        q = rng.uniform(lo + 0.1 * span, hi - 0.1 * span)
        if i % 2:
            k = rng.integers(0, 12, size=3)
            q[k] = np.where(rng.random(3) < 0.5, lo[k] + rng.uniform(0, 0.05, 3) * span[k],
                            hi[k] - rng.uniform(0, 0.05, 3) * span[k])
        qpos[i, joints_q] = q
        qvel[i, joints_v] = rng.uniform(-8.0, 8.0, 12)
        kind = i % 6
        if kind == 0:
            commands[i] = 0.0                                                # stand
        elif kind == 1:
            commands[i] = [0.05, -0.05, rng.uniform(-1, 1)]                  # turn in place (|v_xy| < 0.1)
        else:
            commands[i] = [rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), rng.uniform(-1, 1)]
        # Feet: pressed (> 1 N), barely touching (< 1 N: not a contact) or in the air.
        feet_force[i] = rng.choice([0.0, 0.5, 20.0, 60.0], size=4)
        feet_vel[i] = rng.uniform(-0.8, 0.8, 12)
        touchdown = rng.random(4) < 0.5
        first[i] = touchdown
        last_air[i] = np.where(touchdown, rng.choice([0.1, 0.3, 0.4, 0.6, 0.9], size=4), 0.0)
        labels.append(f"heading {math.degrees(yaw):.0f} deg, tilt {math.degrees(tilt):.0f} deg, "
                      f"command {tuple(round(float(c), 2) for c in commands[i])}, "
                      f"{int((feet_force[i] > 1).sum())} feet on the ground, {int(touchdown.sum())} touching down")
    return {"qpos": torch.from_numpy(qpos), "qvel": torch.from_numpy(qvel),
            "commands": torch.from_numpy(commands).float(), "feet_force": torch.from_numpy(feet_force),
            "feet_vel": torch.from_numpy(feet_vel), "last_air_time": torch.from_numpy(last_air).float(),
            "first_contact": torch.from_numpy(first).float(), "labels": labels,
            "batch": "the fixed batch" if seed is None else "a batch drawn for this submission"}


def build_env(case: Mapping[str, Any]) -> Any:
    """A real ``QuadrupedEnv`` whose robots are in the states of ``case``; close it after use."""
    n = int(case["qpos"].shape[0])
    env = reference.QuadrupedEnv(num_envs=n, seed=0, nthread=1)
    env.reset()
    env.sim.set_state(np.arange(n), case["qpos"].numpy(), case["qvel"].numpy())
    env.sim.sensordata[:, 13:17] = case["feet_force"].numpy()
    env.sim.sensordata[:, 17:29] = case["feet_vel"].numpy()
    env._refresh()
    env.commands.copy_(case["commands"])
    env.feet_last_air_time.copy_(case["last_air_time"])
    env.feet_first_contact.copy_(case["first_contact"])
    return env


def batch_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """The cases of a term check: the fixed batch, and with ``seed`` a batch drawn from it."""
    return [batch_case()] + ([batch_case(seed)] if seed is not None else [])


# The env's tensors a term reads and must not write into (the judge fails a term that does).
STATE = ("_packed", "commands", "feet_last_air_time", "feet_first_contact")


def _term_check(name: str, terms: tuple[str, ...]) -> FunctionCheck:
    """The check of one graded cell: the student's ``terms``, in the order the cell passes them."""
    return term_check(name, terms, batch_cases, build_env, TERMS, STATE, in_place_example="mul_()")


# --------------------------------------------------------------------------- the graded run
def standing_error() -> float:
    """The grid's tracking error of a robot that stands still and never falls: the baseline."""
    return float(np.mean([math.hypot(c[0], c[1]) + 0.5 * abs(c[2]) for c in GRID_COMMANDS]))


def grid_error(agent: Any, seed: int, env_kwargs: Mapping[str, Any] | None = None) -> tuple[float, Any]:
    """The deterministic policy's mean tracking error (m/s) on the graded grid, robots' initial
    poses drawn from ``seed``, the task built with the graded run's ``env_kwargs``; also the full
    :class:`TrackingResult`."""
    from rlcourse.envs.locomotion.tracking import evaluate_tracking

    result = evaluate_tracking(agent, GRID_COMMANDS, GRID_CONDITIONS, episode_s=EPISODE_S, settle_s=SETTLE_S,
                               seed=seed, env_kwargs=env_kwargs)
    return result.error, result


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded run produced: the steps trained, the training time, and the trained policy's
    tracking error on the graded grid (fixed seed; the grader re-measures on its own seed)."""
    agent = ns.get("agent")
    if agent is None or not hasattr(agent, "cfg") or not hasattr(agent, "inference_policy"):
        fail("the training cell must leave the trained `agent`, an rlcourse PPO agent")
    env_kwargs = ns.get("ENV_KWARGS", {})
    if not isinstance(env_kwargs, Mapping):
        fail("the training cell must leave ENV_KWARGS, the dict of Quadruped arguments it trained with")
    error, result = grid_error(agent, EVAL_SEED, env_kwargs)
    return {"env_kwargs": dict(env_kwargs), "tracking_error": round(error, 4), "fall_rate": round(result.fall_rate, 4),
            "per_condition": {k: round(v, 4) for k, v in result.per_condition().items()},
            "global_step": int(agent.global_step), "train_seconds": float(ns.get("train_seconds", float("nan"))),
            "agent_config": config_dict(agent.cfg)}


def record_training(ns: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox: the steps trained and the trained agent's networks (tensors only)."""
    agent = ns.get("agent")
    modules = getattr(agent, "_modules", None)
    if agent is None or not callable(modules) or not hasattr(agent, "cfg"):
        fail("the training cell must leave the trained `agent`, an rlcourse PPO agent")
    measured = {"global_step": int(getattr(agent, "global_step", 0)), "agent_config": config_dict(agent.cfg)}
    return {"measured": measured, "algo": str(getattr(agent, "name", "")),
            "modules": {str(k): m.state_dict() for k, m in modules().items()}}


def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """Runs in the grader: the recorded networks in its own PPO agent (pinned hyperparameters), the
    tracking error on the graded grid measured from robots drawn with ``seed``, against the pass mark."""
    import rlcourse

    pins = load_pins(LAB)
    env = rlcourse.envs.make("Quadruped", num_envs=1, seed=0, nthread=1)
    try:
        agent = load_policy(LAB, record, "ppo", env)
    finally:
        env.close()
    steps = record["measured"].get("global_step")
    if not isinstance(steps, int) or steps < min(run["measured"]["global_step"] for run in pins["runs"]):
        fail("the training ran fewer steps than the training cell asks for")
    try:
        # The task as the reference trained it (the locked cell's ENV_KWARGS, recorded in the pins).
        error, _ = grid_error(agent, EVAL_SEED if seed is None else seed, pins["runs"][0]["measured"].get("env_kwargs"))
    except ValueError as exc:
        if "NaN" not in str(exc):
            raise
        fail("the trained policy outputs NaN or inf actions: the training diverged; check your reward terms")
    if not (math.isfinite(error) and error <= pins["threshold"]):
        fail("the trained policy's command-tracking error on the graded commands and conditions is above the "
             "pinned pass mark (see the header); check your reward terms, weights and randomization")


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Halfway between standing still and the worst reference seed: ``threshold = worst + 0.5 *
    (standing - worst)`` (m/s, 3 digits; lower is better). A reference that does not beat
    standing still clearly on every seed is refused."""
    errors = [run["measured"]["tracking_error"] for run in runs]
    baseline = standing_error()
    worst = max(errors)
    if worst > MAX_REFERENCE_FRACTION * baseline:
        raise RuntimeError(f"the reference tracks too poorly on some seed ({errors}; standing still scores "
                           f"{baseline:.3f}); not pinning")
    return {"metric": "tracking_error", "reference_values": [round(e, 4) for e in errors],
            "reference_mean": round(sum(errors) / len(errors), 4), "reference_max": round(worst, 4),
            "standing_still": round(baseline, 4), "threshold": round(worst + 0.5 * (baseline - worst), 3),
            "threshold_rule": "round(reference_max + 0.5 * (standing_still - reference_max), 3) m/s: the "
                              "deterministic policy's mean tracking error on the graded grid, lower is better"}


# --------------------------------------------------------------------------- the hidden cells' calls
TRACKING_TERMS = _term_check("tracking_terms", ("track_lin_vel_xy", "track_ang_vel_z"))
GAIT_TERMS = _term_check("gait_terms", ("foot_slip", "feet_air_time", "joint_limits"))
TRAINING = TrainingCheck("training", record_training, judge_training)

check_tracking_terms = entry_point(TRACKING_TERMS, "Check ``track_lin_vel_xy`` and ``track_ang_vel_z`` against "
                                                   "the reference terms on batches of robot states.")
check_gait_terms = entry_point(GAIT_TERMS, "Check ``foot_slip``, ``feet_air_time`` and ``joint_limits`` against "
                                           "the reference terms on batches of robot states.")
check_training = entry_point(TRAINING, "Check the graded run: the trained policy's command-tracking error on a "
                                       "hidden grid of commands and conditions, against the pass mark.")
