"""Present any gymnasium environment id through the rlcourse :class:`VecEnv` protocol.

Gymnasium's own vector envs return numpy arrays and (by default) reset a finished
env on the *next* call to ``step``. Isaac Lab resets in the *same* step and works
in torch tensors; this adapter gives a gymnasium task exactly those semantics so
that the same learner code runs on CartPole, Pendulum and on the Isaac-style
locomotion tasks.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcourse.envs.base import VecEnv


class GymVecEnv(VecEnv):
    """``num_envs`` copies of a gymnasium env stepped in one batch, same-step resets.

    Args:
        env_id: a registered gymnasium id, e.g. ``"CartPole-v1"``.
        num_envs: number of copies.
        seed: base seed; copy ``i`` is seeded with ``seed + i`` on the first reset.
        device: torch device of the returned tensors.
        render_mode: passed to ``gymnasium.make`` for copy 0 (``"rgb_array"`` for videos).
        **make_kwargs: forwarded to ``gymnasium.make``.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        seed: int | None = 0,
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        **make_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self._seed = seed
        self.envs = [
            gym.make(env_id, render_mode=render_mode if i == 0 else None, **make_kwargs) for i in range(num_envs)
        ]
        env0 = self.envs[0]
        obs_space = env0.observation_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"{env_id}: only Box observation spaces are supported, got {obs_space}")
        self.single_observation_space = obs_space
        self.single_action_space = env0.action_space
        self.num_obs = int(np.prod(obs_space.shape))
        if isinstance(env0.action_space, gym.spaces.Discrete):
            self.is_discrete = True
            self.num_actions = int(env0.action_space.n)
            self._low = self._high = None
        elif isinstance(env0.action_space, gym.spaces.Box):
            self.is_discrete = False
            self.num_actions = int(np.prod(env0.action_space.shape))
            self._low = env0.action_space.low.reshape(-1).astype(np.float64)
            self._high = env0.action_space.high.reshape(-1).astype(np.float64)
        else:
            raise ValueError(f"{env_id}: action space {env0.action_space} is not Discrete or Box")
        spec = env0.spec
        self.max_episode_length = int(spec.max_episode_steps) if spec and spec.max_episode_steps else 10**9

        self._obs = np.zeros((self.num_envs, self.num_obs), dtype=np.float32)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = True

    # ---------------------------------------------------------------- protocol
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        base = self._seed if seed is None else seed
        for i, env in enumerate(self.envs):
            s = None if base is None else base + i
            obs, _ = env.reset(seed=s)
            env.action_space.seed(s)
            self._obs[i] = np.asarray(obs, dtype=np.float32).reshape(-1)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._needs_reset = False
        return self._to_tensor(self._obs.copy()), {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = self.check_actions(actions)
        act_np = actions.detach().cpu().numpy()
        if not self.is_discrete:
            # Like Isaac Lab's clip_actions: the policy may output any real number,
            # the simulator only receives the valid range.
            act_np = np.clip(act_np.astype(np.float64), self._low, self._high)

        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        final_rows: dict[int, np.ndarray] = {}
        done_ids: list[int] = []
        for i, env in enumerate(self.envs):
            a = int(act_np[i]) if self.is_discrete else act_np[i].reshape(env.action_space.shape)
            obs, r, term, trunc, _ = env.step(a)
            rewards[i] = r
            terminated[i] = term
            # An episode that hits a terminal state on its last allowed step is terminal, not a time-out.
            truncated[i] = trunc and not term
            self._obs[i] = np.asarray(obs, dtype=np.float32).reshape(-1)
            if term or trunc:
                final_rows[i] = self._obs[i].copy()
                obs, _ = env.reset()
                self._obs[i] = np.asarray(obs, dtype=np.float32).reshape(-1)
                done_ids.append(i)

        self._ep_return += rewards
        self._ep_length += 1
        extras: dict[str, Any] = {"time_outs": self._to_tensor(truncated)}
        obs_t = self._to_tensor(self._obs.copy())
        if final_rows:
            # Built after the loop: rows of envs that did not finish must be *this* step's obs.
            final_obs = self._obs.copy()
            for i, row in final_rows.items():
                final_obs[i] = row
            extras["final_obs"] = self._to_tensor(final_obs)
        else:
            extras["final_obs"] = obs_t
        if done_ids:
            ids = np.asarray(done_ids)
            extras["episode"] = {
                "return": self._to_tensor(self._ep_return[ids].astype(np.float32)),
                "length": self._to_tensor(self._ep_length[ids]),
                "env_ids": self._to_tensor(ids),
            }
            self._ep_return[ids] = 0.0
            self._ep_length[ids] = 0
        return (
            obs_t,
            self._to_tensor(rewards),
            self._to_tensor(terminated),
            self._to_tensor(truncated),
            extras,
        )

    def render(self) -> np.ndarray:
        frame = self.envs[0].render()
        if frame is None:
            raise RuntimeError(f"{self.env_id}: create the env with render_mode='rgb_array' to render frames")
        return np.asarray(frame)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)
