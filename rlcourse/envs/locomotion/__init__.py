"""Isaac-style locomotion tasks on an embedded MuJoCo backend (CPU, real physics).

``rlcourse.envs.make("Ant", num_envs=64, seed=0, rewards=..., randomization=...)``
returns a :class:`~rlcourse.envs.VecEnv` with Isaac Lab step semantics. The pieces:

* :mod:`.backend`: ``num_envs`` MuJoCo models stepped together with ``mujoco.rollout``;
* :mod:`.env`: the ``DirectRLEnv``-style step loop shared by the tasks;
* :mod:`.rewards`: reward terms as data (``RewardTerm(func, weight, params)``);
* :mod:`.randomization`: domain randomization configs (IsaacGymEnvs / Isaac Lab style);
* :mod:`.ant`: the IsaacGymEnvs Ant task.
"""

from rlcourse.envs.locomotion.ant import AntEnv
from rlcourse.envs.locomotion.env import MujocoLocomotionEnv
from rlcourse.envs.locomotion.randomization import DomainRandomization, parse_config
from rlcourse.envs.locomotion.rewards import RewardTerm

__all__ = ["AntEnv", "DomainRandomization", "MujocoLocomotionEnv", "RewardTerm", "parse_config"]
