"""Replay buffer shared by the off-policy algorithms (DQN, DDPG, SAC).

Unlike :class:`~rlcourse.storage.rollout.RolloutStorage`, which holds one rollout of
the *current* policy and is emptied after each update, a replay buffer keeps the
last ``capacity`` transitions of *all* past policies and the learner samples random
minibatches from it. Off-policy methods may learn from old data because their
targets (Q-learning, the soft Bellman backup) do not depend on the policy that
collected it.

Two details decide whether the stored transitions are correct:

* **Same-step resets.** The env resets a finished episode inside ``step`` and
  returns the *first* observation of the next episode. The successor state of the
  last transition is the observation the episode ended in, ``extras["final_obs"]``;
  storing the reset observation instead would teach the critic that the start
  state follows the end state.
* **Time-outs are not terminal.** ``done`` stored here is ``terminated`` only. A
  transition cut by the time limit keeps ``done = 0`` so its target bootstraps
  ``gamma * Q(final_obs, .)``: the task did not end, we just stopped watching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ReplayBatch:
    """A minibatch of transitions ``(s, a, r, s', done)``; ``done`` is float (1 = terminal).

    ``time_outs`` (float, 1 = the episode was cut by the time limit after this step, without
    terminating) is recorded for inspection and teaching: it never stops the bootstrap.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor
    time_outs: torch.Tensor


class ReplayBuffer:
    """Circular buffer of preallocated ``(capacity, ...)`` tensors, filled a batch of envs at a time.

    Args:
        capacity: transitions kept; the oldest are overwritten first.
        obs_shape: shape of one observation, e.g. ``(num_obs,)``.
        action_shape: ``()`` for discrete actions (stored as int64), ``(num_actions,)`` otherwise.
        discrete: store actions as integers.
        device: where the tensors live (the learner's device).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        discrete: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.obs = torch.zeros(self.capacity, *obs_shape, device=self.device)
        self.next_obs = torch.zeros(self.capacity, *obs_shape, device=self.device)
        self.actions = torch.zeros(
            self.capacity, *action_shape, device=self.device, dtype=torch.long if discrete else torch.float32
        )
        self.rewards = torch.zeros(self.capacity, device=self.device)
        self.dones = torch.zeros(self.capacity, device=self.device)
        self.time_outs = torch.zeros(self.capacity, device=self.device)
        self.pos = 0  # next row to write
        self.size = 0  # rows holding data

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor | None = None,
        final_obs: torch.Tensor | None = None,
    ) -> None:
        """Store one env step of a batch of ``n`` envs.

        Args:
            obs: ``(n, *obs_shape)`` observations the actions were taken in.
            actions: ``(n, *action_shape)``.
            rewards: ``(n,)``.
            next_obs: ``(n, *obs_shape)`` the observations ``env.step`` returned (already
                reset for envs whose episode ended).
            terminated: ``(n,)`` bool, the episode reached a terminal state.
            truncated: ``(n,)`` bool, the episode was cut by the time limit (``extras["time_outs"]``).
            final_obs: ``extras["final_obs"]``, the observations finished episodes ended in.
        """
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions at once to a buffer of capacity {self.capacity}")
        ended = terminated if truncated is None else terminated | truncated
        if final_obs is not None:
            final_obs = final_obs.to(next_obs.device, next_obs.dtype)
            # The true successor of a finished episode's last step; rows of running envs equal next_obs.
            next_obs = torch.where(ended.view(-1, *([1] * (next_obs.dim() - 1))), final_obs, next_obs)
        elif truncated is not None and truncated.any():
            # CHOICE: an env that cannot report its final observation (Isaac Lab) gets s_t as the
            # successor of a time-out, i.e. Q(s_T) ~ Q(s_{T-1}), rsl_rl's approximation for PPO.
            next_obs = torch.where(truncated.view(-1, *([1] * (next_obs.dim() - 1))), obs, next_obs)
        if self.pos + n <= self.capacity:
            rows: slice | torch.Tensor = slice(self.pos, self.pos + n)
        else:  # wraps around the end
            rows = torch.arange(self.pos, self.pos + n, device=self.device) % self.capacity
        self.obs[rows] = obs
        self.actions[rows] = actions
        self.rewards[rows] = rewards
        self.next_obs[rows] = next_obs
        # Only a terminal state stops the bootstrap; a time-out does not.
        self.dones[rows] = terminated.float()
        # Recorded, not used by the targets: cut by the time limit without terminating.
        self.time_outs[rows] = 0.0 if truncated is None else (truncated & ~terminated).float()
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly with replacement, reproducibly from ``generator``."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=generator.device)
        idx = idx.to(self.device)
        # index_select picks the same rows as self.obs[idx] at a fraction of the per-call cost
        # (one gradient step samples five tensors).
        return ReplayBatch(
            self.obs.index_select(0, idx), self.actions.index_select(0, idx), self.rewards.index_select(0, idx),
            self.next_obs.index_select(0, idx), self.dones.index_select(0, idx), self.time_outs.index_select(0, idx),
        )

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer (for exact resumption of training)."""
        n = self.size
        return {
            "pos": self.pos,
            "size": n,
            "obs": self.obs[:n].cpu().clone(),
            "actions": self.actions[:n].cpu().clone(),
            "rewards": self.rewards[:n].cpu().clone(),
            "next_obs": self.next_obs[:n].cpu().clone(),
            "dones": self.dones[:n].cpu().clone(),
            "time_outs": self.time_outs[:n].cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"saved replay buffer holds {n} transitions, more than the capacity {self.capacity}")
        for key in ("obs", "actions", "rewards", "next_obs", "dones"):
            getattr(self, key)[:n] = state[key].to(self.device)
        # Checkpoints from before time-outs were recorded hold none.
        self.time_outs[:n] = state["time_outs"].to(self.device) if "time_outs" in state else 0.0
        self.pos, self.size = int(state["pos"]) % self.capacity, n
