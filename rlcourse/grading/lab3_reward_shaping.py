"""Hidden checks of lab 3 (reward shaping on the Ant): the student's five reward terms and the trained robots.

The hidden test cells of ``solutions/lab3_reward_shaping/lab3_reward_shaping.ipynb`` call the
entry points at the end of this module. Each check is in two halves
(:mod:`rlcourse.grading.hidden`):

* the term checks: a case is a batch of 24 robot states as plain tensors (:func:`batch_case`:
  poses and velocities chosen to cover upright, tilted, upside-down, fallen, timed-out, backward
  moving robots...). ``call`` (in the grading sandbox) builds a real ``AntEnv`` in those states
  (:func:`build_env`) and runs the student's terms on it; ``judge`` (in the grader) builds the
  same env itself, computes the reference terms of
  :data:`rlcourse.envs.locomotion.shaping.BUILTIN_TERMS` and compares. The cases are the fixed
  batch plus, when grading, a batch drawn from the submission's seed.
* the training check: the graded cell's metric is the forward speed (m/s along +x) of the
  *training* robots, exploration noise included, averaged over the last iterations of the run
  and measured from their torso positions
  (:class:`~rlcourse.envs.locomotion.shaping.ForwardSpeedMeter`), so it does not depend on the
  reward terms. (The deterministic policy's walk after so short a training is bimodal across
  seeds, a gait has "taken off" or not; the training speed is not.) ``record`` keeps what the
  cell measured and the trained networks; ``judge`` loads the networks into the grader's own PPO
  agent and measures the same speed anew (:func:`training_speed`: the stochastic policy on fresh
  robots, seeded by the grader), against the pinned pass mark.

Failure messages say which term and what kind of state is wrong, never the expected numbers.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion.shaping import BUILTIN_TERMS, ForwardSpeedMeter
from rlcourse.grading.common import (
    EVAL_SEED,
    check_at_least,
    config_dict,
    fail,
    load_pins,
    load_policy,
    margin_pass_mark,
    term_check,
)
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point

LAB = "lab3_reward_shaping"
PIN_SEEDS = (0, 1, 2, 3, 4, 5)
# A reference whose robots do not reach this speed (m/s) on every seed has not learned to move.
MIN_REFERENCE_SPEED = 0.04
BATCH_SIZE = 24
# The grader's re-measurement of the trained policy's training speed (see training_speed): as many
# robots as the graded cell trains, PPO-iteration-long windows (num_steps_per_env control steps),
# a few windows for the robots to get going from the standing start, then as many measured windows
# as the graded cell averages (its SPEED_ITERATIONS).
SPEED_CHECK = {"num_envs": 128, "warmup_windows": 4, "windows": 20}
# The reference terms a submission may not use while it is graded (rlcourse.grading.view): the five
# functions behind BUILTIN_TERMS.
WITHHELD = {"rlcourse.envs.locomotion.ant": ("forward_velocity", "is_alive", "energy", "flat_orientation_l2",
                                             "is_terminated")}


# --------------------------------------------------------------------------- the batches of robot states
def _quat(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def batch_case(seed: int | None = None) -> dict[str, Any]:
    """A batch of 24 robot states as plain data (tensors, strings), a label for each robot.

    ``seed=None`` gives the fixed batch. Its states cover what the terms must handle: level and
    tilted torsos (up to upside down) with any heading, forward, backward and sideways motion,
    robots below the fall height (``terminated``), robots whose episode hit the time limit
    (``time_outs``, not a fall), joint velocities of both signs and actions at and inside the
    limits. A ``seed`` draws tilts, heights, speeds and time-outs at random as well. Only NumPy
    and torch random draws with fixed seeds are involved, so a batch is the same on every
    machine; the expected values are always recomputed with the reference terms.

    Keys: ``qpos`` ``(n, nq)`` and ``qvel`` ``(n, nv)`` (float64, MuJoCo's state), ``actions``
    and ``prev_actions`` ``(n, 8)``, ``terminated`` and ``time_outs`` ``(n,)`` bool,
    ``episode_length`` ``(n,)``, ``labels`` and ``batch`` (its name in the messages).
    """
    from rlcourse.envs.locomotion.ant import AntEnv

    n = BATCH_SIZE
    env = AntEnv(num_envs=n, seed=0, nthread=1)   # for the robot's standing pose, limits and fall rule
    try:
        env.reset()
        if seed is None:
            rng = np.random.default_rng(31)
            tilt_cycle = [0.0, 0.0, 0.0, 0.25, 0.5, 0.8, 1.2, math.pi / 2, 2.0, 2.6, math.pi, 0.1]
            height_cycle = [0.55, 0.62, 0.48, 0.40, 0.33, 0.30, 0.25, 0.20]
            speed_cycle = [1.5, -1.0, 0.3, 3.0, 0.0, -2.5]
            tilts = [tilt_cycle[i % len(tilt_cycle)] for i in range(n)]
            heights = [height_cycle[i % len(height_cycle)] for i in range(n)]
            speeds = [speed_cycle[i % len(speed_cycle)] for i in range(n)]
            gen = torch.Generator().manual_seed(5)
            time_outs = torch.zeros(n, dtype=torch.bool)
            time_outs[[1, 2, 10, 17]] = True
            batch = "the fixed batch"
        else:
            rng = np.random.default_rng([seed, 3])
            tilts = [0.0 if i % 4 == 0 else float(t) for i, t in enumerate(rng.uniform(0.0, math.pi, n))]
            heights = rng.uniform(0.2, 0.65, n).tolist()
            speeds = rng.uniform(-3.0, 3.0, n).tolist()
            gen = torch.Generator().manual_seed(seed)
            time_outs = torch.from_numpy(rng.random(n) < 0.25)
            batch = "a batch drawn for this submission"
        nv = env.sim.nv
        qpos = np.tile(env.init_qpos, (n, 1))
        qvel = np.zeros((n, nv))
        lo, hi = env._dof_limits_np
        labels = []
        for i in range(n):
            tilt, speed = tilts[i], speeds[i]
            yaw = rng.uniform(-math.pi, math.pi) if i % 3 else 0.0
            tilt_axis = np.array([math.cos(rng.uniform(0, 2 * math.pi)), math.sin(rng.uniform(0, 2 * math.pi)), 0.0])
            q = _quat_mul(_quat(np.array([0.0, 0.0, 1.0]), yaw),
                          _quat(tilt_axis, tilt) if tilt else np.array([1.0, 0, 0, 0]))
            qpos[i, 0:2] = rng.uniform(-3.0, 3.0, size=2)
            qpos[i, 2] = heights[i]
            qpos[i, 3:7] = q / np.linalg.norm(q)
            qpos[i, env.act_qpos_idx] = rng.uniform(lo, hi)
            qvel[i, 0:3] = [speed, rng.uniform(-1.0, 1.0), rng.uniform(-0.8, 0.8)]
            qvel[i, 3:6] = rng.uniform(-2.0, 2.0, size=3)
            qvel[i, env.act_dof_idx] = rng.uniform(-12.0, 12.0, size=len(env.act_dof_idx))
            labels.append(f"torso tilted {math.degrees(tilt):.0f} deg, height {qpos[i, 2]:.2f} m, "
                          f"moving {'forward' if speed > 0 else 'backward' if speed < 0 else 'sideways'}")
        env.sim.set_state(np.arange(n), qpos, qvel)
        env._refresh()
        terminated = env._get_terminated().clone()   # the env's own fall rule on these heights
    finally:
        env.close()
    actions = torch.rand(n, env.num_actions, generator=gen) * 2.4 - 1.2
    time_outs = time_outs & ~terminated
    for i in range(n):
        if bool(terminated[i]):
            labels[i] += ", fell (terminated)"
        if bool(time_outs[i]):
            labels[i] += ", episode cut by the time limit (not a fall)"
    return {
        "qpos": torch.from_numpy(qpos), "qvel": torch.from_numpy(qvel),
        "actions": actions.clamp(-1.0, 1.0),   # as the env clips them: some exactly at the limits
        "prev_actions": torch.rand(n, env.num_actions, generator=gen) * 2 - 1,
        "terminated": terminated, "time_outs": time_outs,
        "episode_length": torch.where(time_outs, env.max_episode_length, 100),
        "labels": labels, "batch": batch,
    }


def build_env(case: Mapping[str, Any]) -> Any:
    """A real ``AntEnv`` whose robots are in the states of ``case`` (:func:`batch_case`); close it
    after use. The sandbox and the grader each build their own from the same case."""
    from rlcourse.envs.locomotion.ant import AntEnv

    n = int(case["qpos"].shape[0])
    env = AntEnv(num_envs=n, seed=0, nthread=1)
    env.reset()
    env.sim.set_state(np.arange(n), case["qpos"].numpy(), case["qvel"].numpy())
    env._refresh()
    env.actions = case["actions"].clone()
    env.prev_actions = case["prev_actions"].clone()
    env.terminated = case["terminated"].clone()
    env.time_outs = case["time_outs"].clone()
    env.episode_length[:] = case["episode_length"]
    return env


def batch_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """The cases of a term check: the fixed batch, and with ``seed`` a batch drawn from it."""
    return [batch_case()] + ([batch_case(seed)] if seed is not None else [])


# --------------------------------------------------------------------------- term checks
# The env's tensors a term reads and must not write into (the judge fails a term that does).
STATE = ("_packed", "actions", "prev_actions", "terminated", "time_outs")


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


def record_training(ns: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox: what the graded cell measured and the trained agent's networks (state
    dicts, tensors only)."""
    agent = ns.get("agent")
    modules = getattr(agent, "_modules", None)
    if agent is not None and not callable(modules):   # (no agent at all: measure says so)
        fail("the training cell must leave the trained `agent`, an rlcourse PPO agent")
    measured = measure(ns)
    return {"measured": measured, "algo": str(getattr(agent, "name", "")),
            "modules": {str(k): m.state_dict() for k, m in modules().items()}}


@torch.no_grad()
def training_speed(agent: Any, env: Any, seed: int) -> float:
    """Mean speed (m/s along +x) of ``env``'s robots driven by ``agent``'s stochastic policy, as the
    graded cell's training robots are (exploration noise included, the observation normalizer
    frozen): ``SPEED_CHECK["windows"]`` windows of one PPO iteration each, measured by
    :class:`~rlcourse.envs.locomotion.shaping.ForwardSpeedMeter`, after ``warmup_windows`` windows
    from the standing start. The noise is drawn from ``seed``."""
    steps = int(agent.num_steps_per_env)
    meter = ForwardSpeedMeter(env)
    runner = SimpleNamespace(algo=SimpleNamespace(num_steps_per_env=steps))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        obs, _ = env.reset()

        def one_window() -> None:
            nonlocal obs
            for _ in range(steps):
                dist = agent.actor_critic.distribution(agent.obs_normalizer(obs.to(torch.float32)))
                obs, *_ = env.step(dist.sample())   # the env clips the sample, as in training

        for _ in range(SPEED_CHECK["warmup_windows"]):
            one_window()
        meter(runner)   # the first call only records where the robots are
        for _ in range(SPEED_CHECK["windows"]):
            one_window()
            meter(runner)
    # The graded cell's mean; a window in which every robot fell is left out by the meter there too.
    return float(np.mean(meter.speeds)) if meter.speeds else 0.0


def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """Runs in the grader: the recorded networks in its own PPO agent (pinned hyperparameters),
    the training speed measured anew on fresh robots seeded with ``seed`` (``None``: a fixed
    seed), against the pinned pass mark."""
    import rlcourse
    from rlcourse.envs.locomotion.ant import AntEnv

    pins = load_pins(LAB)
    seed = EVAL_SEED if seed is None else seed
    # No reward terms: the speed is measured from the torso positions, the policy sees no reward.
    env = rlcourse.envs.make("Ant", num_envs=SPEED_CHECK["num_envs"], seed=seed,
                             rewards={name: None for name in AntEnv.default_rewards()})
    try:
        agent = load_policy(LAB, record, "ppo", env)
        iterations = record["measured"].get("iterations")
        if not isinstance(iterations, (int, float)) or \
                iterations < min(run["measured"]["iterations"] for run in pins["runs"]):
            fail("the training ran fewer PPO iterations than the training cell asks for")
        speed = training_speed(agent, env, seed)
    finally:
        env.close()
    check_at_least(speed, pins["threshold"],
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


# --------------------------------------------------------------------------- the hidden cells' calls
def _term_check(name: str, terms: tuple[str, ...]) -> FunctionCheck:
    """The check of one graded cell: the student's ``terms``, in the order the cell passes them."""
    return term_check(name, terms, batch_cases, build_env, BUILTIN_TERMS, STATE, in_place_example="abs_()")


TASK_TERMS = _term_check("task_terms", ("forward_velocity", "alive_bonus"))
COST_TERMS = _term_check("cost_terms", ("energy_penalty", "orientation_penalty"))
FALL_TERM = _term_check("fall_term", ("fall_penalty",))
TRAINING = TrainingCheck("training", record_training, judge_training)

check_task_terms = entry_point(TASK_TERMS, "Check ``forward_velocity`` and ``alive_bonus`` against the reference "
                                           "terms on batches of robot states.")
check_cost_terms = entry_point(COST_TERMS, "Check ``energy_penalty`` and ``orientation_penalty`` against the "
                                           "reference terms on batches of robot states.")
check_fall_term = entry_point(FALL_TERM, "Check ``fall_penalty`` against the reference term on batches of robot states.")
check_training = entry_point(TRAINING, "Check the graded run: the trained policy's training speed, measured anew, "
                                       "reaches the pass mark.")
