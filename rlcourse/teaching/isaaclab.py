"""An rlcourse env dressed up as an Isaac Lab env, to check the Isaac Lab adapter on a laptop.

:class:`rlcourse.envs.isaac.IsaacLabAdapter` turns an Isaac Lab ``DirectRLEnv`` /
``ManagerBasedRLEnv`` into an rlcourse :class:`~rlcourse.envs.VecEnv`. Isaac Lab needs an
NVIDIA GPU, so lecture 5 checks the adapter the other way round: :class:`IsaacLabStyleEnv`
makes one of our CPU envs return what Isaac Lab returns — observation dicts of groups,
no ``final_obs``, per-term episode means in ``extras["log"]`` — and the adapter must turn
it back into exactly the original env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from rlcourse.envs.base import VecEnv


class IsaacLabStyleEnv:
    """Present an rlcourse ``VecEnv`` with Isaac Lab's step contract (CPU stand-in, for teaching and tests).

    Args:
        env: any rlcourse env; its observations become the ``"policy"`` group.
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
        if "episode" in extras:   # Isaac Lab reports per-term means over the envs that just reset
            log = {f"Episode_Reward/{k[4:]}": v.mean() for k, v in extras["episode"].items() if k.startswith("rew_")}
        return {"policy": obs}, reward, terminated, truncated, {"log": log}

    def close(self) -> None:
        self.env.close()
