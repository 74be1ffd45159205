"""End-to-end PPO training throughput (env steps per second, updates included): rlcourse vs SB3.

Same task (gymnasium MuJoCo Ant-v5), 8 envs, 2048-step rollouts, 10 epochs of 64-sample
minibatches, 64-64 tanh actor and critic, no observation normalization, same torch
thread count. The two libraries alternate in one process; the median of the repeats is
reported. Target: ours / SB3 >= 2.

    .venv/bin/python benchmarks/bench_ppo_throughput.py [--steps 8192] [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compare_throughput, timed, without_log_folder  # noqa: E402

ENV_ID = "Ant-v5"
NUM_ENVS = 8
N_STEPS = 256  # per env -> 2048 per rollout
BATCH = 64
EPOCHS = 10


def run_ours(steps: int, seed: int) -> float:
    import rlcourse
    from rlcourse.runner import Runner

    env = rlcourse.envs.make(ENV_ID, num_envs=NUM_ENVS, seed=seed)
    agent = rlcourse.PPO(
        env, seed=seed, preset=None,
        num_steps_per_env=N_STEPS, num_learning_epochs=EPOCHS, num_mini_batches=N_STEPS * NUM_ENVS // BATCH,
        learning_rate=3e-4, schedule="constant", gamma=0.99, lam=0.95, clip_param=0.2,
        value_loss_coef=0.5, entropy_coef=0.0, max_grad_norm=0.5, normalize_observations=False,
        actor_hidden=(64, 64), critic_hidden=(64, 64), activation="tanh",
    )
    dt, _ = timed(lambda: Runner(agent, env, eval_episodes=0, progress=False).learn(steps))
    env.close()
    return agent.global_step / dt


def run_sb3(steps: int, seed: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed)
    model = PPO(
        "MlpPolicy", venv, n_steps=N_STEPS, batch_size=BATCH, n_epochs=EPOCHS, learning_rate=3e-4,
        gamma=0.99, gae_lambda=0.95, clip_range=0.2, vf_coef=0.5, ent_coef=0.0, max_grad_norm=0.5,
        seed=seed, device="cpu", verbose=0,
    )
    without_log_folder(model)
    dt, _ = timed(lambda: model.learn(steps))
    venv.close()
    return model.num_timesteps / dt


def main() -> None:
    compare_throughput(
        run_ours, run_sb3, doc=__doc__, default_steps=3 * N_STEPS * NUM_ENVS, label=lambda steps, repeats: f"PPO {ENV_ID}, {NUM_ENVS} envs, {steps} steps x {repeats}",
        target=" (target >= 2.0)", section="PPO training throughput (Ant-v5)", script="bench_ppo_throughput.py",
    )


if __name__ == "__main__":
    main()
