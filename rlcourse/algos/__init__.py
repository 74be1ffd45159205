"""Reference implementations. ``ALGORITHMS`` maps CLI names to classes."""

from rlcourse.algos.base import Algorithm, build_config, config_help, load_preset
from rlcourse.algos.common import polyak_update
from rlcourse.algos.ddpg import DDPG, DDPGConfig
from rlcourse.algos.dqn import DQN, DQNConfig
from rlcourse.algos.ppo import PPO, PPOConfig, clipped_surrogate_loss, compute_gae
from rlcourse.algos.sac import SAC, SACConfig

ALGORITHMS: dict[str, type[Algorithm]] = {"ppo": PPO, "dqn": DQN, "ddpg": DDPG, "sac": SAC}


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class for a CLI name (case-insensitive); clear error if unknown."""
    key = name.lower()
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[key]


__all__ = [
    "ALGORITHMS", "Algorithm", "DDPG", "DDPGConfig", "DQN", "DQNConfig", "PPO", "PPOConfig", "SAC",
    "SACConfig", "build_config", "clipped_surrogate_loss", "compute_gae", "config_help", "get_algorithm",
    "load_preset", "polyak_update",
]
