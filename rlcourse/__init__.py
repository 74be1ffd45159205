"""rlcourse: deep reinforcement learning for robot control, a hands-on course package.

Quick tour::

    import rlcourse
    env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=0)
    agent = rlcourse.PPO(env, seed=0)
    agent.learn(100_000)
    print(rlcourse.evaluate(agent, rlcourse.envs.make("CartPole-v1", num_envs=4, seed=1), episodes=10))

The names below are imported on first use (PEP 562): ``import rlcourse.grading.runner`` and the
other grading processes that only handle notebooks then start without loading torch and MuJoCo
(about a second per process, several processes per graded submission).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "envs": "rlcourse.envs",
    "ALGORITHMS": "rlcourse.algos", "DDPG": "rlcourse.algos", "DQN": "rlcourse.algos",
    "PPO": "rlcourse.algos", "SAC": "rlcourse.algos",
    "evaluate": "rlcourse.evaluation",
    "evaluate_robustness": "rlcourse.robustness",
    "seed_everything": "rlcourse.seeding",
}

__all__ = [*_LAZY, "__version__"]

if TYPE_CHECKING:  # what static tools and IDEs see
    from rlcourse import envs
    from rlcourse.algos import ALGORITHMS, DDPG, DQN, PPO, SAC
    from rlcourse.evaluation import evaluate
    from rlcourse.robustness import evaluate_robustness
    from rlcourse.seeding import seed_everything


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rlcourse' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"rlcourse.{name}" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
