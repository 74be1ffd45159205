"""Sample storage: on-policy rollouts (PPO) and the replay buffer (DQN, DDPG, SAC)."""

from rlcourse.storage.replay import ReplayBatch, ReplayBuffer
from rlcourse.storage.rollout import RolloutStorage

__all__ = ["ReplayBatch", "ReplayBuffer", "RolloutStorage"]
