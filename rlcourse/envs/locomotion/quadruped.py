"""``Quadruped``: commanded base-velocity tracking with a 12-DoF legged robot (IsaacGymEnvs Anymal style).

The robot is ``assets/quadruped.xml``, written for this course from primitives: a
~15 kg body, four legs with hip abduction, hip flexion and knee joints. The joints
are driven by MuJoCo ``position`` servos, i.e. a PD controller running at every
physics step (``tau = kp (q_target - q) - kd q_dot``, kp 40, kd 1, |tau| <= 30 N m),
like the PhysX joint drives of IsaacGymEnvs' Anymal.

Actions ``(num_envs, 12)`` in ``[-1, 1]``: joint position targets
``q_target = q_default + 0.5 * action`` (IGE ``actionScale``), order
``FL, FR, HL, HR`` x ``abduction, hip, knee``.

Each episode samples a command ``(v_x, v_y, yaw_rate)`` uniformly from
``[-1, 1] m/s x [-0.5, 0.5] m/s x [-1, 1] rad/s`` (body frame); the robot is rewarded for
tracking it.

Observation ``(num_envs, 48)`` float32, the IGE Anymal layout:

=======  ==========================================================
index    content
=======  ==========================================================
0-2      base linear velocity, body frame, x 2.0
3-5      base angular velocity, body frame, x 0.25
6-8      gravity direction in the body frame (projected gravity)
9-11     command (v_x, v_y, yaw_rate) x (2.0, 2.0, 0.25)
12-23    joint positions minus the default pose
24-35    joint velocities x 0.05
36-47    previous actions
=======  ==========================================================

Default reward terms (the IGE Anymal / Isaac Lab velocity-task terms; not multiplied by dt):

=======================  ========  =================================================
term                     weight    function
=======================  ========  =================================================
``track_lin_vel_xy``     1.0       exp(-||cmd_xy - v_xy||^2 / 0.25)
``track_ang_vel_z``      0.5       exp(-(cmd_yaw - w_z)^2 / 0.25)
``lin_vel_z``            -2.0      v_z^2 (no bouncing)
``ang_vel_xy``           -0.05     w_x^2 + w_y^2 (no rocking)
``joint_torques``        -2.5e-5   sum of squared joint torques (from MuJoCo actuator sensors)
``action_rate``          -0.01     ||a_t - a_{t-1}||^2 (smoothness)
=======================  ========  =================================================

Sensors: the touch sensor's largest value over the control step's 4 substeps ends an episode;
the joint torques are those applied during the last substep (as legged_gym's torque penalty).

Episodes: terminated when the base touches the ground (touch sensor > 1 N); time-out
after 1000 control steps (20 s). Physics: ``implicitfast``, 0.005 s steps, 4 per
control step (50 Hz control). Reset: the ``home`` pose with each joint scaled by
U(0.5, 1.5) (IGE Anymal), zero velocity, a new command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import mujoco
import numpy as np
import torch

from rlcourse.envs.locomotion.backend import load_model
from rlcourse.envs.locomotion.env import MujocoLocomotionEnv
from rlcourse.envs.locomotion.rewards import RewardSpec, RewardTerm

ASSET = Path(__file__).resolve().parent / "assets" / "quadruped.xml"


# ----------------------------------------------------------------------------- reward terms
def track_lin_vel_xy_exp(env: "QuadrupedEnv", std: float = 0.5) -> torch.Tensor:
    """exp(-||command_xy - v_xy||^2 / std^2), base frame."""
    err = (env.commands[:, :2] - env.root_lin_vel_b[:, :2]).pow(2).sum(dim=1)
    return torch.exp(-err / std**2)


def track_ang_vel_z_exp(env: "QuadrupedEnv", std: float = 0.5) -> torch.Tensor:
    """exp(-(command_yaw - w_z)^2 / std^2), base frame."""
    return torch.exp(-(env.commands[:, 2] - env.root_ang_vel_b[:, 2]).pow(2) / std**2)


def lin_vel_z_l2(env: Any) -> torch.Tensor:
    return env.root_lin_vel_b[:, 2].pow(2)


def ang_vel_xy_l2(env: Any) -> torch.Tensor:
    return env.root_ang_vel_b[:, :2].pow(2).sum(dim=1)


def joint_torques_l2(env: Any) -> torch.Tensor:
    return env.joint_torques.pow(2).sum(dim=1)


def action_rate_l2(env: Any) -> torch.Tensor:
    return (env.actions - env.prev_actions).pow(2).sum(dim=1)


def flat_orientation_l2(env: Any) -> torch.Tensor:
    """g_x^2 + g_y^2 of gravity in the base frame: 0 when the base is level."""
    return env.projected_gravity_b[:, :2].pow(2).sum(dim=1)


def dof_pos_limits(env: Any, soft: float = 0.9) -> torch.Tensor:
    """How far (rad, summed over the joints) the joints are outside their soft limits: the middle
    ``soft`` fraction of each joint's range (legged_gym's ``soft_dof_pos_limit``)."""
    mid = 0.5 * (env.dof_lower + env.dof_upper)
    half = 0.5 * soft * (env.dof_upper - env.dof_lower)
    return ((env.dof_pos - (mid + half)).clamp(min=0.0) + ((mid - half) - env.dof_pos).clamp(min=0.0)).sum(dim=1)


def foot_slip(env: "QuadrupedEnv") -> torch.Tensor:
    """Sum over the feet on the ground of their squared horizontal speed (m^2/s^2): a foot that
    carries the robot should not slide."""
    speed2 = env.feet_lin_vel_w[:, :, :2].pow(2).sum(dim=2)           # (N, 4)
    return (speed2 * env.feet_contact).sum(dim=1)


def feet_air_time(env: "QuadrupedEnv", threshold: float = 0.4) -> torch.Tensor:
    """legged_gym's step reward: at each touchdown, the swing's duration minus ``threshold`` (s),
    summed over the feet; 0 when the command is to stand (|v_xy command| < 0.1 m/s). Rewards
    steps longer than ``threshold`` and penalizes shuffling."""
    per_foot = (env.feet_last_air_time - threshold) * env.feet_first_contact
    moving = env.commands[:, :2].norm(dim=1) > 0.1
    return per_foot.sum(dim=1) * moving


PENALTIES = {
    "lin_vel_z": lin_vel_z_l2,
    "ang_vel_xy": ang_vel_xy_l2,
    "joint_torques": joint_torques_l2,
    "action_rate": action_rate_l2,
    "flat_orientation": flat_orientation_l2,
}
"""The built-in penalty terms a reward design may weigh (lab 6 has students write the others)."""


def reward_from_weights(weights: Mapping[str, float], functions: Mapping[str, Any]) -> dict[str, Any]:
    """``rewards=`` for ``make("Quadruped")`` from a design: the task's default terms removed, and
    one term per entry of ``weights``, its function looked up in ``functions`` or :data:`PENALTIES`.

    Raises:
        ValueError: a weight for a term that neither names, or a weight that is not a finite number.
    """
    import difflib
    import math

    known = {**PENALTIES, **dict(functions)}
    rewards: dict[str, Any] = {name: None for name in QuadrupedEnv.default_rewards()}
    for name, weight in weights.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known terms: {sorted(known)}"
            raise ValueError(f"reward weight for unknown term {name!r}{hint}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"the weight of {name!r} must be a finite number, got {weight!r}")
        rewards[name] = RewardTerm(known[name], float(weight))
    return rewards


class QuadrupedEnv(MujocoLocomotionEnv):
    """12-DoF quadruped, velocity-command tracking; see the module docstring.

    Args:
        num_envs, seed, device, rewards, randomization, nthread: as for :class:`AntEnv`.
        episode_length: control steps before a time-out (1000 = 20 s).
        action_scale: joint target offset per unit action (rad).
        command_ranges: ``{"lin_vel_x": (lo, hi), "lin_vel_y": ..., "ang_vel_yaw": ...}``.
        base_contact_force: newtons on the base that end the episode.
        clip_actions: actions are clipped to ``[-clip_actions, clip_actions]`` before they become
            joint targets (MuJoCo then clamps each target to its joint's range).
    """

    env_id = "Quadruped"
    obs_scales = {"lin_vel": 2.0, "ang_vel": 0.25, "dof_vel": 0.05}

    def __init__(
        self,
        num_envs: int = 1,
        seed: int | None = 0,
        device: str | torch.device = "cpu",
        rewards: RewardSpec | None = None,
        randomization: Mapping[str, Any] | None = None,
        episode_length: int = 1000,
        action_scale: float = 0.5,
        command_ranges: Mapping[str, tuple[float, float]] | None = None,
        base_contact_force: float = 1.0,
        clip_actions: float = 1.0,
        decimation: int = 4,
        nthread: int | None = None,
        xml_path: str | os.PathLike | None = None,
    ) -> None:
        model = load_model(xml_path or ASSET)
        if model.nu != 12 or model.nsensordata < 13:
            raise ValueError(f"{xml_path}: the Quadruped task needs 12 actuators, a base touch sensor and 12 torque sensors")
        self.action_scale = float(action_scale)
        self.base_contact_force = float(base_contact_force)
        ranges = {"lin_vel_x": (-1.0, 1.0), "lin_vel_y": (-0.5, 0.5), "ang_vel_yaw": (-1.0, 1.0)}
        for key, value in (command_ranges or {}).items():
            if key not in ranges:
                raise ValueError(f"command_ranges: unknown key {key!r}; use {sorted(ranges)}")
            lo, hi = value
            if lo > hi:
                raise ValueError(f"command_ranges[{key!r}]: low {lo} > high {hi}")
            ranges[key] = (float(lo), float(hi))
        self.command_ranges = ranges
        super().__init__(
            model, num_envs, seed, device, rewards, randomization,
            decimation=decimation, max_episode_length=episode_length, clip_actions=clip_actions,
            nthread=nthread, num_obs=48,
        )
        # The touch sensors (base, then the four feet): a touch in any substep counts.
        self.sim.sensor_max_over_substeps = np.array([0, *range(13, 17)])
        key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home")
        self.home_qpos = model.key_qpos[key].copy()
        self.default_dof_pos_np = self.home_qpos[self.act_qpos_idx]
        self.default_dof_pos = torch.tensor(self.default_dof_pos_np, dtype=torch.float32, device=self.device)
        self.commands = torch.zeros(num_envs, 3, device=self.device)
        self._command_scale = torch.tensor([2.0, 2.0, 0.25], device=self.device)
        # Foot contact bookkeeping for feet_air_time (legged_gym's, updated in _post_physics).
        self.feet_air_time = torch.zeros(num_envs, 4, device=self.device)
        """``(N, 4)`` seconds since each foot last touched the ground (0 while it touches)."""
        self.feet_last_air_time = torch.zeros(num_envs, 4, device=self.device)
        """``(N, 4)`` the swing time of each foot's step that ended on this control step."""
        self.feet_first_contact = torch.zeros(num_envs, 4, device=self.device)
        """``(N, 4)`` 1.0 for a foot that touched down on this control step after a swing, else 0.0."""
        self._last_contact = torch.ones(num_envs, 4, dtype=torch.bool, device=self.device)
        self.fixed_commands: torch.Tensor | None = None
        """``(N, 3)`` commands that every reset gives back instead of drawing new ones (see
        :meth:`set_commands`); ``None``: draw from ``command_ranges``."""

    def set_commands(self, commands: torch.Tensor | Sequence[Sequence[float]] | None) -> None:
        """Command every robot with a fixed ``(v_x, v_y, yaw_rate)``, row ``i`` for env ``i``, now
        and after every reset (evaluation, demos); ``None`` goes back to random commands.

        Raises:
            ValueError: not ``(num_envs, 3)``, or not finite.
        """
        if commands is None:
            self.fixed_commands = None
            return
        cmd = torch.as_tensor(commands, dtype=torch.float32).to(self.device)
        if tuple(cmd.shape) != (self.num_envs, 3) or not bool(torch.isfinite(cmd).all()):
            raise ValueError(f"commands must be {self.num_envs} finite rows (v_x, v_y, yaw_rate), "
                             f"shape ({self.num_envs}, 3); got shape {tuple(cmd.shape)}")
        self.fixed_commands = cmd.clone()
        self.commands.copy_(cmd)

    @classmethod
    def default_rewards(cls) -> dict[str, RewardTerm]:
        return {
            "track_lin_vel_xy": RewardTerm(track_lin_vel_xy_exp, 1.0),
            "track_ang_vel_z": RewardTerm(track_ang_vel_z_exp, 0.5),
            "lin_vel_z": RewardTerm(lin_vel_z_l2, -2.0),
            "ang_vel_xy": RewardTerm(ang_vel_xy_l2, -0.05),
            "joint_torques": RewardTerm(joint_torques_l2, -2.5e-5),
            "action_rate": RewardTerm(action_rate_l2, -0.01),
        }

    # ------------------------------------------------------------------ hooks
    def _action_to_ctrl(self, actions: torch.Tensor) -> np.ndarray:
        # Position servo targets; MuJoCo clamps them to each actuator's ctrlrange.
        return self.default_dof_pos_np + self.action_scale * actions.detach().to("cpu", torch.float64).numpy()

    def _kinematics(self, st: np.ndarray, sensordata: np.ndarray) -> dict[str, np.ndarray]:
        k = super()._kinematics(st, sensordata)
        k["base_contact"] = sensordata[:, 0]         # touch sensor: normal force on the base (N)
        k["joint_torques"] = sensordata[:, 1:13]     # actuatorfrc sensors, action order
        k["feet_contact_force"] = sensordata[:, 13:17]   # touch sensors of the feet FL FR HL HR (N)
        k["feet_vel_flat"] = sensordata[:, 17:29]        # framelinvel of the feet, world frame
        return k

    @property
    def feet_lin_vel_w(self) -> torch.Tensor:
        """``(N, 4, 3)`` linear velocity of each foot (FL, FR, HL, HR), world frame, m/s."""
        return self.feet_vel_flat.unflatten(1, (4, 3))

    @property
    def feet_contact(self) -> torch.Tensor:
        """``(N, 4)`` 1.0 for a foot pressed on the ground (touch sensor > 1 N) in this control step."""
        return (self.feet_contact_force > 1.0).float()

    def _post_physics(self) -> None:
        # legged_gym's air-time bookkeeping, with its contact filter: a foot counts as touching
        # if it touched in this control step or the last one (contacts flicker on a hard floor).
        # Buffers are updated in place: steps run in inference mode, resets may not.
        contact = self.feet_contact_force > 1.0
        touching = contact | self._last_contact
        self._last_contact.copy_(contact)
        self.feet_air_time += self.step_dt
        first = (self.feet_air_time > self.step_dt) & touching
        self.feet_first_contact.copy_(first)
        torch.mul(self.feet_air_time, first, out=self.feet_last_air_time)
        self.feet_air_time.mul_(~touching)

    def _get_terminated(self) -> torch.Tensor:
        return self.base_contact > self.base_contact_force

    def _get_observations(self) -> torch.Tensor:
        s = self.obs_scales
        return torch.cat(
            [
                self.root_lin_vel_b * s["lin_vel"],
                self.root_ang_vel_b * s["ang_vel"],
                self.projected_gravity_b,
                self.commands * self._command_scale,
                self.dof_pos - self.default_dof_pos,
                self.dof_vel * s["dof_vel"],
                self.actions,
            ],
            dim=1,
        )

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        ids = env_ids.cpu().numpy()
        k = len(ids)
        qpos = np.tile(self.home_qpos, (k, 1))
        joints = self.act_qpos_idx
        lo, hi = self._dof_limits_np
        qpos[:, joints] = np.clip(self.default_dof_pos_np * self._uniform((k, len(joints)), 0.5, 1.5).numpy(), lo, hi)
        self.sim.set_state(ids, qpos, np.zeros((k, self.model.nv)))
        if self.fixed_commands is not None:
            self.commands[env_ids] = self.fixed_commands[env_ids]
            self.feet_air_time[env_ids] = 0.0
            self._last_contact[env_ids] = True
            return
        r = self.command_ranges
        cmd = torch.stack([self._uniform((k,), *r["lin_vel_x"]), self._uniform((k,), *r["lin_vel_y"]),
                           self._uniform((k,), *r["ang_vel_yaw"])], dim=1)
        self.commands[env_ids] = cmd.to(self.device, torch.float32)
        self.feet_air_time[env_ids] = 0.0
        self._last_contact[env_ids] = True
