"""Small pieces the off-policy algorithms (DQN, DDPG, SAC) share."""

from __future__ import annotations

import math

import torch
from torch import nn

from rlcourse.models.mlp import ACTIVATIONS


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


class QCritics(nn.Module):
    """``E`` independent critics ``Q_e(s, a)`` evaluated together; ``forward`` returns ``(E, B)``.

    Each critic is its own MLP on the concatenated observation and ``[-1, 1]`` action.
    Their layers are stacked into ``(E, in, out)`` weight tensors, so every layer of all
    critics is one batched matrix multiply (``torch.baddbmm``): SAC's twin critics cost
    about as many operations as one, which matters on a CPU where small networks are
    dominated by per-operation overhead. Initialization matches :func:`~rlcourse.models.mlp.mlp`
    (orthogonal, gain sqrt(2) for hidden layers and 1 for the output, zero biases).
    """

    def __init__(
        self, num_obs: int, num_actions: int, hidden: tuple[int, ...], activation: str, num_critics: int = 2
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.num_critics = num_critics
        dims = [num_obs + num_actions, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            w = torch.empty(num_critics, a, b)
            for e in range(num_critics):
                # orthogonal_ on the (out, in) view, like nn.Linear's weight
                nn.init.orthogonal_(w[e].T, math.sqrt(2) if i < len(hidden) else 1.0)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(num_critics, 1, b)))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], dim=-1)
        if x.dim() == 2:  # the same batch for every critic
            x = x.unsqueeze(0).expand(self.num_critics, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)  # b + x @ w, for all critics at once
            if i < last:
                x = self.activation(x)
        return x.squeeze(-1)
