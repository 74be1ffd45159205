"""``Ant``: the IsaacGymEnvs Ant task on MuJoCo's ant (gymnasium's ``ant.xml``), real physics on CPU.

The robot is gymnasium's ``ant.xml`` (shipped inside the gymnasium wheel; nothing is
downloaded): a 0.25 m sphere torso with four 2-joint legs, 8 torque motors with gear
150. The task logic follows IsaacGymEnvs ``tasks/ant.py``: walk toward a target
1000 m away along +x, with its potential-based progress reward, alive bonus, upright
and heading bonuses, action and energy costs and a joints-at-limit cost.

Actions ``(num_envs, 8)``, clipped to ``[-1, 1]``; joint torque = action x 150 (the
motor gear) x ``power_scale``. Action ``i`` drives actuator ``i`` of ``ant.xml``:
``hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3``.

Observation ``(num_envs, 36)`` float32 (IsaacGymEnvs' 60 minus the 24 foot-force
values, as in Isaac Lab's Ant port):

=======  ==================================================================
index    content
=======  ==================================================================
0        torso height z (m)
1-3      torso linear velocity, body frame (m/s)
4-6      torso angular velocity, body frame (rad/s)
7, 8     yaw, roll (rad)
9        angle to the target, relative to the heading (rad, wrapped)
10       up projection: z component of the torso's up axis (1 = upright)
11       heading projection: cosine between the torso's forward axis and the
         direction to the target
12-19    joint positions mapped to [-1, 1] by their limits (action order)
20-27    joint velocities x 0.2 (``dof_vel_scale``; action order)
28-35    the (clipped) actions of the previous step
=======  ==================================================================

Default reward terms (IsaacGymEnvs ``Ant.yaml`` weights; see :func:`AntEnv.default_rewards`):

==================  =======  ==========================================================
term                weight   function
==================  =======  ==========================================================
``progress``        1.0      potential difference, potential = -distance_to_target / dt
                             (= speed toward the target, m/s)
``alive``           0.5      1 every step
``upright``         0.1      1 if up projection > 0.93
``heading``         0.5      1 if heading projection > 0.8, else heading_proj / 0.8
``action_l2``       -0.005   sum of squared actions
``energy``          -0.05    sum |action x joint velocity x 0.2|
``joints_at_limit`` -0.1     number of joints within 0.5 % of the range from either
                             limit (IGE counts the upper limit only)
``termination``     -2.0     1 on the step the ant falls (IGE *replaces* the reward
                             with ``deathCost``; we add it, Isaac Lab manager style)
==================  =======  ==========================================================

Episodes: terminated when the torso height drops below 0.31 m; time-out after 1000
control steps. Physics: ``implicitfast`` integrator, 0.01 s steps, 5 per control step
(``dt = 0.05`` s, as gymnasium's Ant-v5). Pass ``integrator="rk4"`` for gymnasium's
exact integrator (about 3x slower). Reset: the standing pose of ``ant.xml``
(``init_qpos``: torso at 0.55 m, legs bent) plus U(-0.2, 0.2) rad on the joints
(clamped to their limits) and U(-0.1, 0.1) on the joint velocities, IGE's reset noise.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import mujoco
import numpy as np
import torch

from rlcourse.envs.locomotion.backend import gymnasium_asset, load_model
from rlcourse.envs.locomotion.env import MujocoLocomotionEnv
from rlcourse.envs.locomotion.rewards import RewardSpec, RewardTerm

# ----------------------------------------------------------------------------- reward terms
# Each is func(env, **params) -> (num_envs,): vectorized over all envs.


def progress(env: "AntEnv") -> torch.Tensor:
    """Potential-based progress toward the target: (phi_t - phi_{t-1}) with phi = -distance / dt."""
    return env.potentials - env.prev_potentials


def alive(env: Any) -> torch.Tensor:
    """A constant bonus for every step the robot has not fallen."""
    return torch.ones(env.num_envs, device=env.device)


def upright(env: "AntEnv", threshold: float = 0.93) -> torch.Tensor:
    """1 when the torso's up axis is within ~21 degrees of vertical."""
    return (env.up_proj > threshold).float()


def heading(env: "AntEnv", threshold: float = 0.8) -> torch.Tensor:
    """Facing the target: 1 above ``threshold``, proportional below (IGE)."""
    # = where(heading_proj > threshold, 1, heading_proj / threshold), in two torch calls.
    return torch.clamp(env.heading_proj / threshold, max=1.0)


def action_l2(env: Any) -> torch.Tensor:
    """Sum of squared actions (effort)."""
    return env.actions.pow(2).sum(dim=1)


def energy(env: "AntEnv") -> torch.Tensor:
    """Sum of |action x scaled joint velocity|: mechanical power, in action units."""
    return (env.actions * env.dof_vel * env.dof_vel_scale).abs().sum(dim=1)


def joints_at_limit(env: Any, threshold: float = 0.99) -> torch.Tensor:
    """How many joints are within 0.5 % of their range from either limit (|scaled position| > 0.99).

    IGE counts only the upper limit (``obs[:, 12:20] > 0.99``); a joint pressed against its
    lower stop is just as stuck, so both count here.
    """
    return (env.dof_pos_scaled.abs() > threshold).sum(dim=1, dtype=torch.float32)


def is_terminated(env: Any) -> torch.Tensor:
    """1 on the step an episode terminates (not on time-outs)."""
    return env.terminated.float()


# Terms that are not in the default reward (Isaac Lab ``mdp`` style). Lab 3 builds its reward
# from five terms: forward_velocity, is_alive, energy, flat_orientation_l2 and is_terminated.


def forward_velocity(env: Any) -> torch.Tensor:
    """Torso velocity along the world +x axis (toward the target), m/s."""
    return env.root_lin_vel_w[:, 0]


def is_alive(env: Any) -> torch.Tensor:
    """1 on every step except the one on which the episode terminates (Isaac Lab ``is_alive``)."""
    return (~env.terminated).float()


def flat_orientation_l2(env: Any) -> torch.Tensor:
    """Squared x, y components of gravity in the body frame: sin^2(tilt), 0 when level."""
    return env.projected_gravity_b[:, :2].pow(2).sum(dim=1)


class AntEnv(MujocoLocomotionEnv):
    """IsaacGymEnvs-style Ant on MuJoCo; see the module docstring for spaces and rewards.

    Args:
        num_envs: environments stepped together.
        seed: seeds resets and randomization (same seed and actions -> same trajectory).
        device: torch device of the returned tensors.
        rewards: reward-term overrides, e.g. ``{"energy": 0.0, "mine": RewardTerm(f, 1.0)}``.
        randomization: domain-randomization config (:mod:`rlcourse.envs.locomotion.randomization`).
        episode_length: control steps before a time-out (1000).
        termination_height: torso height (m) below which the ant has fallen (0.31).
        power_scale: multiplies the motor torques (IGE ``powerScale``; applied to the motor gear).
        integrator, timestep, decimation: physics settings (``implicitfast``, 0.01 s, 5).
        nthread: rollout threads (default: all cores).
        xml_path: another MJCF with the same structure (default: gymnasium's ``ant.xml``).
    """

    env_id = "Ant"
    asset = "ant.xml"          # gymnasium's MJCF
    num_actuators = 8
    dof_vel_scale = 0.2
    target = (1000.0, 0.0)

    def __init__(
        self,
        num_envs: int = 1,
        seed: int | None = 0,
        device: str | torch.device = "cpu",
        rewards: RewardSpec | None = None,
        randomization: Mapping[str, Any] | None = None,
        episode_length: int = 1000,
        termination_height: float = 0.31,
        power_scale: float = 1.0,
        integrator: str = "implicitfast",
        timestep: float = 0.01,
        decimation: int = 5,
        nthread: int | None = None,
        xml_path: str | os.PathLike | None = None,
    ) -> None:
        model = load_model(xml_path or gymnasium_asset(self.asset), integrator=integrator, timestep=timestep)
        if model.nu != self.num_actuators or model.jnt_type[0] != mujoco.mjtJoint.mjJNT_FREE:
            raise ValueError(f"{xml_path or self.asset}: the {self.env_id} task needs a free-floating torso and "
                             f"{self.num_actuators} actuators, got nu={model.nu}")
        self.termination_height = float(termination_height)
        self.power_scale = float(power_scale)
        if not self.power_scale > 0:
            raise ValueError(f"power_scale must be > 0, got {power_scale!r}")
        if self.power_scale != 1.0:
            # Scale the motor gear, not the control: MuJoCo clamps ctrl to ctrlrange ([-1, 1]
            # for the ant), which would cap the torque at the unscaled maximum.
            model.actuator_gear[:, 0] *= self.power_scale
        self._target_np = np.asarray(self.target, dtype=np.float64)
        # Actions in [-1, 1] map onto each actuator's control range (the Ant's is [-1, 1]
        # already; the humanoid's [-0.4, 0.4]), so the policy always works in unit actions.
        half_range = np.where(model.actuator_ctrllimited.astype(bool),
                              np.abs(model.actuator_ctrlrange).max(axis=1), 1.0)
        self._ctrl_scale = None if np.all(half_range == 1.0) else half_range
        super().__init__(
            model, num_envs, seed, device, rewards, randomization,
            decimation=decimation, max_episode_length=episode_length, clip_actions=1.0,
            nthread=nthread, num_obs=12 + 3 * self.num_actuators,
        )
        # Standing pose from ant.xml's <numeric name="init_qpos">, else qpos0.
        init = model.qpos0.copy()
        nid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_NUMERIC, "init_qpos")
        if nid >= 0 and model.numeric_size[nid] == model.nq:
            adr = model.numeric_adr[nid]
            init = model.numeric_data[adr : adr + model.nq].copy()
        self.init_qpos = init
        self.potentials = torch.zeros(num_envs, device=self.device)
        self.prev_potentials = torch.zeros(num_envs, device=self.device)

    # Default term -> weight (IGE Ant.yaml); subclasses change the weights, not the terms.
    reward_weights: dict[str, float] = {
        "progress": 1.0, "alive": 0.5, "upright": 0.1, "heading": 0.5,
        "action_l2": -0.005, "energy": -0.05, "joints_at_limit": -0.1, "termination": -2.0,
    }

    @classmethod
    def default_rewards(cls) -> dict[str, RewardTerm]:
        funcs = {"progress": progress, "alive": alive, "upright": upright, "heading": heading,
                 "action_l2": action_l2, "energy": energy, "joints_at_limit": joints_at_limit,
                 "termination": is_terminated}
        return {name: RewardTerm(funcs[name], weight) for name, weight in cls.reward_weights.items()}

    # ------------------------------------------------------------------ hooks
    def _action_to_ctrl(self, actions: torch.Tensor) -> np.ndarray:
        actions = actions.detach()
        if self._ctrl_scale is None:
            # float32 is fine: the backend widens it to float64 as it copies it into its buffer.
            return (actions if actions.device.type == "cpu" else actions.cpu()).numpy()
        return actions.to("cpu", torch.float64).numpy() * self._ctrl_scale

    def _kinematics(self, st: np.ndarray, sensordata: np.ndarray) -> dict[str, np.ndarray]:
        k = super()._kinematics(st, sensordata)
        fwd, up, pos = k["forward_w"], k["up_w"], k["root_pos_w"]
        yaw = np.arctan2(fwd[:, 1], fwd[:, 0])
        to_target = self._target_np - pos[:, :2]
        # Two-term sums written out: the same roundings as .sum(axis=1), without a reduction's cost.
        tx, ty = to_target[:, 0], to_target[:, 1]
        dist = np.sqrt(tx * tx + ty * ty)
        safe_dist = np.maximum(dist, 1e-6)
        angle = np.arctan2(ty, tx) - yaw
        k["yaw"] = yaw
        # Z-Y-X roll = atan2(R21, R22); the gravity direction in the body frame is -R[2, :].
        k["roll"] = np.arctan2(-k["projected_gravity_b"][:, 1], -k["projected_gravity_b"][:, 2])
        k["angle_to_target"] = np.arctan2(np.sin(angle), np.cos(angle))
        k["target_dist"] = dist
        # IGE's potential -distance / dt, rounded like the float32 torch expression would be.
        k["potential"] = -dist.astype(np.float32) / np.float32(self.step_dt)
        k["up_proj"] = up[:, 2]
        k["heading_proj"] = fwd[:, 0] * (tx / safe_dist) + fwd[:, 1] * (ty / safe_dist)   # cosine to the target
        lo, hi = self._dof_limits_np
        k["dof_pos_scaled"] = (2.0 * k["dof_pos"] - hi - lo) / self._dof_span_np
        # The observation minus its last block (the actions), assembled here with one NumPy
        # call instead of a dozen small torch calls in _get_observations every step. The
        # velocity scaling is done in float32, exactly as torch would do it.
        k["obs_state"] = np.concatenate(
            [
                pos[:, 2:3],
                k["root_lin_vel_b"],
                k["root_ang_vel_b"],
                yaw[:, None],
                k["roll"][:, None],
                k["angle_to_target"][:, None],
                k["up_proj"][:, None],
                k["heading_proj"][:, None],
                k["dof_pos_scaled"],
                k["dof_vel"].astype(np.float32) * np.float32(self.dof_vel_scale),
            ],
            axis=1,
        )
        return k

    def _post_physics(self) -> None:
        self.prev_potentials = self.potentials
        self.potentials = self.potential.clone()   # a copy: the view is overwritten by the next refresh

    def _get_terminated(self) -> torch.Tensor:
        return self.root_pos_w[:, 2] < self.termination_height

    def _get_observations(self) -> torch.Tensor:
        # obs_state holds, in order: torso height, lin_vel_b, ang_vel_b, yaw, roll,
        # angle_to_target, up_proj, heading_proj, dof_pos_scaled, dof_vel x dof_vel_scale
        # (see _kinematics and the table in the module docstring).
        return torch.cat([self.obs_state, self.actions], dim=1)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        ids = env_ids.cpu().numpy()
        k = len(ids)
        m = self.model
        qpos = np.empty((k, m.nq))
        qpos[:] = self.init_qpos
        qvel = np.zeros((k, m.nv))
        joints = self.act_qpos_idx
        noise = self._uniform_np((k, len(joints)), -0.2, 0.2)
        lo, hi = self._dof_limits_np
        # = np.clip(qpos[:, joints] + noise, lo, hi), without np.clip's Python-level dispatch.
        qpos[:, joints] = np.minimum(np.maximum(qpos[:, joints] + noise, lo), hi)
        qvel[:, self.act_dof_idx] = self._uniform_np((k, len(joints)), -0.1, 0.1)
        self.sim.set_state(ids, qpos, qvel)
        # Potentials restart from the new position, so the first progress reward is 0-ish. Every
        # episode starts at the same root position (init_qpos), so it is one number: -dist / dt in
        # float32 maths, as the torch expression would round it (a Python float holds it exactly).
        dx, dy = self._target_np - self.init_qpos[:2]
        potential = float(-np.float32(np.sqrt(dx * dx + dy * dy)) / np.float32(self.step_dt))
        self.potentials.index_fill_(0, env_ids, potential)
        self.prev_potentials.index_fill_(0, env_ids, potential)


class HumanoidEnv(AntEnv):
    """The IsaacGymEnvs Humanoid task on gymnasium's ``humanoid.xml``: the Ant's task logic
    (walk toward a target along +x) on a 17-actuator humanoid.

    Same observation layout as the Ant with 17 joints: ``(num_envs, 63)`` = 12 torso/target
    values, 17 scaled joint positions, 17 joint velocities x 0.1, 17 previous actions. Actions
    ``(num_envs, 17)`` in ``[-1, 1]`` are scaled to the motors' control range ``[-0.4, 0.4]``
    (torque = control x gear, gears 25-300 as in ``humanoid.xml``). Reward terms and weights
    from IGE ``Humanoid.yaml``: ``progress`` 1.0, ``alive`` 2.0, ``upright`` 0.1, ``heading``
    0.5, ``action_l2`` -0.01, ``energy`` -0.05, ``joints_at_limit`` -0.25, ``termination``
    -1.0. Terminated when the torso drops below 0.8 m (it starts at 1.4 m); physics: the
    model's 0.003 s step, ``implicitfast``, 5 substeps per control step (``dt = 0.015`` s,
    as gymnasium's Humanoid-v5). Takes the same keyword arguments as :class:`AntEnv`.
    """

    env_id = "Humanoid"
    asset = "humanoid.xml"
    num_actuators = 17
    dof_vel_scale = 0.1

    def __init__(self, num_envs: int = 1, seed: int | None = 0, device: str | torch.device = "cpu",
                 termination_height: float = 0.8, timestep: float = 0.003, **kwargs: Any) -> None:
        super().__init__(num_envs=num_envs, seed=seed, device=device, termination_height=termination_height,
                         timestep=timestep, **kwargs)

    reward_weights = {**AntEnv.reward_weights, "alive": 2.0, "action_l2": -0.01, "joints_at_limit": -0.25,
                      "termination": -1.0}   # IGE Humanoid.yaml
