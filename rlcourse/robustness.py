"""How well does a policy hold up when the physics changes? Sweep parameters, evaluate, plot.

Domain randomization trains a policy on a *distribution* of simulators; this module
measures the result on a grid of fixed simulators::

    result = rlcourse.evaluate_robustness(agent, "Ant", sweep={
        "friction": [0.4, 0.7, 1.0, 1.3],
        "mass_scale": [0.8, 1.0, 1.2],
    }, episodes=4)
    print(result.to_markdown())
    result.heatmap()            # matplotlib figure, friction x mass_scale

Each grid point builds the task with every env set to exactly that value, through the
same randomization config the training envs use (a range ``[v, v]``), and runs
:func:`rlcourse.evaluate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rlcourse import envs
from rlcourse.evaluation import evaluate
from rlcourse.export import load_policy


def _fixed(param: str, op: str = "scaling") -> Callable[[float], dict[str, Any]]:
    return lambda v: {param: {"range": [v, v], "operation": op}}


# Stands for the task's floating base (Ant/Humanoid "torso", Quadruped "base"); resolved
# by evaluate_robustness from the task's model.
_ROOT = "<root body>"

# sweep key -> randomization config that pins every env to that value
SWEEPS: dict[str, Callable[[float], dict[str, Any]]] = {
    "friction": _fixed("friction"),
    "mass_scale": _fixed("mass"),
    "added_mass": lambda v: {"mass": {"range": [v, v], "operation": "additive", "bodies": [_ROOT]}},
    "actuator_strength": _fixed("actuator_strength"),
    "joint_damping_scale": _fixed("joint_damping"),
    "gravity_scale": _fixed("gravity"),
    "action_latency": lambda v: {"action_latency": {"range": [int(v), int(v)], "mode": "startup"}},
    "action_latency_physics_steps": lambda v: {"action_latency": {"range": [int(v), int(v)], "mode": "startup",
                                                                  "unit": "physics_steps"}},
    "obs_noise_std": lambda v: {"obs_noise": {"range": [0.0, v]}},
    "action_noise_std": lambda v: {"action_noise": {"range": [0.0, v]}},
}
"""Supported sweep keys. Scales multiply the nominal value; ``added_mass`` adds kg to the robot's
floating base (the torso of the Ant and the Humanoid, the base of the Quadruped);
``action_latency`` counts whole control steps, ``action_latency_physics_steps`` physics steps
(10 ms each on the Ant, whose control step is 5 of them)."""


def _root_body_name(task: str, env_kwargs: Mapping[str, Any]) -> str:
    """Name of the body carried by the task's free joint (its floating base)."""
    import mujoco

    env = envs.make(task, num_envs=1, seed=0, **dict(env_kwargs))
    try:
        model = env.model
        free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
        if not free:
            raise ValueError(f"added_mass: task {task!r} has no floating base")
        return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.jnt_bodyid[free[0]]))
    finally:
        env.close()


@dataclasses.dataclass
class RobustnessResult:
    """The sweep grid and one evaluation per grid point."""

    params: list[str]
    values: dict[str, list[float]]
    rows: list[dict[str, float]]
    metric: str = "episode_return_mean"

    def grid(self):
        """The metric as an array shaped like the sweep (``len(values[p])`` per parameter)."""
        import numpy as np

        shape = [len(self.values[p]) for p in self.params]
        return np.array([r[self.metric] for r in self.rows], dtype=float).reshape(shape)

    def to_markdown(self) -> str:
        cols = self.params + ["episode_return_mean", "episode_return_std", "episode_length_mean"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
        return "\n".join(lines)

    def heatmap(self, path: str | os.PathLike | None = None, title: str | None = None):
        """A heat-map (two swept parameters) or a line plot (one); saved to ``path`` if given."""
        # A bare Figure (no pyplot): works headless, and Jupyter still renders it inline.
        from matplotlib.figure import Figure

        grid = self.grid()
        fig = Figure(figsize=(5.5, 4.2))
        ax = fig.add_subplot()
        if len(self.params) == 1:
            p = self.params[0]
            ax.plot(self.values[p], grid, marker="o")
            ax.set_xlabel(p)
            ax.set_ylabel(self.metric)
        elif len(self.params) == 2:
            p0, p1 = self.params
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            ax.set_yticks(range(len(self.values[p0])), [f"{v:g}" for v in self.values[p0]])
            ax.set_xticks(range(len(self.values[p1])), [f"{v:g}" for v in self.values[p1]])
            ax.set_ylabel(p0)
            ax.set_xlabel(p1)
            for i, j in itertools.product(range(grid.shape[0]), range(grid.shape[1])):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
            fig.colorbar(im, ax=ax, label=self.metric)
        else:
            raise ValueError(f"heatmap shows one or two swept parameters, this sweep has {len(self.params)}")
        ax.set_title(title or f"robustness: {self.metric}")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def evaluate_robustness(
    policy: Any,
    task: str = "Ant",
    sweep: Mapping[str, Sequence[float]] | None = None,
    episodes: int = 4,
    num_envs: int = 4,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
) -> RobustnessResult:
    """Evaluate ``policy`` on every point of a grid of physical parameters.

    Args:
        policy: an rlcourse agent, a callable ``obs -> actions`` or the path of an
            exported TorchScript policy (``policy.pt``).
        task: a locomotion task id (``"Ant"``).
        sweep: ``{key: [values]}`` with keys from :data:`SWEEPS`, e.g.
            ``{"friction": [0.5, 1.0], "mass_scale": [0.8, 1.2]}``.
        episodes: episodes per grid point.
        num_envs: envs per grid point.
        seed: evaluation seed (the same for every grid point).
        env_kwargs: passed to ``rlcourse.envs.make`` (e.g. ``{"episode_length": 300}``).

    Returns:
        a :class:`RobustnessResult` (``rows``, ``grid()``, ``to_markdown()``, ``heatmap()``).

    Raises:
        ValueError: an unknown or empty sweep, or a value the randomization config rejects.
    """
    if not sweep:
        raise ValueError(f"sweep must name at least one parameter, e.g. {{'friction': [0.5, 1.0]}}; known: {list(SWEEPS)}")
    for key, vals in sweep.items():
        if key not in SWEEPS:
            close = difflib.get_close_matches(key, SWEEPS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown sweep parameter {key!r}{hint}; known: {', '.join(SWEEPS)}")
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
            raise ValueError(f"sweep[{key!r}] must be a non-empty list of numbers, got {vals!r}")
    if isinstance(policy, (str, Path)):
        policy = load_policy(policy)
    params = list(sweep)
    values = {p: [float(v) for v in sweep[p]] for p in params}
    root = _root_body_name(task, env_kwargs or {}) if "added_mass" in params else None
    rows = []
    for point in itertools.product(*(values[p] for p in params)):
        cfg: dict[str, Any] = {}
        for p, v in zip(params, point):
            for name, term in SWEEPS[p](v).items():
                if term.get("bodies") == [_ROOT]:
                    term = {**term, "bodies": [root]}
                if name in cfg:
                    raise ValueError(f"sweep parameters {params} both set {name!r}; sweep them separately")
                cfg[name] = term
        env = envs.make(task, num_envs=num_envs, seed=seed, randomization=cfg, **dict(env_kwargs or {}))
        try:
            result = evaluate(policy, env, episodes=episodes, seed=seed)
        finally:
            env.close()
        row: dict[str, Any] = dict(zip(params, point))
        row.update({k: v for k, v in result.items() if k != "returns"})
        rows.append(row)
    return RobustnessResult(params, values, rows)


__all__ = ["SWEEPS", "RobustnessResult", "evaluate_robustness"]
