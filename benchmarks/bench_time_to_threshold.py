"""Wall-clock time to reach a return threshold: rlcourse vs Stable-Baselines3.

For each task, both libraries train with the same number of envs, network sizes and main
hyperparameters (our YAML presets; SB3 configured to match them, starting from the RL
Baselines3 Zoo values for the env), alternating in one process. Every
``eval_every`` env steps the deterministic policy is evaluated on ``eval_episodes``
episodes; the clock (training time only, evaluation excluded) stops when the mean
return reaches the threshold. Median over seeds; target ours / SB3 <= 0.5.

    .venv/bin/python benchmarks/bench_time_to_threshold.py [--tasks ppo_cartpole,dqn_cartpole,sac_pendulum,ddpg_pendulum] [--seeds 0,1,2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import machine_line, median, record, without_log_folder  # noqa: E402


@dataclass
class Task:
    algo: str
    env_id: str
    threshold: float
    max_steps: int
    eval_every: int
    num_envs: int
    sb3_kwargs: dict[str, Any] = field(default_factory=dict)
    sb3_noise_std: float | None = None


TASKS: dict[str, Task] = {
    "ppo_cartpole": Task(
        "ppo", "CartPole-v1", 475.0, 200_000, 5_000, 8,
        dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
             learning_rate=1e-3, clip_range=0.2),
    ),
    "dqn_cartpole": Task(
        # 4 envs as in our preset; SB3 keeps the RL Zoo's tuned CartPole values, with train_freq
        # counted per env (64 x 4 envs = 256 transitions between bursts of 128 gradient steps).
        # Our preset uses the same values except that it anneals the step size linearly and
        # uses the double-DQN target.
        "dqn", "CartPole-v1", 475.0, 200_000, 5_000, 4,
        dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
             target_update_interval=10, train_freq=64, gradient_steps=128, exploration_fraction=0.16,
             exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])),
    ),
    # SAC / DDPG: SB3 gets the same network sizes and settings as our presets (64-64 layers,
    # step size 1e-3, 1,000 random steps, batch 256, one gradient step per env step).
    "sac_pendulum": Task(
        "sac", "Pendulum-v1", -200.0, 40_000, 2_000, 1,
        dict(learning_rate=1e-3, learning_starts=1000, batch_size=256, policy_kwargs=dict(net_arch=[64, 64])),
    ),
    "ddpg_pendulum": Task(
        "ddpg", "Pendulum-v1", -200.0, 40_000, 2_000, 1,
        dict(learning_rate=1e-3, gamma=0.98, learning_starts=1000, batch_size=256, gradient_steps=1, train_freq=1,
             policy_kwargs=dict(net_arch=[64, 64])),
        sb3_noise_std=0.1,
    ),
}


def eval_mean(policy_fn: Any, env_id: str, episodes: int, seed: int) -> float:
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy_fn(obs))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def time_ours(task: Task, seed: int, episodes: int) -> tuple[float, int, bool]:
    """Training time (evaluations excluded), env steps trained and whether the threshold was reached."""
    import torch

    import rlcourse
    from rlcourse.algos import get_algorithm
    from rlcourse.runner import Runner

    env = rlcourse.envs.make(task.env_id, num_envs=task.num_envs, seed=seed)
    agent = get_algorithm(task.algo)(env, seed=seed)
    policy = agent.inference_policy()
    state = {"next_eval": task.eval_every, "eval_time": 0.0, "solved_at": None}

    def act(obs: np.ndarray) -> Any:
        with torch.no_grad():
            a = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
        return int(a) if agent.spec.is_discrete else a.numpy()

    def callback(runner: Runner) -> bool:
        if agent.global_step < state["next_eval"]:
            return True
        state["next_eval"] += task.eval_every
        t0 = time.perf_counter()
        nonlocal policy
        policy = agent.inference_policy()
        solved = eval_mean(act, task.env_id, episodes, seed=10_000 + seed) >= task.threshold
        state["eval_time"] += time.perf_counter() - t0
        if solved:
            state["solved_at"] = agent.global_step
        return not solved

    t0 = time.perf_counter()
    Runner(agent, env, eval_episodes=0, progress=False, callback=callback).learn(task.max_steps)
    elapsed = time.perf_counter() - t0 - state["eval_time"]
    env.close()
    return elapsed, (state["solved_at"] or agent.global_step), state["solved_at"] is not None


def time_sb3(task: Task, seed: int, episodes: int) -> tuple[float, int, bool]:
    """Like :func:`time_ours`, for Stable-Baselines3."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    venv = make_vec_env(task.env_id, n_envs=task.num_envs, seed=seed)
    kwargs = dict(task.sb3_kwargs)
    if task.sb3_noise_std is not None:
        n = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), task.sb3_noise_std * np.ones(n))
    cls = {"ppo": sb3.PPO, "dqn": sb3.DQN, "sac": sb3.SAC, "ddpg": sb3.DDPG}[task.algo]
    model = without_log_folder(cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs))
    state = {"next_eval": task.eval_every, "eval_time": 0.0, "solved_at": None}

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps < state["next_eval"]:
                return True
            state["next_eval"] += task.eval_every
            t0 = time.perf_counter()
            act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
            solved = eval_mean(act, task.env_id, episodes, seed=10_000 + seed) >= task.threshold
            state["eval_time"] += time.perf_counter() - t0
            if solved:
                state["solved_at"] = self.num_timesteps
            return not solved

    t0 = time.perf_counter()
    model.learn(task.max_steps, callback=Stop())
    elapsed = time.perf_counter() - t0 - state["eval_time"]
    venv.close()
    return elapsed, (state["solved_at"] or model.num_timesteps), state["solved_at"] is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both libraries (same process)")
    parser.add_argument("--eval-every", type=int, default=None, help="override every task's evaluation interval (env steps)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per seed and library, in alternating order; a seed's time is their mean")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = []
    for name in args.tasks.split(","):
        task = TASKS[name]
        if args.eval_every is not None:
            task = dataclasses.replace(task, eval_every=args.eval_every)
        ours, theirs = [], []                        # time to threshold per seed (inf: not reached)
        steps_o, steps_s = [], []                    # env steps trained per seed
        cost_o, cost_s = [], []                      # training time per env step (ms) per seed
        for seed in seeds:
            # A seed's run is deterministic (same steps to threshold every time); only its
            # wall-clock time varies with the machine. Repeats alternate the order (ours, SB3,
            # SB3, ours, ...) so a drift in the machine's speed hits both alike; mean per seed.
            runs = {"ours": time_ours, "sb3": time_sb3}
            times: dict[str, list[float]] = {"ours": [], "sb3": []}
            steps: dict[str, int] = {}
            solved: dict[str, bool] = {}
            for r in range(args.repeats):
                for who in (("ours", "sb3") if r % 2 == 0 else ("sb3", "ours")):
                    t, steps[who], solved[who] = runs[who](task, seed, args.eval_episodes)
                    times[who].append(t)
            t_o, t_s = float(np.mean(times["ours"])), float(np.mean(times["sb3"]))
            s_o, s_s = steps["ours"], steps["sb3"]
            ours.append(t_o if solved["ours"] else math.inf)
            theirs.append(t_s if solved["sb3"] else math.inf)
            steps_o.append(s_o)
            steps_s.append(s_s)
            cost_o.append(1e3 * t_o / s_o)
            cost_s.append(1e3 * t_s / s_s)
            each = "" if args.repeats == 1 else f" (each: ours {[round(x, 1) for x in times['ours']]}, SB3 {[round(x, 1) for x in times['sb3']]})"
            print(f"{name} seed {seed}: rlcourse {ours[-1]:.1f}s ({s_o} steps), SB3 {theirs[-1]:.1f}s ({s_s} steps){each}", flush=True)
        m_o, m_s = median(ours), median(theirs)
        ratio = m_o / m_s if math.isfinite(m_s) else float("nan")
        # The steps to the threshold differ between libraries by chance as much as by design
        # (evaluations every eval_every steps; a seed's draw decides much), so the time per
        # env step is reported too: it compares the implementations' speed on their own.
        c_o, c_s = median(cost_o), median(cost_s)
        line = (f"{name} ({task.env_id}, return >= {task.threshold:g}): rlcourse median {m_o:.1f}s, "
                f"SB3 median {m_s:.1f}s, ratio {ratio:.2f} (target <= 0.5); per seed ours "
                f"{[round(x, 1) for x in ours]}, SB3 {[round(x, 1) for x in theirs]}; steps ours {steps_o}, "
                f"SB3 {steps_s}; training time per env step (median) ours {c_o:.2f} ms, SB3 {c_s:.2f} ms, "
                f"ratio {c_o / c_s:.2f}")
        print(line, flush=True)
        lines.append(f"- {line}")
    if not args.no_record:
        # Keep the lines of tasks not run this time (each line says when and where it was measured).
        repeats = "" if args.repeats == 1 else f", {args.repeats} alternating runs per seed"
        stamp = f" [{machine_line()}; seeds {seeds}, eval on {args.eval_episodes} episodes, threads {args.threads}{repeats}]"
        lines = [line + stamp for line in lines]
        run = {line.split(" (")[0] for line in lines}
        kept = [line for line in _recorded_lines() if line.split(" (")[0] not in run]
        record(
            "Time to threshold",
            "Evaluation every N steps; evaluation time excluded; median over seeds.\n\n" + "\n".join(kept + lines)
            + "\n\n- command: `.venv/bin/python benchmarks/bench_time_to_threshold.py`",
        )


def _recorded_lines() -> list[str]:
    """The per-task lines already in the RESULTS.md section."""
    from common import RESULTS

    if not RESULTS.exists():
        return []
    text = RESULTS.read_text()
    start = text.find("## Time to threshold\n")
    if start < 0:
        return []
    end = text.find("\n## ", start + 1)
    block = text[start : end if end > 0 else len(text)]
    return [line for line in block.splitlines() if re.match(r"- [a-z0-9]+_[a-z0-9]+ \(", line)]


if __name__ == "__main__":
    main()
