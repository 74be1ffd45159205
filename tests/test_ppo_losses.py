"""PPO's clipped surrogate loss (Schulman et al. 2017, eq. 7), value by value and gradient by gradient.

Per sample the loss is  -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)  with eps = 0.2.
Written in terms of log-probabilities, ratio = exp(logp - logp_old), and its derivative with
respect to logp is -ratio * A on the unclipped branch and 0 where the clipped branch is the
minimum (the clamp is flat there): a clipped sample gives the policy no push at all.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlcourse.algos.ppo import clipped_surrogate_loss

EPS = 0.2

# (advantage, ratio, expected loss, expected d loss / d logp)
CASES = [
    # A > 0, ratio inside [0.8, 1.2]: min(1.1*2, 1.1*2) = 2.2 -> loss -2.2; grad -1.1*2 = -2.2
    pytest.param(2.0, 1.1, -2.2, -2.2, id="A>0-inside"),
    # A > 0, ratio above the range: min(1.5*2 = 3.0, 1.2*2 = 2.4) = 2.4 -> loss -2.4; clipped: grad 0
    pytest.param(2.0, 1.5, -2.4, 0.0, id="A>0-above-clipped"),
    # A > 0, ratio below the range: min(0.5*2 = 1.0, 0.8*2 = 1.6) = 1.0 -> loss -1.0; unclipped: grad -0.5*2 = -1.0
    pytest.param(2.0, 0.5, -1.0, -1.0, id="A>0-below-unclipped"),
    # A < 0, ratio inside: min(0.9*-2, 0.9*-2) = -1.8 -> loss 1.8; grad -0.9*-2 = 1.8
    pytest.param(-2.0, 0.9, 1.8, 1.8, id="A<0-inside"),
    # A < 0, ratio below the range: min(0.5*-2 = -1.0, 0.8*-2 = -1.6) = -1.6 -> loss 1.6; clipped: grad 0
    pytest.param(-2.0, 0.5, 1.6, 0.0, id="A<0-below-clipped"),
    # A < 0, ratio above the range: min(1.5*-2 = -3.0, 1.2*-2 = -2.4) = -3.0 -> loss 3.0; unclipped: grad 3.0
    pytest.param(-2.0, 1.5, 3.0, 3.0, id="A<0-above-unclipped"),
    # ratio exactly 1 (the first minibatch of every update): loss -A, grad -A
    pytest.param(0.5, 1.0, -0.5, -0.5, id="ratio1"),
]


def _loss_and_grad(advantage: float, ratio: float) -> tuple[float, float]:
    old = torch.tensor([-0.7], dtype=torch.float64)  # any old log-prob; only the difference matters
    logp = (old + math.log(ratio)).requires_grad_(True)
    loss = clipped_surrogate_loss(logp, old, torch.tensor([advantage], dtype=torch.float64), EPS)
    loss.backward()
    return loss.item(), logp.grad.item()


@pytest.mark.parametrize("advantage, ratio, expected_loss, expected_grad", CASES)
def test_clipped_surrogate_value_and_gradient(
    advantage: float, ratio: float, expected_loss: float, expected_grad: float
) -> None:
    loss, grad = _loss_and_grad(advantage, ratio)
    assert loss == pytest.approx(expected_loss, abs=1e-9)
    assert grad == pytest.approx(expected_grad, abs=1e-9)


def test_clipped_surrogate_is_the_batch_mean() -> None:
    """A batch of all cases: the loss is the mean, and each sample's gradient is its own / batch size."""
    adv = torch.tensor([c.values[0] for c in CASES], dtype=torch.float64)
    ratio = torch.tensor([c.values[1] for c in CASES], dtype=torch.float64)
    old = torch.zeros_like(adv)
    logp = ratio.log().requires_grad_(True)
    loss = clipped_surrogate_loss(logp, old, adv, EPS)
    loss.backward()
    n = len(CASES)
    # (-2.2 - 2.4 - 1.0 + 1.8 + 1.6 + 3.0 - 0.5) / 7 = 0.3 / 7
    assert loss.item() == pytest.approx(0.3 / n, abs=1e-9)
    expected_grad = torch.tensor([c.values[3] for c in CASES], dtype=torch.float64) / n
    torch.testing.assert_close(logp.grad, expected_grad)
    clipped = expected_grad == 0
    assert clipped.sum().item() == 2 and (logp.grad[clipped] == 0).all()


def test_clipped_surrogate_accepts_float32_batches() -> None:
    # Ratios 2, 0.5 and 1 (log-prob differences ln 2, -ln 2, 0), advantages 1, 1 and -2, clip 0.1:
    # min(2, 1.1) = 1.1, min(0.5, 0.9) = 0.5, min(-2, -2) = -2, so the loss is -(1.1 + 0.5 - 2) / 3.
    ln2 = torch.log(torch.tensor(2.0))
    logp = torch.stack([ln2, -ln2, torch.tensor(0.0)])
    old = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -2.0])
    loss = clipped_surrogate_loss(logp, old, adv, 0.1)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor(0.4 / 3))
