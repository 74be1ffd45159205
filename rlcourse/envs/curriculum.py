"""Per-environment difficulty levels driven by each environment's own success.

This is the "game-inspired" curriculum of legged_gym (Rudin et al. 2022,
``LeggedRobot._update_terrain_curriculum``), written for any notion of difficulty (terrain
roughness, payload, push strength, command speed): every env has an integer level; when one
of its episodes ends, the env moves **up** one level if it succeeded, **down** one level if it
clearly failed (and did not also succeed), and stays otherwise. An env that succeeds on the
top level is sent to a random level, so the hardest levels never hold every env and the easy
ones are revisited (no forgetting).

Deciding per env, from that env's own episode, matters: a batch-average rule ("promote all
when the mean return is high") moves robots that are still failing onto harder ground.

Example (the levels select a payload per env)::

    curriculum = LevelCurriculum(num_envs=32, num_levels=10, seed=0)
    payload_kg = 4.0 * curriculum.levels            # level k carries 4k kg
    ...
    ids = extras["episode"]["env_ids"]               # episodes that just ended
    walked = extras["episode"]["x_distance"]
    curriculum.update(ids, move_up=walked > 6.0, move_down=walked < 3.0)
"""

from __future__ import annotations

from typing import Any

import torch


class LevelCurriculum:
    """Integer difficulty levels ``0 .. num_levels - 1``, one per environment.

    Args:
        num_envs: number of environments.
        num_levels: number of levels (legged_gym: ``terrain.num_rows``).
        init_max_level: envs start on a level drawn uniformly from ``0 .. init_max_level``
            (legged_gym: ``max_init_terrain_level``).
        seed: seed of the generator used for the initial and the re-drawn levels.
    """

    def __init__(self, num_envs: int, num_levels: int, init_max_level: int = 0, seed: int | None = 0) -> None:
        if num_envs < 1 or num_levels < 1:
            raise ValueError(f"need num_envs >= 1 and num_levels >= 1, got {num_envs} and {num_levels}")
        if not 0 <= init_max_level < num_levels:
            raise ValueError(f"init_max_level must be in [0, {num_levels - 1}], got {init_max_level}")
        self.num_envs, self.num_levels = int(num_envs), int(num_levels)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.levels = torch.randint(0, init_max_level + 1, (self.num_envs,), generator=self.generator)

    def update(self, env_ids: Any, move_up: Any, move_down: Any) -> torch.Tensor:
        """Apply the outcome of the episodes of ``env_ids`` that just ended; returns their new levels.

        Args:
            env_ids: indices of the envs whose episode ended, shape ``(k,)``.
            move_up: ``(k,)`` bool, the episode succeeded (legged_gym: walked far enough).
            move_down: ``(k,)`` bool, the episode failed badly (legged_gym: walked less than half
                of the commanded distance); ignored where ``move_up`` is true.
        """
        ids = torch.as_tensor(env_ids, dtype=torch.long).reshape(-1).cpu()
        up = torch.as_tensor(move_up, dtype=torch.bool).reshape(-1).cpu()
        down = torch.as_tensor(move_down, dtype=torch.bool).reshape(-1).cpu() & ~up
        if not (len(ids) == len(up) == len(down)):
            raise ValueError(f"env_ids, move_up and move_down differ in length: {len(ids)}, {len(up)}, {len(down)}")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_envs):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs - 1}]")
        new = self.levels[ids] + up.long() - down.long()
        # Solved the top level: a random level, so no level is left empty for long.
        solved = new >= self.num_levels
        new[solved] = torch.randint(0, self.num_levels, (int(solved.sum()),), generator=self.generator)
        self.levels[ids] = new.clamp(min=0)
        return self.levels[ids]

    def histogram(self) -> torch.Tensor:
        """How many envs are on each level, shape ``(num_levels,)``."""
        return torch.bincount(self.levels, minlength=self.num_levels)
