"""Batched environments with Isaac Lab step semantics.

``make(env_id, num_envs=..., seed=...)`` returns a :class:`VecEnv`. Tasks written
for rlcourse register themselves with :func:`register`; ``"isaaclab:<task>"`` and
``"isaacgym:<task>"`` create Isaac Lab / IsaacGymEnvs tasks through the adapters in
:mod:`rlcourse.envs.isaac`; any other id is looked up in gymnasium's registry and
wrapped by :class:`GymVecEnv`.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch

from rlcourse.envs.base import VecEnv
from rlcourse.envs.gym_adapter import GymVecEnv

_TASKS: dict[str, Callable[..., VecEnv]] = {}


def register(task_id: str, factory: Callable[..., VecEnv]) -> None:
    """Register a native rlcourse task factory ``factory(num_envs=, seed=, device=, **kwargs)``."""
    _TASKS[task_id] = factory


def available() -> list[str]:
    """All ids ``make`` accepts: native tasks first, then gymnasium ids."""
    import gymnasium as gym

    return sorted(_TASKS) + sorted(gym.envs.registry.keys())


def make(
    env_id: str,
    num_envs: int = 1,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> VecEnv:
    """Create ``num_envs`` copies of ``env_id`` stepped as one batch.

    Raises:
        ValueError: unknown id (with the closest known ids), or ``num_envs < 1``.
    """
    import gymnasium as gym

    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if env_id in _TASKS:
        return _TASKS[env_id](num_envs=num_envs, seed=seed, device=device, **kwargs)
    prefix, _, task = env_id.partition(":")
    if task and prefix in ("isaaclab", "isaacgym"):
        # GPU simulators, imported only when asked for (see rlcourse.envs.isaac).
        from rlcourse.envs import isaac

        factory = isaac.make_isaaclab if prefix == "isaaclab" else isaac.make_isaacgym
        return factory(task, num_envs=num_envs, seed=seed, device=device, **kwargs)
    check_id(env_id)
    return GymVecEnv(env_id, num_envs=num_envs, seed=seed, device=device, **kwargs)


def check_id(env_id: str) -> None:
    """Raise ``ValueError`` (naming the closest known ids) unless :func:`make` knows ``env_id``.

    Cheap: nothing is built (the CLI checks before it starts several training processes).
    """
    import gymnasium as gym

    prefix, _, task = env_id.partition(":")
    if env_id in _TASKS or (task and prefix in ("isaaclab", "isaacgym")) or env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, available(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown environment id {env_id!r}.{hint}")


def _make_locomotion(task: str) -> Callable[..., VecEnv]:
    # Lazy: mujoco is imported only when a locomotion task is created.
    def factory(**kwargs: Any) -> VecEnv:
        from rlcourse.envs import locomotion

        return getattr(locomotion, task)(**kwargs)

    return factory


register("Ant", _make_locomotion("AntEnv"))
register("Quadruped", _make_locomotion("QuadrupedEnv"))
register("Humanoid", _make_locomotion("HumanoidEnv"))

__all__ = ["VecEnv", "GymVecEnv", "make", "register", "available"]
