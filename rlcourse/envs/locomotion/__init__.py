"""Isaac-style locomotion tasks on an embedded MuJoCo backend (CPU, real physics).

``rlcourse.envs.make("Ant", num_envs=64, seed=0, rewards=..., randomization=...)``
returns a :class:`~rlcourse.envs.VecEnv` with Isaac Lab step semantics. The pieces:

* :mod:`.backend`: ``num_envs`` MuJoCo models stepped together with ``mujoco.rollout``;
* :mod:`.env`: the ``DirectRLEnv``-style step loop shared by the tasks;
* :mod:`.rewards`: reward terms as data (``RewardTerm(func, weight, params)``);
* :mod:`.randomization`: domain randomization configs (IsaacGymEnvs / Isaac Lab style);
* :mod:`.ant`: the IsaacGymEnvs Ant task, and ``HumanoidEnv`` (the same task logic on a humanoid);
* :mod:`.quadruped`: a 12-DoF quadruped tracking velocity commands (IGE Anymal style).

``env.render(env_id, width, height)`` returns a frame; :func:`rlcourse.video.record_video`
writes a policy's run to GIF/MP4 and :func:`rlcourse.video.show_video` shows it in a notebook.
"""

import os
import platform
import sys

# Offscreen rendering: MuJoCo picks its OpenGL backend when it is first imported. On a
# headless Linux machine (no $DISPLAY) the default (GLFW) cannot open a window, so
# choose EGL unless the user already chose. Has no effect if mujoco is already imported.
if platform.system() == "Linux" and not os.environ.get("DISPLAY") and "mujoco" not in sys.modules:
    os.environ.setdefault("MUJOCO_GL", "egl")

from rlcourse.envs.locomotion.ant import AntEnv, HumanoidEnv  # noqa: E402
from rlcourse.envs.locomotion.env import MujocoLocomotionEnv  # noqa: E402
from rlcourse.envs.locomotion.quadruped import QuadrupedEnv  # noqa: E402
from rlcourse.envs.locomotion.randomization import DomainRandomization, parse_config  # noqa: E402
from rlcourse.envs.locomotion.rewards import RewardTerm  # noqa: E402

__all__ = ["AntEnv", "HumanoidEnv", "QuadrupedEnv", "DomainRandomization", "MujocoLocomotionEnv", "RewardTerm", "parse_config"]
