"""On-policy rollout storage for PPO.

This is *not* a replay buffer: it holds exactly one rollout of ``num_steps``
transitions from every environment, collected by the current policy, and is
emptied after each update. (Off-policy methods such as DQN and SAC keep a replay
buffer of old transitions from many past policies; PPO's importance ratio is only
valid for data from the policy that was just used.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One minibatch, flattened over (step, env)."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class RolloutStorage:
    """Preallocated ``(num_steps, num_envs, ...)`` tensors for one rollout."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        discrete: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_steps, self.num_envs = num_steps, num_envs
        self.device = torch.device(device)
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(*shape, *obs_shape, device=self.device)
        self.actions = torch.zeros(*shape, *action_shape, device=self.device, dtype=torch.long if discrete else torch.float32)
        self.rewards = torch.zeros(shape, device=self.device)
        self.dones = torch.zeros(shape, device=self.device)
        self.values = torch.zeros(shape, device=self.device)
        self.log_probs = torch.zeros(shape, device=self.device)
        self.advantages = torch.zeros(shape, device=self.device)
        self.returns = torch.zeros(shape, device=self.device)
        self.step = 0

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
        values: torch.Tensor,
        log_probs: torch.Tensor,
    ) -> None:
        if self.step >= self.num_steps:
            raise RuntimeError("rollout storage is full; call clear() after the update")
        t = self.step
        self.obs[t].copy_(obs)
        self.actions[t].copy_(actions)
        self.rewards[t].copy_(rewards)
        self.dones[t].copy_(dones)
        self.values[t].copy_(values)
        self.log_probs[t].copy_(log_probs)
        self.step += 1

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def clear(self) -> None:
        self.step = 0

    def mini_batches(self, num_mini_batches: int, num_epochs: int, generator: torch.Generator) -> Iterator[Batch]:
        """Yield ``num_epochs`` shuffled passes over the rollout, split in ``num_mini_batches``."""
        total = self.num_steps * self.num_envs
        size = total // num_mini_batches
        if size < 1:
            raise ValueError(f"num_mini_batches={num_mini_batches} is more than the rollout's {total} transitions "
                             f"(num_steps_per_env {self.num_steps} x num_envs {self.num_envs})")
        flat = {
            "obs": self.obs.flatten(0, 1),
            "actions": self.actions.flatten(0, 1),
            "log_probs": self.log_probs.flatten(0, 1),
            "values": self.values.flatten(0, 1),
            "advantages": self.advantages.flatten(0, 1),
            "returns": self.returns.flatten(0, 1),
        }
        for _ in range(num_epochs):
            perm = torch.randperm(total, generator=generator).to(self.device)
            for i in range(num_mini_batches):
                idx = perm[i * size : (i + 1) * size]
                yield Batch(**{k: v[idx] for k, v in flat.items()})
