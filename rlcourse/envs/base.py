"""The batched environment protocol every rlcourse environment follows.

It mirrors Isaac Lab's ``DirectRLEnv`` step semantics, so code written against it
moves to Isaac Lab (or IsaacGymEnvs, through an adapter) without changes:

* ``reset() -> (obs, extras)`` and
  ``step(actions) -> (obs, reward, terminated, truncated, extras)``.
* Every tensor is batched over environments: ``obs`` is ``(num_envs, num_obs)``
  float32, ``reward``/``terminated``/``truncated`` are ``(num_envs,)``, all on
  ``env.device``.
* **Same-step resets**: an environment whose episode ended in this step is reset
  inside ``step``; the ``obs`` returned for it is already the *first* observation
  of its next episode. The observation it ended in is kept in
  ``extras["final_obs"]`` (rows of unfinished envs equal ``obs``). Isaac Lab does
  not give the final observation; we add it because bootstrapping a truncated
  episode correctly needs ``V(s_T)``.
* ``extras["time_outs"]`` is ``truncated`` (bool): the episode was cut by the
  time limit, not by a terminal state, so learners must bootstrap it.
* ``extras["episode"]`` is present only on steps where at least one episode
  ended; it holds one entry per finished episode:
  ``{"return": (k,), "length": (k,), "env_ids": (k,)}`` plus, for tasks with
  reward terms, ``"rew_<term>": (k,)`` per-term episode sums.

Actions: ``(num_envs,)`` integer tensors for discrete action spaces,
``(num_envs, num_actions)`` float tensors for continuous ones. A wrong shape or a
non-finite value raises :class:`ValueError` naming what was expected.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch


class VecEnv(abc.ABC):
    """Abstract batched environment with Isaac Lab ``DirectRLEnv`` step semantics."""

    num_envs: int
    num_obs: int
    num_actions: int
    """Action dimension (continuous) or number of discrete actions."""
    is_discrete: bool
    max_episode_length: int
    device: torch.device
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Space
    env_id: str = ""

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset all environments; returns ``(obs, extras)``."""

    @abc.abstractmethod
    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every environment one control step (see module docstring)."""

    def close(self) -> None:
        """Release simulator resources."""

    def render(self) -> Any:
        """Return an RGB frame (H, W, 3) uint8 of environment 0, if the env supports it."""
        raise NotImplementedError(f"{type(self).__name__} cannot render")

    # ------------------------------------------------------------------ helpers
    def check_actions(self, actions: Any) -> torch.Tensor:
        """Validate and convert a batch of actions; raise ``ValueError`` on bad input."""
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(actions)
        if self.is_discrete:
            expected = (self.num_envs,)
            if actions.ndim == 2 and actions.shape[1] == 1:
                actions = actions[:, 0]
            if tuple(actions.shape) != expected:
                raise ValueError(
                    f"{self.env_id}: expected discrete actions of shape {expected}, got {tuple(actions.shape)}"
                )
            if actions.is_floating_point():
                if not torch.isfinite(actions).all():
                    raise ValueError(f"{self.env_id}: actions contain NaN or inf")
                if not torch.equal(actions, actions.round()):
                    raise ValueError(f"{self.env_id}: discrete actions must be integers, got {actions.tolist()}")
            actions = actions.long()
            if (actions < 0).any() or (actions >= self.num_actions).any():
                raise ValueError(
                    f"{self.env_id}: discrete actions must lie in [0, {self.num_actions - 1}], got {actions.tolist()}"
                )
            return actions
        expected = (self.num_envs, self.num_actions)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"{self.env_id}: expected continuous actions of shape {expected}, got {tuple(actions.shape)}"
            )
        actions = actions.to(dtype=torch.float32)
        # The common case, a CPU tensor: its float64 sum (which float32 entries cannot overflow) is
        # finite iff every entry is. One NumPy call; the three torch calls below cost ~4x as much.
        if actions.device.type == "cpu" and not actions.requires_grad and math.isfinite(
                actions.numpy().sum(dtype=np.float64)):
            return actions
        if not torch.isfinite(actions).all():
            bad = (~torch.isfinite(actions)).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"{self.env_id}: actions contain NaN or inf (env ids {bad})")
        return actions

    def __repr__(self) -> str:
        kind = "discrete" if self.is_discrete else "continuous"
        return (
            f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, num_obs={self.num_obs}, "
            f"num_actions={self.num_actions} ({kind}), device={self.device})"
        )
