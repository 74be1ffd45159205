"""Running observation normalizer, stored inside the policy so it is saved and exported with it."""

from __future__ import annotations

import torch
from torch import nn


class EmpiricalNormalization(nn.Module):
    """Normalize inputs by a running mean and variance: ``(x - mean) / sqrt(var + eps)``.

    The statistics are buffers, so they travel with ``state_dict()``, checkpoints and
    the TorchScript export: a deployed policy normalizes exactly as in training.
    Batches are merged with the parallel-variance formula of Chan et al. (1979),
    which is exact for any batch sizes (no exponential forgetting).

    Args:
        shape: shape of one input, e.g. ``(num_obs,)``.
        eps: added to the variance before the square root.
        clip: normalized values are clipped to ``[-clip, clip]`` (outliers early in training).
    """

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-8, clip: float = 10.0) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.eps = eps
        self.clip = clip
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) / torch.sqrt(self.var + self.eps)
        return torch.clamp(y, -self.clip, self.clip)

    @torch.jit.unused
    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``x`` of shape ``(batch, *shape)`` into the running statistics."""
        x = x.reshape(-1, *self.mean.shape).to(self.mean.dtype)
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(dim=0)
        var_b = x.var(dim=0, unbiased=False)
        n_a = self.count.item()
        if n_a == 0:
            self.mean.copy_(mean_b)
            self.var.copy_(var_b)
            self.count.fill_(n_b)
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta * (n_b / n))
        m2 = self.var * n_a + var_b * n_b + delta.pow(2) * (n_a * n_b / n)
        self.var.copy_(m2 / n)
        self.count.fill_(n)
