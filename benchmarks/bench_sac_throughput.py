"""End-to-end SAC training throughput (env steps per second, updates included): rlcourse vs SB3.

Same task (gymnasium Pendulum-v1), 1 env, one gradient step of 256 transitions per env step
after 1,000 random steps, 256-256 ReLU actor and twin critics, automatic entropy
temperature, learning rate 3e-4 everywhere, same torch thread count. The two libraries
alternate in one process; the median of the repeats is reported. The issue states no
target ratio for SAC throughput (its >= 2x target is for PPO); we report the measurement.

    .venv/bin/python benchmarks/bench_sac_throughput.py [--steps 6000] [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compare_throughput, timed, without_log_folder  # noqa: E402

ENV_ID = "Pendulum-v1"
LEARNING_STARTS = 1_000
BATCH = 256
HIDDEN = (256, 256)
LR = 3e-4


def run_ours(steps: int, seed: int) -> float:
    import rlcourse
    from rlcourse.runner import Runner

    env = rlcourse.envs.make(ENV_ID, num_envs=1, seed=seed)
    agent = rlcourse.SAC(
        env, seed=seed, preset=None,
        num_steps_per_env=1, gradient_steps=1, buffer_size=1_000_000, batch_size=BATCH,
        learning_starts=LEARNING_STARTS, gamma=0.99, tau=0.005,
        actor_learning_rate=LR, critic_learning_rate=LR, alpha_learning_rate=LR,
        autotune_alpha=True, init_alpha=1.0, actor_hidden=HIDDEN, critic_hidden=HIDDEN, activation="relu",
        checkpoint_replay_buffer=False,
    )
    dt, _ = timed(lambda: Runner(agent, env, eval_episodes=0, progress=False).learn(steps))
    env.close()
    return agent.global_step / dt


def run_sb3(steps: int, seed: int) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ENV_ID, n_envs=1, seed=seed)
    model = SAC(
        "MlpPolicy", venv, learning_rate=LR, buffer_size=1_000_000, learning_starts=LEARNING_STARTS,
        batch_size=BATCH, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto_1.0",
        policy_kwargs=dict(net_arch=list(HIDDEN)), seed=seed, device="cpu", verbose=0,
    )
    without_log_folder(model)
    dt, _ = timed(lambda: model.learn(steps))
    venv.close()
    return model.num_timesteps / dt


def main() -> None:
    compare_throughput(
        run_ours, run_sb3, doc=__doc__, default_steps=6_000, label=lambda steps, repeats: f"SAC {ENV_ID}, 1 env, {steps} steps ({LEARNING_STARTS} random) x {repeats}",
        target="", section="SAC training throughput (Pendulum-v1)", script="bench_sac_throughput.py",
    )


if __name__ == "__main__":
    main()
