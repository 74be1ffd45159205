"""Small pieces the off-policy algorithms (DQN, DDPG, SAC) share."""

from __future__ import annotations

import torch
from torch import nn

from rlcourse.models.mlp import mlp


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Move the target network's parameters towards the source's: ``theta' <- (1 - tau) theta' + tau theta``.

    ``tau = 1`` copies the source (DQN's "hard" target update); a small ``tau`` such as
    0.005 makes the target a slowly moving average (DDPG, SAC), which keeps the
    bootstrapped targets from chasing the network that is being trained.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("polyak_update: target and source have different parameter lists")
    # lerp(t, s, tau) = t + tau * (s - t); one fused call for all tensors instead of a Python loop.
    torch._foreach_lerp_(target_params, source_params, tau)


def scale_actions(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Map actions from ``[-1, 1]`` onto the env's box ``[low, high]``."""
    return low + (actions + 1.0) * 0.5 * (high - low)


def action_bounds(spec: object, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` of a continuous env as float32 tensors; an unbounded box is an error."""
    low = torch.tensor(spec.action_low, dtype=torch.float32, device=device)  # type: ignore[attr-defined]
    high = torch.tensor(spec.action_high, dtype=torch.float32, device=device)  # type: ignore[attr-defined]
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError(
            f"{spec.env_id}: DDPG and SAC squash actions into the action box, which must be bounded; "  # type: ignore[attr-defined]
            f"got low={low.tolist()}, high={high.tolist()}"
        )
    return low, high


class QCritic(nn.Module):
    """``Q(s, a)``: an MLP on the concatenated observation and ``[-1, 1]`` action; returns ``(B,)``."""

    def __init__(self, num_obs: int, num_actions: int, hidden: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.net = mlp(num_obs + num_actions, hidden, 1, activation)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)
