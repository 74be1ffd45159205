"""Run Isaac Lab and IsaacGymEnvs tasks through the rlcourse :class:`VecEnv` protocol.

Code written against :class:`~rlcourse.envs.VecEnv` (our MuJoCo tasks, gymnasium
tasks) then trains on the GPU simulators without changes::

    env = rlcourse.envs.make("isaaclab:Isaac-Ant-Direct-v0", num_envs=4096, device="cuda:0")
    env = rlcourse.envs.make("isaacgym:Ant", num_envs=4096, device="cuda:0")

or, with an environment you created yourself::

    from rlcourse.envs.isaac import IsaacLabAdapter, VecTaskAdapter
    env = IsaacLabAdapter(gym.make("Isaac-Ant-Direct-v0", cfg=cfg))
    env = VecTaskAdapter(isaacgymenvs.make(seed=0, task="Ant", num_envs=4096, ...))

The two simulators disagree on the step contract, and that is what the adapters are for:

=====================  ===================================  ===================================
                       Isaac Lab (``DirectRLEnv``,           IsaacGymEnvs ``VecTask``
                       ``ManagerBasedRLEnv``)
=====================  ===================================  ===================================
``step`` returns       ``obs, rew, terminated, truncated,    ``obs_dict, rew, reset_buf, extras``
                       extras``
observations           dict of groups: ``{"policy": ...,     ``{"obs": ..., "states": ...}``
                       "critic": ...}``                      (``"states"`` only if num_states > 0)
done flags             two bool tensors, may both be True    one ``long`` buffer (1 = done), the
                                                             env's own buffer, not a copy
time-outs              not in the raw env's extras (the      ``extras["time_outs"]`` (includes
                       RSL-RL wrapper adds them)             envs that also fell on the last step)
resets                 **same step**: the obs of a done      **deferred**: the obs of a done env
                       env is its next episode's first obs   is its terminal obs; it is reset at
                                                             the start of the *next* step's
                                                             ``post_physics_step``
episode statistics     ``extras["log"]`` (per-term means)    none
=====================  ===================================  ===================================

Both adapters return our protocol: ``(obs, reward, terminated, truncated, extras)``
with same-step resets, ``extras["time_outs"]`` (= ``truncated``), and
``extras["episode"]`` with per-episode returns and lengths tracked by the adapter.

The simulator packages are imported only when an adapter is created through
:func:`make_isaaclab` / :func:`make_isaacgym`; the adapter classes themselves only
need torch, so they work on any object that follows the documented API.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from rlcourse.envs.base import VecEnv

_GPU_NOTE = (
    "It needs Linux and an NVIDIA GPU with a recent driver; on a laptop without one, "
    "use the MuJoCo tasks instead (rlcourse.envs.make('Ant'))."
)


def _box(space: Any, name: str) -> gym.spaces.Box:
    """A gymnasium ``Box`` from a gym / gymnasium ``Box``-like space (IGE uses the old ``gym`` package)."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        raise ValueError(f"{name} must be a Box space with low/high, got {space!r}")
    low = np.asarray(low, dtype=np.float32).reshape(-1)
    high = np.asarray(high, dtype=np.float32).reshape(-1)
    return gym.spaces.Box(low, high, low.shape, np.float32)


class _EpisodeTracker:
    """Per-env running return and length; emits one entry per finished episode."""

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float32, device=device)
        self.length = torch.zeros(num_envs, dtype=torch.long, device=device)

    def reset(self) -> None:
        self.ret.zero_()
        self.length.zero_()

    def step(self, reward: torch.Tensor, done: torch.Tensor) -> dict[str, torch.Tensor] | None:
        self.ret += reward
        self.length += 1
        if not done.any():
            return None
        ids = done.nonzero().flatten()
        episode = {"return": self.ret[ids].clone(), "length": self.length[ids].clone(), "env_ids": ids}
        self.ret[ids] = 0.0
        self.length[ids] = 0
        return episode


# --------------------------------------------------------------------------- Isaac Lab
class IsaacLabAdapter(VecEnv):
    """An Isaac Lab ``DirectRLEnv`` / ``ManagerBasedRLEnv`` as an rlcourse :class:`VecEnv`.

    Isaac Lab already resets done envs inside ``step``, so observations pass
    through unchanged; the adapter picks the observation group, validates actions,
    and adds what our protocol has and Isaac Lab does not:

    * ``extras["time_outs"]``: ``truncated`` (like Isaac Lab's RSL-RL wrapper).
      Isaac Lab may report ``terminated`` and ``truncated`` both True for one env
      (it fell on its last step); we count that as terminated, not truncated.
    * ``extras["episode"]``: per-episode ``return`` / ``length`` / ``env_ids``.
    * ``extras["final_obs"]``: only with ``capture_final_obs=True`` (see below).
      Without it, PPO bootstraps time-outs with ``V(s_t)`` like rsl_rl does.

    ``extras["log"]`` (Isaac Lab's per-term episode means) and the other keys of
    the env's extras are passed through, plus ``extras["observations"]``: all
    observation groups (e.g. ``"critic"`` for an asymmetric critic).

    Args:
        env: the Isaac Lab env, as returned by ``gym.make("Isaac-...", cfg=cfg)`` (gymnasium
            wrappers are fine) or the unwrapped env.
        obs_group: the observation group fed to the policy.
        clip_actions: clip actions to ``[-clip_actions, clip_actions]`` before stepping
            (Isaac Lab itself does not clip; ``None`` keeps them as they are).
        capture_final_obs: record the observation each done env ended in, by calling the
            task's ``_get_observations()`` just before its ``_reset_idx``. Only for
            ``DirectRLEnv`` tasks whose ``_get_observations`` has no side effects;
            observation noise is not applied to it.
        env_id: name used in messages and presets (default: the gymnasium spec id).
    """

    def __init__(
        self,
        env: Any,
        obs_group: str = "policy",
        clip_actions: float | None = None,
        capture_final_obs: bool = False,
        env_id: str | None = None,
    ) -> None:
        self.env = env
        self.raw = getattr(env, "unwrapped", env)
        raw = self.raw
        spec = getattr(env, "spec", None)
        self.env_id = env_id or (spec.id if spec is not None and getattr(spec, "id", None) else type(raw).__name__)
        self.num_envs = int(raw.num_envs)
        self.device = torch.device(raw.device)
        self.max_episode_length = int(raw.max_episode_length)
        self.obs_group = obs_group
        self.is_discrete = False

        obs_spaces = raw.single_observation_space
        groups = list(obs_spaces.spaces) if isinstance(obs_spaces, gym.spaces.Dict) else None
        if groups is None or obs_group not in groups:
            raise ValueError(
                f"{self.env_id}: observation group {obs_group!r} not found; the env's single_observation_space "
                f"has groups {groups} (Isaac Lab envs return a dict of groups such as 'policy' and 'critic')"
            )
        self.num_obs = int(gym.spaces.flatdim(obs_spaces[obs_group]))
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.num_obs,), np.float32)
        self.num_actions = int(gym.spaces.flatdim(raw.single_action_space))
        self.clip_actions = None if clip_actions is None else float(clip_actions)
        if self.clip_actions is not None and not self.clip_actions > 0:
            raise ValueError(f"clip_actions must be positive or None, got {clip_actions!r}")
        bound = np.inf if self.clip_actions is None else self.clip_actions
        self.single_action_space = gym.spaces.Box(-bound, bound, (self.num_actions,), np.float32)

        self._episodes = _EpisodeTracker(self.num_envs, self.device)
        self._needs_reset = True
        self._capturing = False
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        if capture_final_obs:
            self._install_final_obs_hook()

    def _install_final_obs_hook(self) -> None:
        raw = self.raw
        if not callable(getattr(raw, "_get_observations", None)) or not callable(getattr(raw, "_reset_idx", None)):
            raise ValueError(
                f"{self.env_id}: capture_final_obs needs a DirectRLEnv (with _get_observations and _reset_idx); "
                f"{type(raw).__name__} has no such hooks"
            )
        original = raw._reset_idx

        def reset_idx_recording_final_obs(env_ids: Any) -> None:
            # Inside step, _reset_idx runs after the rewards and before the new observations:
            # the state is still the one the episode ended in.
            if self._capturing:
                self._captured = (torch.as_tensor(env_ids, device=self.device).long().flatten(),
                                  raw._get_observations()[self.obs_group].clone())
            original(env_ids)

        raw._reset_idx = reset_idx_recording_final_obs   # instance attribute shadows the method

    # ---------------------------------------------------------------- protocol
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env (Isaac Lab advises doing this once; ``step`` resets done envs itself)."""
        obs_dict, _ = self.env.reset(seed=seed)
        self._episodes.reset()
        self._needs_reset = False
        return self._policy_obs(obs_dict), {"observations": obs_dict}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = self.check_actions(actions).to(self.device)
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        self._capturing, self._captured = True, None
        try:
            obs_dict, rew, terminated, truncated, raw_extras = self.env.step(actions)
        finally:
            self._capturing = False
        # Isaac Lab overwrites its reward, reset and observation buffers in place on every step;
        # our protocol hands out tensors that stay valid, so copy (a no-op .to() would alias).
        obs = self._policy_obs(obs_dict).clone()
        reward = rew.to(self.device, torch.float32).reshape(self.num_envs).clone()
        terminated = terminated.to(self.device).bool().reshape(self.num_envs).clone()
        truncated = truncated.to(self.device).bool().reshape(self.num_envs) & ~terminated

        # Copy, since Isaac Lab keeps one extras dict alive for the env's lifetime.
        extras: dict[str, Any] = dict(raw_extras) if raw_extras else {}
        extras["time_outs"] = truncated
        extras["observations"] = obs_dict
        extras.pop("episode", None)
        extras.pop("final_obs", None)
        if self._captured is not None:
            ids, final_rows = self._captured
            final_obs = obs.clone()
            final_obs[ids] = final_rows[ids].to(obs.dtype)
            extras["final_obs"] = final_obs
        episode = self._episodes.step(reward, terminated | truncated)
        if episode is not None:
            extras["episode"] = episode
        return obs, reward, terminated, truncated, extras

    def close(self) -> None:
        self.env.close()

    def render(self) -> Any:
        return self.env.render()

    def _policy_obs(self, obs_dict: Any) -> torch.Tensor:
        if not isinstance(obs_dict, dict) or self.obs_group not in obs_dict:
            keys = list(obs_dict) if isinstance(obs_dict, dict) else type(obs_dict).__name__
            raise ValueError(f"{self.env_id}: expected an observation dict with group {self.obs_group!r}, got {keys}")
        return obs_dict[self.obs_group].to(self.device, torch.float32).reshape(self.num_envs, self.num_obs)


# --------------------------------------------------------------------------- IsaacGymEnvs
def _compute_observations(task: Any) -> None:
    task.compute_observations()


class VecTaskAdapter(VecEnv):
    """An IsaacGymEnvs ``VecTask`` as an rlcourse :class:`VecEnv`, with same-step resets.

    ``VecTask.step`` defers resets: an env flagged in ``reset_buf`` at step N is
    reset at step N+1, *after* that step's physics, so the action chosen from the
    terminal observation is simulated and thrown away. The adapter does that
    reset immediately instead, with the task's own calls, in the order IsaacGymEnvs
    runs them at the start of ``post_physics_step``:

    1. ``obs_dict, rew, reset_buf, extras = task.step(actions)``; ``reset_buf`` and
       ``rew`` are the task's own buffers, so they are copied first;
    2. for the done envs: ``task.reset_idx(ids)`` (new initial state, which also zeroes
       ``reset_buf[ids]`` and ``progress_buf[ids]``, so the next ``task.step`` does not
       reset them again), then ``task.compute_observations()``
       (``refresh_obs`` overrides this call for tasks that name it differently).

    What the adapter returns:

    * ``obs``: rows of envs that did not finish are exactly the task's obs; rows of
      done envs are the first observation of their next episode (with the task's
      observation noise, if it randomizes observations).
    * ``extras["final_obs"]``: the task's obs from ``step``, i.e. the terminal observations.
    * ``terminated = reset_buf & ~time_outs`` and ``truncated = extras["time_outs"]``, both
      bool. IsaacGymEnvs counts an env that fell on its last step as a time-out.
    * ``extras["episode"]``: returns and lengths counted by the adapter. Because the reset
      happens at once, an episode lasts ``max_episode_length - 1`` steps when it times out
      (IsaacGymEnvs' test is ``progress_buf >= max_episode_length - 1``).
    * ``extras["observations"]``: ``{"obs": ..., "states": ...}`` (states if ``num_states > 0``).

    Seeding: IsaacGymEnvs tasks draw reset noise from torch's global generator, so
    ``reset(seed)`` calls ``torch.manual_seed(seed)``.

    Args:
        task: a ``VecTask`` (e.g. from ``isaacgymenvs.make``).
        refresh_obs: recomputes ``task.obs_buf`` after a reset (default: ``task.compute_observations()``).
        env_id: name used in messages and presets (default: the task's class name).
    """

    def __init__(
        self,
        task: Any,
        refresh_obs: Callable[[Any], None] | None = None,
        env_id: str | None = None,
    ) -> None:
        self.task = task
        self.env_id = env_id or type(task).__name__
        self.refresh_obs = refresh_obs or _compute_observations
        if refresh_obs is None and not callable(getattr(task, "compute_observations", None)):
            raise ValueError(
                f"{self.env_id}: the task has no compute_observations(); pass refresh_obs=fn(task) that "
                "recomputes task.obs_buf after task.reset_idx"
            )
        self.num_envs = int(task.num_envs)
        self.num_obs = int(task.num_obs)
        self.num_actions = int(task.num_actions)
        self.num_states = int(getattr(task, "num_states", 0) or 0)
        self.max_episode_length = int(task.max_episode_length)
        self.device = torch.device(getattr(task, "rl_device", task.device))
        self.is_discrete = False
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.num_obs,), np.float32)
        self.single_action_space = _box(task.act_space, f"{self.env_id}.act_space")
        self._episodes = _EpisodeTracker(self.num_envs, self.device)
        self._needs_reset = True

    # ---------------------------------------------------------------- protocol
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env with ``task.reset_idx`` and compute the first observations.

        (``VecTask.reset()`` only returns the current ``obs_buf`` and leaves ``reset_buf``
        at ones, so the first ``step`` would simulate and then reset every env.)
        """
        if seed is not None:
            torch.manual_seed(int(seed))
        task = self.task
        ids = torch.arange(self.num_envs, device=task.device)
        task.reset_idx(ids)
        self._mark_reset(ids)
        self.refresh_obs(task)
        obs, states = self._read_obs()
        self._episodes.reset()
        self._needs_reset = False
        return obs, {"observations": self._obs_dict(obs, states)}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = self.check_actions(actions).to(self.device)
        obs_dict, rew, reset_buf, raw_extras = self.task.step(actions)
        # Copies: these are the task's buffers, and reset_idx below rewrites reset_buf in place.
        done = reset_buf.to(self.device).reshape(self.num_envs) != 0
        reward = rew.to(self.device, torch.float32).reshape(self.num_envs).clone()
        time_outs = raw_extras.get("time_outs")
        truncated = torch.zeros_like(done) if time_outs is None else time_outs.to(self.device).reshape(self.num_envs) != 0
        truncated = truncated & done
        terminated = done & ~truncated
        obs = obs_dict["obs"].to(self.device, torch.float32).reshape(self.num_envs, self.num_obs).clone()
        states = obs_dict.get("states")
        states = None if states is None else states.to(self.device).clone()

        extras: dict[str, Any] = {k: v for k, v in raw_extras.items() if k not in ("time_outs", "episode")}
        extras["time_outs"] = truncated
        extras["final_obs"] = obs.clone()
        if done.any():
            # The reset IsaacGymEnvs would do at the start of the next step, done now.
            ids = done.nonzero().flatten()
            task_ids = ids.to(self.task.device)
            self.task.reset_idx(task_ids)
            self._mark_reset(task_ids)
            self.refresh_obs(self.task)
            new_obs, new_states = self._read_obs(noise=True)
            obs[ids] = new_obs[ids]
            if states is not None and new_states is not None:
                states[ids] = new_states[ids].to(states.dtype)
        extras["observations"] = self._obs_dict(obs, states)
        episode = self._episodes.step(reward, done)
        if episode is not None:
            extras["episode"] = episode
        return obs, reward, terminated, truncated, extras

    def close(self) -> None:
        close = getattr(self.task, "close", None)
        if callable(close):
            close()
        else:  # VecTask has no close(); free the simulation like IsaacGymEnvs' own __del__ does
            gym_api, sim = getattr(self.task, "gym", None), getattr(self.task, "sim", None)
            if gym_api is not None and sim is not None:
                gym_api.destroy_sim(sim)

    # ---------------------------------------------------------------- helpers
    def _mark_reset(self, task_ids: torch.Tensor) -> None:
        # reset_idx of every IsaacGymEnvs task does this; doing it again guards against a
        # task that forgets, which would otherwise be reset a second time next step.
        self.task.reset_buf[task_ids] = 0
        self.task.progress_buf[task_ids] = 0

    def _read_obs(self, noise: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        task = self.task
        obs_buf = task.obs_buf
        dr = getattr(task, "dr_randomizations", None) or {}
        if noise and dr.get("observations"):
            obs_buf = dr["observations"]["noise_lambda"](obs_buf)   # as VecTask.step does
        clip = float(getattr(task, "clip_obs", np.inf))
        obs = torch.clamp(obs_buf, -clip, clip).to(self.device, torch.float32).reshape(self.num_envs, self.num_obs)
        states = None
        if self.num_states > 0:
            states = task.get_state() if callable(getattr(task, "get_state", None)) else task.states_buf
            states = states.to(self.device).clone()
        return obs.clone(), states

    @staticmethod
    def _obs_dict(obs: torch.Tensor, states: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"obs": obs} if states is None else {"obs": obs, "states": states}


# --------------------------------------------------------------------------- factories
def make_isaaclab(
    task: str,
    num_envs: int,
    seed: int | None = 0,
    device: str | torch.device = "cuda:0",
    **kwargs: Any,
) -> IsaacLabAdapter:
    """Create the Isaac Lab task ``task`` (e.g. ``"Isaac-Ant-Direct-v0"``) wrapped in :class:`IsaacLabAdapter`.

    With the Isaac Sim (PhysX) backend, start the simulation app first, as Isaac
    Lab's own scripts do (``isaaclab.app.AppLauncher(headless=True)``).
    ``kwargs`` go to :class:`IsaacLabAdapter` (``obs_group``, ``clip_actions``, ``capture_final_obs``).

    Raises:
        ImportError: Isaac Lab is not installed (the message says what to install).
    """
    try:
        import isaaclab  # noqa: F401
        import isaaclab_tasks  # noqa: F401  (registers the Isaac-* gymnasium ids)
        from isaaclab_tasks.utils import parse_env_cfg
    except ImportError as exc:
        raise ImportError(
            f"rlcourse.envs.make('isaaclab:{task}') needs Isaac Lab (packages isaaclab, isaaclab_tasks), "
            f"which could not be imported ({exc}). Install it with `pip install isaaclab` following "
            f"https://isaac-sim.github.io/IsaacLab/ . {_GPU_NOTE}"
        ) from exc
    cfg = parse_env_cfg(task, device=str(device), num_envs=num_envs)
    if seed is not None:
        cfg.seed = int(seed)
    env = gym.make(task, cfg=cfg)
    return IsaacLabAdapter(env, env_id=f"isaaclab:{task}", **kwargs)


def make_isaacgym(
    task: str,
    num_envs: int,
    seed: int | None = 0,
    device: str | torch.device = "cuda:0",
    **kwargs: Any,
) -> VecTaskAdapter:
    """Create the IsaacGymEnvs task ``task`` (e.g. ``"Ant"``) wrapped in :class:`VecTaskAdapter`.

    Isaac Gym insists on being imported before torch: put ``import isaacgym`` at the
    very top of your script. ``kwargs`` go to ``isaacgymenvs.make`` (e.g. ``cfg``).

    Raises:
        ImportError: isaacgym / isaacgymenvs are not installed, or torch was imported first.
    """
    try:
        import isaacgym  # noqa: F401
        import isaacgymenvs
    except ImportError as exc:
        if "before" in str(exc):     # isaacgym refuses to load after torch
            raise ImportError(
                f"isaacgym must be imported before torch ({exc}). Put `import isaacgym` as the first "
                "import of your script, before rlcourse and torch."
            ) from exc
        raise ImportError(
            f"rlcourse.envs.make('isaacgym:{task}') needs Isaac Gym (isaacgym, from NVIDIA's Isaac Gym "
            "Preview 4 download: `pip install -e python` in its folder) and IsaacGymEnvs "
            f"(`pip install -e .` in a clone of isaac-sim/IsaacGymEnvs); import failed ({exc}). "
            f"Isaac Gym is deprecated in favour of Isaac Lab. {_GPU_NOTE}"
        ) from exc
    kwargs.setdefault("headless", True)
    kwargs.setdefault("force_render", False)
    dev = str(device)
    vec_task = isaacgymenvs.make(seed=0 if seed is None else int(seed), task=task, num_envs=num_envs,
                                 sim_device=dev, rl_device=dev, **kwargs)
    return VecTaskAdapter(vec_task, env_id=f"isaacgym:{task}")


__all__ = ["IsaacLabAdapter", "VecTaskAdapter", "make_isaaclab", "make_isaacgym"]
