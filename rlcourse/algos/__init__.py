"""Reference implementations. ``ALGORITHMS`` maps CLI names to classes."""

from rlcourse.algos.base import Algorithm, build_config, config_help, load_preset
from rlcourse.algos.ppo import PPO, PPOConfig, clipped_surrogate_loss, compute_gae

ALGORITHMS: dict[str, type[Algorithm]] = {"ppo": PPO}


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class for a CLI name (case-insensitive); clear error if unknown."""
    key = name.lower()
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[key]


__all__ = [
    "ALGORITHMS", "Algorithm", "PPO", "PPOConfig", "build_config", "clipped_surrogate_loss",
    "compute_gae", "config_help", "get_algorithm", "load_preset",
]
