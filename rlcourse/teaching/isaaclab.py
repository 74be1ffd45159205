"""Isaac Lab glue: run an Isaac Lab task through the rlcourse :class:`~rlcourse.envs.VecEnv` protocol.

Isaac Lab's ``DirectRLEnv`` and ``ManagerBasedRLEnv`` already step thousands of robots
as one batch of torch tensors, reset finished robots in the same step and return
``(obs_dict, reward, terminated, truncated, extras)``. Three small differences remain,
and :class:`IsaacLabVecEnv` bridges them:

* observations come as a dict of groups; learners read the ``"policy"`` group;
* there is no ``extras["final_obs"]`` (rlcourse's PPO then bootstraps a time-out with
  the value of the state before the cut, as rsl_rl does);
* episode statistics are logged as means in ``extras["log"]``; rlcourse's runner wants
  one entry per finished episode in ``extras["episode"]``, so the adapter keeps the
  running returns and lengths itself.

:func:`make_isaaclab` starts Isaac Lab and needs an NVIDIA GPU with Isaac Lab installed;
it is not run in this course's CPU tests. :class:`IsaacLabStyleEnv` goes the other way
(it makes an rlcourse env *look like* Isaac Lab), so the adapter itself can be checked
on a laptop.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcourse.envs.base import VecEnv


class IsaacLabVecEnv(VecEnv):
    """Wrap an Isaac Lab RL env (or anything with its step contract) as an rlcourse ``VecEnv``.

    Args:
        env: an Isaac Lab env (``gym.make("Isaac-...", cfg=...)``); wrappers are looked through
            with ``env.unwrapped``.
        env_id: name used in logs and error messages.
        clip_actions: clamp actions to ``[-clip_actions, clip_actions]`` before stepping
            (``None``: pass them on unchanged, as Isaac Lab's own wrappers do by default).
    """

    is_discrete = False

    def __init__(self, env: Any, env_id: str = "", clip_actions: float | None = None) -> None:
        self.env = env
        base = getattr(env, "unwrapped", env)
        obs_space = base.single_observation_space
        if isinstance(obs_space, gym.spaces.Dict):
            if "policy" not in obs_space.spaces:
                raise ValueError(f"{env_id}: the observation dict has no 'policy' group (groups: {list(obs_space.spaces)})")
            obs_space = obs_space["policy"]
        self.env_id = env_id or getattr(getattr(base, "spec", None), "id", None) or type(base).__name__
        self.num_envs = int(base.num_envs)
        self.device = torch.device(base.device)
        self.max_episode_length = int(base.max_episode_length)
        self.single_observation_space = obs_space
        self.single_action_space = base.single_action_space
        self.num_obs = int(np.prod(obs_space.shape))
        self.num_actions = int(np.prod(self.single_action_space.shape))
        self.clip_actions = clip_actions
        self._return = torch.zeros(self.num_envs, device=self.device)
        self._length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    @staticmethod
    def _policy_obs(obs: Any) -> torch.Tensor:
        return obs["policy"] if isinstance(obs, dict) else obs

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        obs, _ = self.env.reset(seed=seed)
        self._return.zero_()
        self._length.zero_()
        return self._policy_obs(obs), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        actions = self.check_actions(actions).to(self.device)
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        obs, reward, terminated, truncated, extras = self.env.step(actions)
        terminated, truncated = terminated.bool(), truncated.bool()
        self._return += reward
        self._length += 1
        out: dict[str, Any] = {"time_outs": truncated.clone()}
        if "log" in extras:
            out["log"] = extras["log"]
        done = terminated | truncated
        if done.any():
            ids = done.nonzero().flatten()
            out["episode"] = {"return": self._return[ids].clone(), "length": self._length[ids].clone(), "env_ids": ids}
            self._return[ids] = 0.0
            self._length[ids] = 0
        return self._policy_obs(obs), reward, terminated, truncated, out

    def close(self) -> None:
        self.env.close()


def make_isaaclab(task_id: str, num_envs: int = 4096, seed: int | None = 0, device: str = "cuda:0",
                  headless: bool = True, **cfg_overrides: Any) -> IsaacLabVecEnv:
    """Start Isaac Lab and build ``task_id`` (e.g. ``"Isaac-Ant-Direct-v0"``) as an rlcourse env.

    Needs an NVIDIA GPU and an Isaac Lab installation (not a dependency of rlcourse).
    ``cfg_overrides`` set attributes of the task's env config (e.g. ``episode_length_s=10``).

    Raises:
        ImportError: Isaac Lab is not installed.
    """
    try:
        from isaaclab.app import AppLauncher
    except ImportError as exc:
        raise ImportError(f"{task_id}: Isaac Lab is not installed (it needs an NVIDIA GPU; see isaac-sim.github.io/IsaacLab)") from exc
    # The simulator must be running before any other isaaclab module is imported.
    AppLauncher(headless=headless, device=device)
    import isaaclab_tasks  # noqa: F401  (registers the Isaac-* ids with gymnasium)
    from isaaclab_tasks.utils import parse_env_cfg

    cfg = parse_env_cfg(task_id, device=device, num_envs=num_envs)
    cfg.seed = seed
    for key, value in cfg_overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"{task_id}: env config has no field {key!r}")
        setattr(cfg, key, value)
    return IsaacLabVecEnv(gym.make(task_id, cfg=cfg), env_id=task_id)


def register_isaaclab(task_id: str) -> None:
    """Make ``rlcourse.envs.make(task_id, num_envs=..., device="cuda")`` build the Isaac Lab task."""
    from rlcourse import envs

    def factory(num_envs: int = 4096, seed: int | None = 0, device: str | torch.device = "cuda:0", **kw: Any) -> VecEnv:
        return make_isaaclab(task_id, num_envs=num_envs, seed=seed, device=str(device), **kw)

    envs.register(task_id, factory)


class IsaacLabStyleEnv:
    """Make an rlcourse env *look like* an Isaac Lab env: obs dicts, no ``final_obs``, ``extras["log"]``.

    Only for checking :class:`IsaacLabVecEnv` (and the learners behind it) on a CPU.
    """

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self.unwrapped = self
        self.num_envs = env.num_envs
        self.device = str(env.device)
        self.max_episode_length = env.max_episode_length
        self.single_observation_space = gym.spaces.Dict({"policy": env.single_observation_space})
        self.single_action_space = env.single_action_space

    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        obs, _ = self.env.reset(seed=seed)
        return {"policy": obs}, {}

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, extras = self.env.step(actions)
        log = {}
        if "episode" in extras:   # Isaac Lab reports means over the envs that just reset
            log = {f"Episode_Reward/{k[4:]}": v.mean() for k, v in extras["episode"].items() if k.startswith("rew_")}
        return {"policy": obs}, reward, terminated, truncated, {"log": log}

    def close(self) -> None:
        self.env.close()
