"""Networks: MLPs, the PPO actor-critic, the observation normalizer and the exportable policy."""

from rlcourse.models.mlp import ActorCritic, mlp
from rlcourse.models.normalizer import EmpiricalNormalization
from rlcourse.models.policy import InferencePolicy

__all__ = ["ActorCritic", "EmpiricalNormalization", "InferencePolicy", "mlp"]
