"""Policies that ship with rlcourse, so a lab or a lecture can start from a walking robot.

Training a locomotion gait from scratch takes minutes on a laptop (the Ant needs ~1M steps);
lecture 7 and lab 4 start from a policy trained once, stored here, and identical on every
machine. Each entry is an ordinary PPO checkpoint (``rlcourse.PPO.save``: networks,
observation normalizer, optimizer state), so it can be evaluated, exported or trained further.

``ant_walker``
    PPO (preset ``Ant``: 128 envs, 1,000,000 steps, seed 0, one torch thread; initial
    action log-std -0.5, the preset's value when it was trained) on the nominal ``Ant``
    task, no randomization. Made with ``python -m rlcourse.pretrained
    ant_walker`` (212 s on 2 CPU cores, 2026-12-01). Evaluated with 4 episodes of 300
    control steps per grid point, its mean episode return is 606-644 on friction 0.05 x
    mass scale 0.5-2.5, 717-818 on friction 0.1-1.0, and 330-343 on friction 0.01 (ice):
    friction, not mass, is what it is sensitive to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rlcourse import envs
from rlcourse.algos import get_algorithm
from rlcourse.seeding import seed_everything

HERE = Path(__file__).resolve().parent

POLICIES: dict[str, dict[str, Any]] = {
    "ant_walker": {"task": "Ant", "algo": "PPO", "preset": "Ant", "num_envs": 128,
                   "total_steps": 1_000_000, "seed": 0, "hyperparameters": {"init_log_std": -0.5}},
}
"""How each shipped policy was trained (see :func:`train`): ``hyperparameters`` override the
preset, so a preset can improve without changing the policies lectures and labs start from."""


def path(name: str) -> Path:
    """The checkpoint file of a shipped policy."""
    if name not in POLICIES:
        raise ValueError(f"unknown pretrained policy {name!r}; available: {', '.join(POLICIES)}")
    return HERE / f"{name}.pt"


def load(name: str, env: Any = None) -> Any:
    """Load a shipped policy as an agent; pass ``env`` to train it further (same task)."""
    file = path(name)  # raises the clear error for an unknown name
    return get_algorithm(POLICIES[name]["algo"]).load(file, env=env)


def train(name: str, out: str | os.PathLike | None = None) -> Path:
    """Re-create a shipped policy from its recipe in :data:`POLICIES` (writes ``out``, default: in place)."""
    default = path(name)                   # rejects an unknown name with a clear error
    target = default if out is None else Path(out)
    spec = POLICIES[name]
    torch.set_num_threads(1)
    seed_everything(spec["seed"])
    env = envs.make(spec["task"], num_envs=spec["num_envs"], seed=spec["seed"])
    try:
        agent = get_algorithm(spec["algo"])(env, seed=spec["seed"], preset=spec["preset"],
                                            **spec.get("hyperparameters", {}))
        agent.learn(spec["total_steps"], eval_episodes=0, progress=False)
    finally:
        env.close()
    agent.save(target)
    return target


if __name__ == "__main__":
    import sys

    for policy in sys.argv[1:] or list(POLICIES):
        print(f"{policy}: wrote {train(policy)}")
