"""NumPy views of an rlcourse :class:`~rlcourse.envs.VecEnv` for other libraries.

* :class:`GymnasiumVectorEnv`: a ``gymnasium.vector.VectorEnv`` with
  ``autoreset_mode = SAME_STEP`` (gymnasium's default is ``NEXT_STEP``: a finished env
  is reset on the *next* call to ``step``; Isaac Lab and rlcourse reset it in the same
  call, which is gymnasium's ``SAME_STEP`` mode). The final observation is in
  ``infos["final_obs"]`` (rows where ``infos["_final_obs"]`` is true), episode statistics
  in ``infos["episode"]`` (``r``, ``l`` and our per-term sums, one entry per env, valid
  where ``infos["_episode"]`` is true), as gymnasium's ``RecordEpisodeStatistics``.
* :func:`to_sb3`: a Stable-Baselines3 ``VecEnv``. SB3 also resets in the same step and
  keeps the last observation in ``infos[i]["terminal_observation"]``, so the mapping is
  one to one; time-outs set ``infos[i]["TimeLimit.truncated"]`` so SB3 bootstraps them.

Both work for any rlcourse env (Ant, CartPole through the gym adapter, ...).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlcourse.envs.base import VecEnv


class GymnasiumVectorEnv(gym.vector.VectorEnv):
    """``gymnasium.vector.VectorEnv`` (NumPy, same-step autoreset) around an rlcourse env."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, _ = self.env.reset(seed=seed)
        return obs.cpu().numpy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rew, term, trunc, extras = self.env.step(torch.as_tensor(np.asarray(actions)))
        done = (term | trunc).cpu().numpy()
        infos: dict[str, Any] = {}
        if done.any():
            infos["final_obs"] = extras["final_obs"].cpu().numpy()
            infos["_final_obs"] = done
            infos.update(self._episode_infos(extras["episode"]))
        return obs.cpu().numpy(), rew.cpu().numpy(), term.cpu().numpy(), trunc.cpu().numpy(), infos

    def _episode_infos(self, ep: dict[str, torch.Tensor]) -> dict[str, Any]:
        # gymnasium's vector convention (RecordEpisodeStatistics): one entry per env, read
        # where the mask "_episode" is true; "r" and "l" are the return and the length.
        ids = ep["env_ids"].cpu().numpy()
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[ids] = True
        stats: dict[str, np.ndarray] = {}
        for key, value in ep.items():
            if key != "env_ids":
                v = value.cpu().numpy()
                stats[key] = np.zeros(self.num_envs, dtype=v.dtype)
                stats[key][ids] = v
        stats["r"], stats["l"] = stats["return"], stats["length"]
        return {"episode": stats, "_episode": mask}

    def render(self) -> np.ndarray:
        return self.env.render()

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


def to_sb3(env: VecEnv) -> Any:
    """Wrap an rlcourse env as a ``stable_baselines3.common.vec_env.VecEnv`` (NumPy)."""
    from stable_baselines3.common.vec_env import VecEnv as SB3VecEnv

    class RlcourseSB3VecEnv(SB3VecEnv):
        def __init__(self, env: VecEnv) -> None:
            self.env = env
            super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
            self._actions: np.ndarray | None = None
            self._t0 = time.time()

        def reset(self) -> np.ndarray:
            seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
            obs, _ = self.env.reset(seed=seed)
            self._reset_seeds()
            return obs.cpu().numpy()

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = np.asarray(actions)

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
            obs, rew, term, trunc, extras = self.env.step(torch.as_tensor(self._actions))
            obs_np = obs.cpu().numpy()
            done = (term | trunc).cpu().numpy()
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            if done.any():
                final = extras["final_obs"].cpu().numpy()
                trunc_np = trunc.cpu().numpy()
                ep = extras["episode"]
                ep_of = {int(i): k for k, i in enumerate(ep["env_ids"].tolist())}
                for i in np.nonzero(done)[0]:
                    infos[i]["terminal_observation"] = final[i]
                    infos[i]["TimeLimit.truncated"] = bool(trunc_np[i])
                    k = ep_of[int(i)]
                    infos[i]["episode"] = {"r": float(ep["return"][k]), "l": int(ep["length"][k]),
                                           "t": round(time.time() - self._t0, 6)}
            return obs_np, rew.cpu().numpy(), done, infos

        def close(self) -> None:
            self.env.close()

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            # Our envs render RGB arrays (env.render()); SB3 asks for this at construction.
            value = "rgb_array" if attr_name == "render_mode" else getattr(self.env, attr_name)
            return [value for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(self.env, attr_name, value)

        def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
            return [getattr(self.env, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

        def get_images(self) -> list[np.ndarray]:
            return [self.env.render()]

    return RlcourseSB3VecEnv(env)
