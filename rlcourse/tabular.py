"""Small tabular MDPs for the first lecture: a gridworld with exact dynamics and plots.

The notebook implements value iteration itself; this module only builds the MDP
(transition tensor ``P[s, a, s']`` and expected rewards ``R[s, a]``) and draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTIONS = ("up", "right", "down", "left")
_MOVES = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}


@dataclass
class GridWorld:
    """A grid MDP. ``layout`` rows use ``.`` free, ``#`` wall, ``G`` goal (+goal_reward, terminal),
    ``P`` pit (pit_reward, terminal), ``S`` start.

    With probability ``slip`` the robot moves in one of the two perpendicular directions
    (half each) instead of the commanded one: the classic noisy gridworld.
    """

    layout: tuple[str, ...] = (
        "....G",
        ".#..P",
        "..#..",
        "S....",
    )
    slip: float = 0.1
    step_reward: float = -0.04
    goal_reward: float = 1.0
    pit_reward: float = -1.0
    P: np.ndarray = field(init=False, repr=False)
    R: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows = [list(r) for r in self.layout]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("all layout rows must have the same length")
        if not 0.0 <= self.slip <= 1.0:
            raise ValueError(f"slip must lie in [0, 1], got {self.slip}")
        self.shape = (len(rows), len(rows[0]))
        self.cells = [(i, j) for i in range(self.shape[0]) for j in range(self.shape[1]) if rows[i][j] != "#"]
        self.index = {c: k for k, c in enumerate(self.cells)}
        self.kind = {c: rows[c[0]][c[1]] for c in self.cells}
        n, m = len(self.cells), len(ACTIONS)
        self.P = np.zeros((n, m, n))
        self.R = np.zeros((n, m))
        for c, s in self.index.items():
            if self.terminal(c):
                self.P[s, :, s] = 1.0  # absorbing, no more reward
                continue
            for a in range(m):
                perpendicular = ((a + 1) % 4, (a + 3) % 4)
                for direction, p in ((a, 1.0 - self.slip), (perpendicular[0], self.slip / 2), (perpendicular[1], self.slip / 2)):
                    if p == 0.0:
                        continue
                    nxt = self._move(c, direction)
                    self.P[s, a, self.index[nxt]] += p
                    self.R[s, a] += p * self.reward(nxt)

    @property
    def num_states(self) -> int:
        return len(self.cells)

    def terminal(self, cell: tuple[int, int]) -> bool:
        return self.kind[cell] in "GP"

    def reward(self, arrived: tuple[int, int]) -> float:
        kind = self.kind[arrived]
        return self.goal_reward if kind == "G" else self.pit_reward if kind == "P" else self.step_reward

    def _move(self, cell: tuple[int, int], direction: int) -> tuple[int, int]:
        di, dj = _MOVES[direction]
        nxt = (cell[0] + di, cell[1] + dj)
        inside = 0 <= nxt[0] < self.shape[0] and 0 <= nxt[1] < self.shape[1]
        return nxt if inside and nxt in self.index else cell  # bump into walls / edges: stay

    def to_grid(self, values: np.ndarray) -> np.ndarray:
        """Per-state values -> a 2-D array (NaN on walls) for plotting."""
        grid = np.full(self.shape, np.nan)
        for c, s in self.index.items():
            grid[c] = values[s]
        return grid

    def plot(self, V: np.ndarray, policy: np.ndarray | None = None, ax=None, title: str = ""):  # noqa: ANN001, ANN201
        """Heat-map of ``V`` with the greedy ``policy`` as arrows."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.6))
        grid = self.to_grid(V)
        im = ax.imshow(grid, cmap="viridis")
        arrows = {0: (0, -0.3), 1: (0.3, 0), 2: (0, 0.3), 3: (-0.3, 0)}
        for c, s in self.index.items():
            label = self.kind[c] if self.kind[c] in "GPS" else ""
            ax.text(c[1], c[0] + 0.32, f"{V[s]:.2f}", ha="center", va="center", fontsize=7, color="w")
            if label:
                ax.text(c[1] - 0.32, c[0] - 0.3, label, fontsize=8, color="w", weight="bold")
            if policy is not None and not self.terminal(c):
                dx, dy = arrows[int(policy[s])]
                ax.arrow(c[1] - dx / 2, c[0] - dy / 2, dx, dy, head_width=0.12, color="w", length_includes_head=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
        return ax
