"""EmpiricalNormalization: running statistics equal numpy's over all data seen, and they are saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcourse.models.normalizer import EmpiricalNormalization


def _batches(sizes: list[int], dim: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Different location and scale per feature, so a mixed-up axis would show.
    loc, scale = np.array([5.0, -2.0, 0.0])[:dim], np.array([0.1, 3.0, 1.0])[:dim]
    return [rng.normal(loc, scale, size=(n, dim)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize(
    "sizes",
    [[8], [5, 1, 17, 3], [1, 1, 1, 1, 1, 1], [1000, 2]],
    ids=["one-batch", "mixed-sizes", "single-rows", "large-then-small"],
)
def test_running_stats_equal_numpy_over_the_concatenation(sizes: list[int]) -> None:
    batches = _batches(sizes)
    norm = EmpiricalNormalization(3)
    for b in batches:
        norm.update(torch.from_numpy(b))
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=1e-5, atol=1e-5)
    # Population variance (ddof=0): the merge formula is exact, not an approximation.
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=1e-4, atol=1e-6)
    assert norm.count.item() == sum(sizes)


def test_forward_standardizes_and_clips() -> None:
    norm = EmpiricalNormalization(2, clip=5.0)
    norm.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))  # mean [1, 20], var [1, 100]
    x = torch.tensor([[3.0, 20.0], [1.0, 1000.0]])
    y = norm(x)
    # (3 - 1) / 1 = 2, (20 - 20) / 10 = 0; (1 - 1) / 1 = 0, (1000 - 20) / 10 = 98 -> clipped to 5
    torch.testing.assert_close(y, torch.tensor([[2.0, 0.0], [0.0, 5.0]]), atol=1e-6, rtol=1e-6)


def test_update_accepts_any_leading_shape() -> None:
    """A (T, N, dim) rollout counts as T * N samples."""
    data = torch.from_numpy(_batches([12])[0]).reshape(3, 4, 3)
    norm = EmpiricalNormalization(3)
    norm.update(data)
    assert norm.count.item() == 12
    torch.testing.assert_close(norm.mean, data.reshape(-1, 3).mean(0))


def test_statistics_travel_in_state_dict() -> None:
    norm = EmpiricalNormalization(3)
    for b in _batches([4, 9, 2]):
        norm.update(torch.from_numpy(b))
    state = norm.state_dict()
    assert {"mean", "var", "count"} <= set(state)

    fresh = EmpiricalNormalization(3)
    x = torch.from_numpy(_batches([6], seed=1)[0])
    assert not torch.allclose(fresh(x), norm(x))  # untrained: mean 0, var 1
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), norm(x), rtol=0, atol=0)
    assert fresh.count.item() == 15
    # Merging continues from the loaded count, as if the batches had been seen here.
    more = torch.from_numpy(_batches([5], seed=2)[0])
    fresh.update(more)
    norm.update(more)
    torch.testing.assert_close(fresh.mean, norm.mean, rtol=0, atol=0)


def test_ppo_checkpoint_contains_the_normalizer(tiny_ppo, iterate) -> None:
    agent = tiny_ppo("CartPole-v1", num_envs=2)
    iterate(agent, agent.env, 1)
    saved = agent.checkpoint()["modules"]["obs_normalizer"]
    assert saved["count"].item() == agent.num_steps_per_env * 2
    torch.testing.assert_close(saved["mean"], agent.obs_normalizer.mean)
    assert not torch.equal(saved["mean"], torch.zeros(4))
