"""A ``DirectRLEnv``-style task skeleton on the embedded MuJoCo backend.

One :meth:`MujocoLocomotionEnv.step` runs, in Isaac Lab ``DirectRLEnv.step`` order:

1. validate the actions, add action noise, clip to ``[-clip_actions, clip_actions]``;
2. action latency (the actuators get the action from ``k`` control steps ago, or, for a
   latency in physics steps, the previous action for the first physics steps);
3. ``decimation`` physics steps for every env in one ``mujoco.rollout`` call;
4. ``episode_length += 1``; refresh the batched state tensors;
5. terminations (task rule, or a diverged simulation) and time-outs
   (``episode_length >= max_episode_length``, so an episode is at most
   ``max_episode_length`` steps long);
6. rewards from the reward terms; the observation the finished envs ended in is
   stored as ``extras["final_obs"]``;
7. reset the finished envs (reset-mode randomization, new initial state);
8. interval events (pushes, interval randomization);
9. observations of the (possibly new) state, plus observation noise.

Subclasses (the tasks) fill in the hooks named like Isaac Lab's:
``_action_to_ctrl``, ``_post_physics``, ``_get_terminated``, ``_get_observations``,
``_reset_idx`` and ``default_rewards``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import mujoco
import numpy as np
import torch

from rlcourse.envs.base import VecEnv
from rlcourse.envs.locomotion.backend import MujocoBatch
from rlcourse.envs.locomotion.randomization import DomainRandomization
from rlcourse.envs.locomotion.rewards import RewardManager, RewardSpec, RewardTerm, merge_reward_terms


# Rotation matrix of a unit quaternion (w, x, y, z): R = I + 2 * M(q q^T), where each entry
# of M is a sum of two +-products, e.g. R[0, 0] = 1 - 2 (y^2 + z^2), R[0, 1] = 2 (xy - wz).
# _QUAT_TO_MAT holds those +-1 coefficients, so the whole batch is one outer product and one
# matrix product (the same numbers as writing out the nine entries, in 4 NumPy calls instead of ~30).
_QUAT_TO_MAT = np.zeros((4, 4, 3, 3))
for (_r, _c), _terms in {
    (0, 0): ((-1, 2, 2), (-1, 3, 3)), (0, 1): ((1, 1, 2), (-1, 0, 3)), (0, 2): ((1, 1, 3), (1, 0, 2)),
    (1, 0): ((1, 1, 2), (1, 0, 3)), (1, 1): ((-1, 1, 1), (-1, 3, 3)), (1, 2): ((1, 2, 3), (-1, 0, 1)),
    (2, 0): ((1, 1, 3), (-1, 0, 2)), (2, 1): ((1, 2, 3), (1, 0, 1)), (2, 2): ((-1, 1, 1), (-1, 2, 2)),
}.items():
    for _sign, _a, _b in _terms:
        _QUAT_TO_MAT[_a, _b, _r, _c] = _sign
_QUAT_TO_MAT = _QUAT_TO_MAT.reshape(16, 9)
_IDENTITY_FLAT = np.eye(3).reshape(9)


RENDER_SHADOW_SIZE = 1024
"""Largest shadow map (pixels) of :meth:`MujocoLocomotionEnv.render`: MuJoCo's default 4096 costs
about ten times as much on software OpenGL (Mesa llvmpipe, a machine without a GPU)."""


def _rotation_matrices(quat: np.ndarray) -> np.ndarray:
    """Body -> world rotation matrices ``(N, 3, 3)`` of ``(w, x, y, z)`` quaternions ``(N, 4)``."""
    qq = (quat[:, :, None] * quat[:, None, :]).reshape(-1, 16)
    return (_IDENTITY_FLAT + 2.0 * (qq @ _QUAT_TO_MAT)).reshape(-1, 3, 3)


class MujocoLocomotionEnv(VecEnv):
    """Base class of the MuJoCo-backed legged tasks (a free-floating base plus actuated joints).

    Args:
        model: compiled ``MjModel``.
        num_envs: environments stepped together.
        seed: seeds the reset noise and the randomization draws (``None`` is the same as 0:
            these envs are always reproducible).
        device: torch device of the returned tensors (physics always runs on the CPU).
        rewards: overrides of the default reward terms (see :mod:`.rewards`).
        randomization: domain-randomization config (see :mod:`.randomization`).
        decimation: physics steps per control step.
        max_episode_length: control steps before a time-out.
        clip_actions: actions are clipped to ``[-clip_actions, clip_actions]``.
        nthread: rollout threads (default: all cores).
        num_obs: size of the observation vector the task produces.
    """

    env_id = "MujocoLocomotion"

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        seed: int | None,
        device: str | torch.device,
        rewards: RewardSpec | None,
        randomization: Mapping[str, Any] | None,
        decimation: int,
        max_episode_length: int,
        clip_actions: float,
        nthread: int | None,
        num_obs: int,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if not isinstance(decimation, int) or decimation < 1:
            raise ValueError(f"decimation must be a positive integer, got {decimation!r}")
        if not isinstance(max_episode_length, int) or max_episode_length < 1:
            raise ValueError(f"max_episode_length must be a positive integer, got {max_episode_length!r}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.decimation = decimation
        self.max_episode_length = max_episode_length
        self.clip_actions = float(clip_actions)
        self.physics_dt = float(model.opt.timestep)
        self.step_dt = self.physics_dt * decimation
        self.is_discrete = False
        self.num_actions = model.nu
        self.num_obs = num_obs
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (num_obs,), np.float32)
        self.single_action_space = gym.spaces.Box(-self.clip_actions, self.clip_actions, (self.num_actions,), np.float32)

        self._seed = seed
        # Two streams, so switching randomization on does not change the reset noise.
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        self.dr_generator = torch.Generator().manual_seed(self._dr_seed(seed))
        self.sim = MujocoBatch(model, num_envs, nthread=nthread)
        self.model = model

        # Actuated joints, in *action* order: joint i is the one driven by action i.
        joint_ids = model.actuator_trnid[:, 0]
        self.act_qpos_idx = np.asarray(model.jnt_qposadr[joint_ids], dtype=np.int64)
        self.act_dof_idx = np.asarray(model.jnt_dofadr[joint_ids], dtype=np.int64)
        rng = model.jnt_range[joint_ids]
        self._dof_limits_np = (rng[:, 0].copy(), rng[:, 1].copy())
        self._dof_span_np = rng[:, 1] - rng[:, 0]
        self.dof_lower = torch.tensor(rng[:, 0], dtype=torch.float32, device=self.device)
        self.dof_upper = torch.tensor(rng[:, 1], dtype=torch.float32, device=self.device)

        try:
            self.reward_terms = merge_reward_terms(self.default_rewards(), rewards)
            self.dr = DomainRandomization(randomization, self.sim, self.num_actions, self.dr_generator, self.device,
                                          joint_dofs=self.act_dof_idx, decimation=decimation)
        except Exception:
            self.sim.close()            # do not leak the rollout thread pool on a bad config
            raise
        self.reward_manager = RewardManager(self.reward_terms, num_envs, self.device)

        n = num_envs
        self.actions = torch.zeros(n, self.num_actions, device=self.device)
        self.prev_actions = torch.zeros(n, self.num_actions, device=self.device)
        self.episode_length = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_return = torch.zeros(n, device=self.device)
        self.start_xy = torch.zeros(n, 2, device=self.device)
        self.terminated = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.time_outs = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._needs_reset = True
        self._packed: torch.Tensor | None = None       # the batched state, see _refresh
        self._packed_np: np.ndarray | None = None
        self.dr.startup()

    # ------------------------------------------------------------------ task hooks
    @classmethod
    def default_rewards(cls) -> dict[str, RewardTerm]:
        """The task's reward terms and weights."""
        raise NotImplementedError

    def _action_to_ctrl(self, actions: torch.Tensor) -> np.ndarray:
        """Map clipped (and delayed) actions ``(N, num_actions)`` to MuJoCo ``ctrl`` ``(N, nu)``."""
        return actions.detach().to("cpu", torch.float64).numpy()

    def _post_physics(self) -> None:
        """Once per control step, after physics and before rewards (e.g. potentials)."""

    def _get_terminated(self) -> torch.Tensor:
        """A *new* bool tensor ``(num_envs,)``: which episodes reached a terminal state this step."""
        raise NotImplementedError

    def _get_observations(self) -> torch.Tensor:
        raise NotImplementedError

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        """Write new initial states for ``env_ids`` into ``self.sim`` (called before :meth:`_refresh`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def _kinematics(self, st: np.ndarray, sensordata: np.ndarray) -> dict[str, np.ndarray]:
        """Derived state from raw MuJoCo states ``st`` and sensor values (rows of ``sim.state``
        and ``sim.sensordata``), in NumPy (float64).

        Done in NumPy because these are many tiny element-wise operations on a
        ``(num_envs, k)`` array that already lives in host memory: NumPy's per-call cost
        is a third of torch's, and it all becomes torch in a single copy afterwards.
        """
        nq = self.sim.nq
        qpos, qvel = st[:, 1 : 1 + nq], st[:, 1 + nq : 1 + nq + self.sim.nv]
        quat = qpos[:, 3:7]                                   # MuJoCo order (w, x, y, z)
        rot = _rotation_matrices(quat)                        # body -> world, (N, 3, 3)
        lin_vel_w = qvel[:, 0:3]                              # free joint: world frame
        ang_vel_b = qvel[:, 3:6]                              # free joint: body frame
        return {
            "root_pos_w": qpos[:, 0:3],
            "root_quat_w": quat,
            "root_lin_vel_w": lin_vel_w,
            "root_ang_vel_b": ang_vel_b,
            "root_lin_vel_b": np.einsum("nji,nj->ni", rot, lin_vel_w),   # R^T v
            "root_ang_vel_w": np.einsum("nij,nj->ni", rot, ang_vel_b),   # R w
            "projected_gravity_b": -rot[:, 2, :],             # R^T (0, 0, -1)
            "forward_w": rot[:, :, 0],                        # body x axis in the world
            "up_w": rot[:, :, 2],                             # body z axis in the world
            "dof_pos": qpos[:, self.act_qpos_idx],
            "dof_vel": qvel[:, self.act_dof_idx],
        }

    def _refresh(self, env_ids: np.ndarray | None = None) -> None:
        """Publish the batched state as float32 torch attributes (``env.root_pos_w``, ``env.dof_vel``...).

        All of them are views into one ``(num_envs, k)`` tensor on ``device`` that is
        overwritten in place (only the rows ``env_ids`` after a reset), so reward terms
        always read the current state.
        """
        st = self.sim.state if env_ids is None else self.sim.state[env_ids]
        sens = self.sim.sensordata if env_ids is None else self.sim.sensordata[env_ids]
        parts = self._kinematics(st, sens)
        cols = [a if a.ndim == 2 else a.reshape(len(st), -1) for a in parts.values()]
        if self._packed is None:
            self._bind_state_views(parts, cols)
        if self._packed_np is not None:
            # CPU: the tensor shares memory with a NumPy array, so one concatenate writes
            # (and rounds to float32) straight into it; no temporary copies, no torch calls.
            if env_ids is None:
                np.concatenate(cols, axis=1, out=self._packed_np)
            else:
                self._packed_np[env_ids] = np.concatenate(cols, axis=1)
            return
        packed = torch.from_numpy(np.concatenate(cols, axis=1).astype(np.float32)).to(self.device)
        if env_ids is None:
            self._packed.copy_(packed)
        else:
            self._packed[torch.as_tensor(env_ids, device=self.device)] = packed

    def _bind_state_views(self, parts: dict[str, np.ndarray], cols: list[np.ndarray]) -> None:
        """Allocate the packed state tensor and set one attribute per kinematics entry as a view of it."""
        width = sum(c.shape[1] for c in cols)
        if self.device.type == "cpu":
            self._packed_np = np.zeros((self.num_envs, width), dtype=np.float32)
            self._packed = torch.from_numpy(self._packed_np)
        else:
            self._packed_np = None
            self._packed = torch.zeros(self.num_envs, width, device=self.device)
        i = 0
        for (name, arr), col in zip(parts.items(), cols):
            view = self._packed[:, i : i + col.shape[1]]
            setattr(self, name, view if arr.ndim == 2 else view[:, 0])
            i += col.shape[1]

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env. ``seed`` (default: the constructor's) re-seeds the reset noise.

        A new ``seed`` also re-seeds the randomization stream for later draws, but values drawn
        at ``startup`` stay as they are: for those, build the env with that seed.
        """
        base = self._seed if seed is None else seed
        if base is not None:
            self.generator.manual_seed(int(base))
            if seed is not None:
                self.dr_generator.manual_seed(self._dr_seed(seed))
        ids = torch.arange(self.num_envs, device=self.device)
        self._reset_envs(ids)
        self._refresh()
        self._needs_reset = False
        obs = self._get_observations()
        noise = self.dr.observation_noise(tuple(obs.shape))
        return (obs if noise is None else obs + noise), {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = self.check_actions(actions)
        if actions.device != self.device:
            actions = actions.to(self.device)
        actions = self.dr.perturb_actions(actions)
        self.prev_actions = self.actions
        self.actions = actions.clamp(-self.clip_actions, self.clip_actions)
        applied = self.dr.delay_actions(self.actions)
        # (N, nu), or (N, decimation, nu) when a latency in physics steps holds the previous
        # action for the first physics steps of this control step.
        ctrl = self.dr.substep_ctrl(self._action_to_ctrl(applied), self._action_to_ctrl)
        diverged = self.sim.step(ctrl, self.decimation)

        self.episode_length += 1
        self._refresh()
        self._post_physics()
        self.terminated = self._get_terminated()
        diverged_t = None
        if diverged.any():
            diverged_t = torch.from_numpy(diverged).to(self.device)
            self.terminated = self.terminated | diverged_t
        self.time_outs = (self.episode_length >= self.max_episode_length) & ~self.terminated
        # A blown-up simulation gives a NaN state: end the episode with reward 0 rather
        # than poisoning the learner.
        reward = self.reward_manager.compute(self, invalid=diverged_t)
        self.episode_return += reward

        done = self.terminated | self.time_outs
        obs = self._get_observations()
        # terminated / time_outs are new tensors every step (never written in place), so
        # they can be handed out without copies (_get_terminated must return a new tensor).
        extras: dict[str, Any] = {"time_outs": self.time_outs}
        final_obs = obs
        reset_ids = None
        if done.any():
            if self._packed_np is not None:    # CPU: NumPy finds the indices with less overhead
                reset_ids = np.flatnonzero(done.numpy())
                ids = torch.from_numpy(reset_ids)
            else:
                ids = done.nonzero().flatten()
                reset_ids = ids.cpu().numpy()
            final_obs = torch.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)   # a new tensor
            episode = {                        # indexing with ids copies, so no clones needed
                "return": self.episode_return[ids],
                "length": self.episode_length[ids],
                "env_ids": ids,
                "x_distance": self.root_pos_w[ids, 0] - self.start_xy[ids, 0],
            }
            episode.update(self.reward_manager.pop_episode_sums(ids))
            extras["episode"] = episode
            self._reset_envs(ids, reset_ids)
        if self.dr.on_step():                 # a push changed velocities of some envs
            reset_ids = None
            self._refresh()
            obs = self._get_observations()
            # The protocol: final_obs rows of unfinished envs equal obs (pushed velocities included).
            final_obs = torch.where(done[:, None], final_obs, obs) if done.any() else obs
        elif reset_ids is not None:
            self._refresh(reset_ids)
            obs = self._get_observations()
        noise = self.dr.observation_noise(tuple(obs.shape))
        if noise is not None:
            obs = obs + noise
            final_obs = final_obs + noise
        extras["final_obs"] = final_obs
        return obs, reward, self.terminated, self.time_outs, extras

    def _reset_envs(self, env_ids: torch.Tensor, ids_np: np.ndarray | None = None) -> None:
        if ids_np is None:
            ids_np = env_ids.cpu().numpy()
        self.dr.on_reset(ids_np)
        self._reset_idx(env_ids)
        # index_fill_ is one torch call; `x[ids] = 0.0` would be three (scalar to tensor, cast, index_put_).
        for buf in (self.actions, self.prev_actions, self.episode_length, self.episode_return,
                    self.reward_manager.episode_sums):
            buf.index_fill_(0, env_ids, 0)
        self.start_xy[env_ids] = self._from_numpy(self.sim.qpos[ids_np, 0:2].astype(np.float32))

    def render(self, env_id: int | Sequence[int] = 0, width: int = 480, height: int = 360,
               camera: str | int = "track", spacing: float | None = None) -> np.ndarray:
        """An RGB frame ``(height, width, 3)`` uint8 of env ``env_id``, rendered offscreen.

        ``env_id`` may also list several envs of the batch: they are drawn in one picture, on a
        grid ``spacing`` metres apart (default: twice the robot's reach plus 0.5 m), seen from above by a
        camera that follows the group (``camera`` is ignored). Each env is still its own
        simulation: the robots are only drawn side by side, as Isaac Gym's viewer lays out its
        envs, and never touch.

        Rendering settings are chosen for CPU (software) OpenGL: a 1024-pixel shadow map, no
        multisampling, no floor reflections, and no shadows on a grid: a 320 x 240 frame of one
        robot costs ~10 ms of CPU instead of ~100 ms with MuJoCo's defaults, a 480 x 360 grid of
        16 Quadrupeds ~35 ms.

        Needs an OpenGL backend: EGL (Debian package ``libegl1``) or OSMesa
        (``libosmesa6``), chosen with ``MUJOCO_GL=egl|osmesa`` before MuJoCo is imported
        (``rlcourse.envs.locomotion`` picks EGL on headless Linux).
        """
        ids = [env_id] if isinstance(env_id, (int, np.integer)) else [int(i) for i in env_id]
        if not ids:
            raise ValueError("env_id lists no env")
        for i in ids:
            if not 0 <= i < self.num_envs:
                raise ValueError(f"env_id must lie in [0, {self.num_envs - 1}], got {i}")
        renderer = getattr(self, "_renderer", None)
        if renderer is None or (renderer.height, renderer.width) != (height, width):
            if renderer is not None:
                renderer.close()
            quality = self.model.vis.quality
            quality.shadowsize = min(int(quality.shadowsize), RENDER_SHADOW_SIZE)
            quality.offsamples = 0
            try:
                renderer = mujoco.Renderer(self.model, height, width)
            except Exception as exc:  # GL backends raise several types
                raise RuntimeError(
                    f"offscreen rendering failed ({exc}). Start Python with MUJOCO_GL=egl (needs libegl1) "
                    "or MUJOCO_GL=osmesa (needs libosmesa6) set before mujoco is imported."
                ) from exc
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._renderer = renderer
        # Shadows make a grid of robots three times as expensive: only a single robot gets them.
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = len(ids) == 1
        if len(ids) == 1:
            if isinstance(camera, str) and mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                camera = -1                                   # the free camera
            renderer.update_scene(self.sim.data_for(ids[0]), camera=camera)
        else:
            self._grid_scene(renderer.scene, ids, spacing)
        return renderer.render().copy()

    def _robot_reach(self) -> float:
        """Horizontal distance from the root to the farthest point of the robot, in the model's
        default pose (metres): the size of one robot on a grid of several."""
        reach = getattr(self, "_reach", None)
        if reach is None:
            data = mujoco.MjData(self.model)
            mujoco.mj_forward(self.model, data)
            robot = self.model.geom_bodyid > 0                     # geoms not fixed to the world
            offsets = np.linalg.norm(data.geom_xpos[robot, :2] - data.qpos[None, 0:2], axis=1)
            reach = self._reach = float((offsets + self.model.geom_rbound[robot]).max())
        return reach

    def _grid_scene(self, scene: mujoco.MjvScene, ids: list[int], spacing: float | None) -> None:
        """Fill ``scene`` with envs ``ids`` laid out on a grid (row-major, env ``ids[0]`` top left)."""
        n = len(ids)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        step = 2.0 * self._robot_reach() + 0.5 if spacing is None else float(spacing)
        offsets = np.array([((k % cols - (cols - 1) / 2) * step, ((rows - 1) / 2 - k // cols) * step)
                            for k in range(n)])
        centre = (self.sim.qpos[ids, 0:2] + offsets).mean(axis=0)
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = (centre[0], centre[1], 0.0)
        cam.distance = 1.2 * step * max(cols, rows) + 1.0
        cam.elevation, cam.azimuth = -35.0, 90.0                     # from -y, looking at +y; +x to the right
        option, perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        dynamic = int(mujoco.mjtCatBit.mjCAT_DYNAMIC)
        for k, i in enumerate(ids):
            data = self.sim.data_for(i)
            first = scene.ngeom
            if k == 0:      # the floor, lights and camera, and env ids[0]'s robot
                first = 0
                mujoco.mjv_updateScene(self.model, data, option, perturb, cam, int(mujoco.mjtCatBit.mjCAT_ALL), scene)
            else:           # only the moving bodies of the others
                mujoco.mjv_addGeoms(self.model, data, option, perturb, dynamic, scene)
            for g in range(first, scene.ngeom):
                geom = scene.geoms[g]
                if geom.category == dynamic:
                    geom.pos[0] += offsets[k, 0]
                    geom.pos[1] += offsets[k, 1]

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None
        self.sim.close()

    # ------------------------------------------------------------------ helpers
    def _from_numpy(self, array: np.ndarray) -> torch.Tensor:
        """A NumPy array as a tensor on ``device`` (no copy, and no torch call, on the CPU)."""
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    @staticmethod
    def _dr_seed(seed: int | None) -> int:
        return (0 if seed is None else int(seed)) * 7919 + 104729

    def _uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        """U(low, high) from the env's own generator (so resets are seeded), float64 CPU."""
        return low + (high - low) * torch.rand(shape, generator=self.generator, dtype=torch.float64)

    def _uniform_np(self, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        """:meth:`_uniform` as a NumPy array: the same draws and values, one torch call fewer."""
        return low + (high - low) * torch.rand(shape, generator=self.generator, dtype=torch.float64).numpy()
