"""rlcourse: deep reinforcement learning for robot control, a hands-on course package.

Quick tour::

    import rlcourse
    env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=0)
    agent = rlcourse.PPO(env, seed=0)
    agent.learn(100_000)
    print(rlcourse.evaluate(agent, rlcourse.envs.make("CartPole-v1", num_envs=4, seed=1), episodes=10))
"""

from rlcourse import envs
from rlcourse.algos import ALGORITHMS, DDPG, DQN, PPO, SAC
from rlcourse.evaluation import evaluate
from rlcourse.robustness import evaluate_robustness
from rlcourse.seeding import seed_everything

__version__ = "0.1.0"

__all__ = ["ALGORITHMS", "DDPG", "DQN", "PPO", "SAC", "envs", "evaluate", "evaluate_robustness", "seed_everything",
           "__version__"]
