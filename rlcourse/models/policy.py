"""The deployable policy: normalizer + network + action post-processing in one module."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class InferencePolicy(nn.Module):
    """Deterministic ``obs -> action`` map, what a robot runs after training.

    It bundles the observation normalizer with the network, so the exported file is
    self-contained (no separate statistics to ship). ``forward`` takes a batch
    ``(B, num_obs)`` and returns ``(B,)`` int64 actions (discrete) or
    ``(B, num_actions)`` float actions within the action bounds (continuous).

    Args:
        net: maps normalized observations to logits / Q-values (discrete) or actions.
        normalizer: an :class:`EmpiricalNormalization` or ``None``.
        discrete: take the argmax of ``net``'s output.
        low, high: action bounds for continuous actions.
        squash: ``net`` outputs pre-tanh values (SAC); map ``tanh`` onto ``[low, high]``
            instead of clipping.
    """

    def __init__(
        self,
        net: nn.Module,
        normalizer: nn.Module | None = None,
        discrete: bool = False,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
        squash: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalizer = normalizer if normalizer is not None else nn.Identity()
        self.discrete = discrete
        self.squash = squash
        n = 1 if low is None else int(np.size(low))
        lo = torch.full((n,), -float("inf")) if low is None else torch.as_tensor(np.asarray(low, dtype=np.float32).reshape(-1))
        hi = torch.full((n,), float("inf")) if high is None else torch.as_tensor(np.asarray(high, dtype=np.float32).reshape(-1))
        # The bounds live where the network does (a policy trained on a GPU stays there).
        device = next(net.parameters(), torch.empty(0)).device
        lo, hi = lo.to(device), hi.to(device)
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalizer(obs))
        if self.discrete:
            return out.argmax(dim=-1)
        if self.squash:
            return self.low + (torch.tanh(out) + 1.0) * 0.5 * (self.high - self.low)
        return torch.maximum(torch.minimum(out, self.high), self.low)
