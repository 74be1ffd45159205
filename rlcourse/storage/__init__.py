"""Sample storage: on-policy rollouts (PPO)."""

from rlcourse.storage.rollout import RolloutStorage

__all__ = ["RolloutStorage"]
