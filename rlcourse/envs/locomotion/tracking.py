"""How well does a Quadruped policy follow velocity commands, on a grid of commands x physical conditions?

The capstone lab (``solutions/lab6_quadruped_capstone``) is graded with this, and lectures and
benchmarks use it to show a trained gait::

    from rlcourse.envs.locomotion.tracking import evaluate_tracking
    result = evaluate_tracking(agent, commands=[(0.5, 0, 0), (0, 0, 0.8)],
                               conditions={"nominal": {}, "slippery": {"friction": 0.4}})
    print(result.error)                 # mean tracking error over every robot, m/s
    print(result.to_markdown())         # per command and condition

**The error.** Each robot gets one command ``(v_x, v_y, yaw_rate)`` for a whole episode. After a
settling time (the robot starts standing), every control step costs

    ||(v_x, v_y)_command - (v_x, v_y)_base|| + 0.5 m * |yaw_rate_command - w_z|

in m/s, base frame: the yaw-rate error counts as the speed error of a point 0.5 m from the base
centre (the velocity task's tracking rewards weigh the two the same way, 1.0 and 0.5). A robot
whose base touches the ground is out: for the rest of its episode each step costs what standing
still costs, plus :data:`FALL_ERROR`, so a fall is always worse than not moving. A robot's error
is the mean over its steps; the result's ``error`` is the mean over all robots.

**Conditions** are physical changes that hold for a whole episode, given as plain numbers:

=====================  ==================================================================
``friction``           sliding friction of every geom, x the nominal (1.0)
``added_mass``         kg added to the base (nominal robot: about 15 kg)
``motor_strength``     every actuator's force x this (kp and kd of the PD servos)
``kp_scale``           servo stiffness kp x this (``kd_scale`` likewise)
``latency_steps``      the actuators get the action from this many control steps ago (20 ms each)
``obs_noise``          std of Gaussian noise on every observation element
=====================  ==================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import torch

FALL_ERROR = 1.0
"""m/s added to every step after a fall, on top of what standing still would cost."""
YAW_LEVER = 0.5
"""m: the yaw-rate error counts as the speed error of a point this far from the base centre."""

CONDITION_KEYS = ("friction", "added_mass", "motor_strength", "kp_scale", "kd_scale", "latency_steps", "obs_noise")


def condition_randomization(condition: Mapping[str, float]) -> dict[str, Any]:
    """The randomization config (:mod:`.randomization`) that puts every env in ``condition``.

    Raises:
        ValueError: an unknown key (the message lists the known ones) or a value out of range.
    """
    config: dict[str, Any] = {}
    for key, value in condition.items():
        if key not in CONDITION_KEYS:
            raise ValueError(f"unknown condition {key!r}; use {', '.join(CONDITION_KEYS)}")
        v = float(value)
        if key in ("friction", "motor_strength", "kp_scale", "kd_scale") and not v > 0:
            raise ValueError(f"condition {key!r} must be > 0, got {value!r}")
        if key in ("added_mass", "latency_steps", "obs_noise") and v < 0:
            raise ValueError(f"condition {key!r} must be >= 0, got {value!r}")
        if key == "friction":
            config["friction"] = {"range": [v, v]}
        elif key == "added_mass":
            config["mass"] = {"range": [v, v], "operation": "additive", "bodies": ["base"]}
        elif key == "motor_strength":
            config["actuator_strength"] = {"range": [v, v]}
        elif key == "kp_scale":
            config["actuator_kp"] = {"range": [v, v]}
        elif key == "kd_scale":
            config["actuator_kd"] = {"range": [v, v]}
        elif key == "latency_steps":
            if v != int(v):
                raise ValueError(f"condition 'latency_steps' must be a whole number, got {value!r}")
            config["action_latency"] = {"range": [int(v), int(v)], "mode": "startup"}
        elif key == "obs_noise":
            config["obs_noise"] = {"range": [0.0, v]}
    return config


@dataclasses.dataclass
class TrackingResult:
    """Per-robot results of :func:`evaluate_tracking` (robot ``i`` ran ``commands[i % n]`` in
    condition ``conditions[i // n]``, ``n`` the number of commands)."""

    commands: list[tuple[float, float, float]]
    conditions: dict[str, dict[str, float]]
    errors: torch.Tensor
    """``(num_conditions, num_commands)`` mean tracking error per robot, m/s."""
    falls: torch.Tensor
    """``(num_conditions, num_commands)`` bool: the robot's base touched the ground."""
    lin_errors: torch.Tensor
    """``(num_conditions, num_commands)`` mean linear-velocity error alone (m/s) while upright."""
    episode_s: float

    @property
    def error(self) -> float:
        """Mean tracking error over every robot (m/s): the graded number."""
        return float(self.errors.mean())

    @property
    def fall_rate(self) -> float:
        return float(self.falls.float().mean())

    def per_condition(self) -> dict[str, float]:
        return {name: float(self.errors[i].mean()) for i, name in enumerate(self.conditions)}

    def to_markdown(self) -> str:
        """A table: one row per condition, one column per command, ``error`` (``F`` for a fall)."""
        head = "| condition | " + " | ".join(f"({c[0]:g}, {c[1]:g}, {c[2]:g})" for c in self.commands) + " | mean |"
        rows = [head, "|" + "---|" * (len(self.commands) + 2)]
        for i, name in enumerate(self.conditions):
            cells = [f"{float(e):.2f}" + (" F" if bool(f) else "") for e, f in zip(self.errors[i], self.falls[i])]
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {float(self.errors[i].mean()):.3f} |")
        return "\n".join(rows)


@torch.inference_mode()
def evaluate_tracking(
    policy: Any,
    commands: Sequence[Sequence[float]],
    conditions: Mapping[str, Mapping[str, float]] | None = None,
    episode_s: float = 10.0,
    settle_s: float = 1.0,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    nthread: int | None = None,
) -> TrackingResult:
    """Drive one Quadruped per (condition, command) with ``policy`` for one episode and measure
    how well each follows its command (see the module docstring for the error).

    Args:
        policy: an rlcourse agent (its deterministic policy), an exported policy or any
            callable ``obs -> actions``.
        commands: ``(v_x, v_y, yaw_rate)`` rows, body frame (m/s, rad/s).
        conditions: ``{name: condition}`` (default: only ``{"nominal": {}}``).
        episode_s: seconds per episode (the task's time limit is 20 s).
        settle_s: seconds at the start that are not scored (the robot starts standing).
        seed: seeds the robots' initial poses.
        env_kwargs: more ``Quadruped`` arguments (e.g. ``action_scale``), the same for every condition.
        nthread: simulation threads (default: all cores).
    """
    from rlcourse import envs
    from rlcourse.evaluation import as_policy

    cmds = torch.as_tensor([list(map(float, c)) for c in commands], dtype=torch.float32)
    if cmds.ndim != 2 or cmds.shape[1] != 3 or len(cmds) == 0:
        raise ValueError("commands must be a non-empty list of (v_x, v_y, yaw_rate)")
    conditions = {"nominal": {}} if conditions is None else {str(k): dict(v) for k, v in conditions.items()}
    steps = int(round(episode_s / 0.02))
    settle = int(round(settle_s / 0.02))
    if not 0 <= settle < steps:
        raise ValueError(f"settle_s ({settle_s}) must lie in [0, episode_s) ({episode_s})")
    n = len(cmds)
    errors = torch.zeros(len(conditions), n)
    lin_errors = torch.zeros(len(conditions), n)
    falls = torch.zeros(len(conditions), n, dtype=torch.bool)
    for c, (name, condition) in enumerate(conditions.items()):
        env = envs.make("Quadruped", num_envs=n, seed=seed, randomization=condition_randomization(condition),
                        episode_length=steps + 1, nthread=nthread, **dict(env_kwargs or {}))
        try:
            act = as_policy(policy, env)
            env.set_commands(cmds)
            obs, _ = env.reset()
            up = torch.ones(n, dtype=torch.bool)
            total = torch.zeros(n)
            lin_total = torch.zeros(n)
            up_steps = torch.zeros(n)
            standing_cost = cmds[:, :2].norm(dim=1) + YAW_LEVER * cmds[:, 2].abs() + FALL_ERROR
            for t in range(steps):
                actions = act(obs)
                if not isinstance(actions, torch.Tensor) or not bool(torch.isfinite(actions).all()):
                    raise ValueError("the policy returned NaN, inf or no tensor")
                obs, _, terminated, _, _ = env.step(actions)
                up &= ~terminated.cpu()
                if t < settle:
                    continue
                lin = (cmds[:, :2] - env.root_lin_vel_b[:, :2].cpu()).norm(dim=1)
                yaw = (cmds[:, 2] - env.root_ang_vel_b[:, 2].cpu()).abs()
                total += torch.where(up, lin + YAW_LEVER * yaw, standing_cost)
                lin_total += torch.where(up, lin, 0.0)
                up_steps += up.float()
            scored = steps - settle
            errors[c] = total / scored
            lin_errors[c] = lin_total / up_steps.clamp(min=1.0)
            falls[c] = ~up
        finally:
            env.close()
    return TrackingResult([tuple(map(float, c)) for c in cmds.tolist()], conditions, errors, falls, lin_errors,
                          float(episode_s))
