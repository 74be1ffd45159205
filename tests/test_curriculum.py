"""LevelCurriculum: legged_gym's per-env promote/demote rule (rlcourse/envs/curriculum.py)."""

from __future__ import annotations

import pytest
import torch

from rlcourse.envs.curriculum import LevelCurriculum


def test_up_down_and_stay_per_env() -> None:
    cur = LevelCurriculum(num_envs=5, num_levels=4, seed=0)
    cur.levels[:] = torch.tensor([1, 1, 1, 0, 2])
    new = cur.update([0, 1, 2, 3, 4], move_up=[True, False, False, False, True],
                     move_down=[False, True, False, True, True])
    # up; down; stay; down at level 0 is clamped; up wins over down (legged_gym: move_down * ~move_up)
    assert cur.levels.tolist() == [2, 0, 1, 0, 3]
    assert new.tolist() == [2, 0, 1, 0, 3]


def test_only_the_given_envs_change() -> None:
    cur = LevelCurriculum(num_envs=4, num_levels=5, seed=0)
    cur.update(torch.tensor([2]), torch.tensor([True]), torch.tensor([False]))
    assert cur.levels.tolist() == [0, 0, 1, 0]


def test_solving_the_top_level_sends_an_env_to_a_random_level() -> None:
    cur = LevelCurriculum(num_envs=2000, num_levels=3, seed=0)
    cur.levels[:] = 2
    ids = torch.arange(2000)
    cur.update(ids, torch.ones(2000, dtype=torch.bool), torch.zeros(2000, dtype=torch.bool))
    counts = cur.histogram()
    assert int(counts.sum()) == 2000 and len(counts) == 3
    assert all(500 < int(c) < 830 for c in counts), counts     # about uniform over 0, 1, 2
    again = LevelCurriculum(num_envs=2000, num_levels=3, seed=0)
    again.levels[:] = 2
    again.update(ids, torch.ones(2000, dtype=torch.bool), torch.zeros(2000, dtype=torch.bool))
    assert torch.equal(again.levels, cur.levels)                # the seed fixes the re-drawn levels


def test_initial_levels_lie_in_the_init_range() -> None:
    cur = LevelCurriculum(num_envs=500, num_levels=10, init_max_level=2, seed=1)
    assert set(cur.levels.tolist()) == {0, 1, 2}
    assert LevelCurriculum(num_envs=8, num_levels=10).levels.tolist() == [0] * 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_envs=0, num_levels=3), "num_envs"),
    (dict(num_envs=2, num_levels=3, init_max_level=3), "init_max_level"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LevelCurriculum(**kwargs)


def test_bad_updates() -> None:
    cur = LevelCurriculum(num_envs=3, num_levels=3)
    with pytest.raises(ValueError, match="differ in length"):
        cur.update([0, 1], [True], [False, False])
    with pytest.raises(ValueError, match=r"env_ids must lie in \[0, 2\]"):
        cur.update([3], [True], [False])
