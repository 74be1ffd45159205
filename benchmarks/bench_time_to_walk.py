"""Time to walk: PPO on our MuJoCo Ant (``make train``'s recipe) vs SB3 PPO on gymnasium's Ant-v5.

Both sides train for the same training wall-clock (``--budget`` seconds, default 60). Every
``--eval-interval`` seconds of training (SB3: ``--sb3-eval-interval``) the deterministic policy is evaluated on
``--eval-episodes`` full episodes (1000 control steps of 0.05 s, i.e. 50 s of simulated time,
unless the robot falls first): its forward speed (m/s along +x, each episode's x distance over
its own duration, averaged over episodes) and its falls. **Evaluation time is excluded from the
training clock on both sides.** The result per seed is the training time at the first evaluation
that walks >= 1.0 m/s, so it is resolved to one evaluation interval.

* ours: ``rlcourse train ppo --env Ant``'s recipe, i.e. the ``Ant`` entry of
  ``rlcourse/presets/ppo.yaml`` (envs, hyperparameters) and the CLI's default of one torch
  thread; the env steps on ``mujoco.rollout`` with one thread per core. A fall is the torso
  below 0.31 m (the task's termination). Ours keeps training past the budget, up to
  ``--max-seconds``, when it has not walked yet, so the time to walk is measured either way.
* SB3: PPO with the RL Baselines3 Zoo's MuJoCo setting (SB3's defaults, which are tuned for
  MuJoCo: 1 env, 2048-step rollouts, 10 epochs of 64-sample minibatches, 64-64 tanh
  networks, step size 3e-4, plus ``VecNormalize``), the same torch thread count. A fall is an
  Ant-v5 termination (torso height outside [0.2, 1.0] m).

The two trainings are *interleaved* in one process: each runs until its next evaluation and then
hands over to the other (two threads, only one ever running), so load changes on a shared
machine hit both alike. The Quadruped part (``--quadruped-seeds``) trains with the
``Quadruped`` preset (``rlcourse train ppo --env Quadruped``'s recipe) on the task's random
velocity commands and measures the training time until the
deterministic policy, commanded (1 m/s, 0, 0), moves forward at >= 0.8 m/s (within 20 % of the
command) with no falls (a fall is the base touching the ground).

    .venv/bin/python benchmarks/bench_time_to_walk.py [--seeds 0,1,2,3,4] [--budget 60] [--quadruped-seeds 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine_line, record, without_log_folder  # noqa: E402

SECTION = "Time to walk: PPO Ant, ours vs SB3 on Ant-v5 (issue 19)"
WALK_SPEED = 1.0          # m/s, issue 19
QUAD_COMMAND = 1.0        # m/s forward command for the Quadruped
QUAD_TRACK_SPEED = 0.8    # m/s: within 20 % of the command
EVAL_SEED = 12345         # eval envs' seed (fixed, so every evaluation sees the same starts)


# ----------------------------------------------------------------------------- taking turns
class Turns:
    """Two trainings in one process, one running at a time: ``pause(name)`` hands over to the
    other side (if it has not finished) and blocks until it hands back."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.turn = names[0]
        self.active = set(names)
        self.cv = threading.Condition()

    def _other(self, name: str) -> str:
        return next(n for n in self.names if n != name)

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == name)

    def pause(self, name: str) -> None:
        with self.cv:
            other = self._other(name)
            if other in self.active:
                self.turn = other
                self.cv.notify_all()
                self.cv.wait_for(lambda: self.turn == name)

    def finish(self, name: str) -> None:
        with self.cv:
            self.active.discard(name)
            self.turn = self._other(name)
            self.cv.notify_all()


class TrainingClock:
    """Seconds of training, with the evaluations (and the other side's turns) left out."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None
        return self.seconds


# ----------------------------------------------------------------------------- evaluation
def eval_ours(policy: Callable[[torch.Tensor], torch.Tensor], env: Any) -> dict[str, float]:
    """Forward speed (m/s along +x, mean over episodes) and falls of ``policy`` over one full
    episode per env of ``env`` (rlcourse Ant or Quadruped), reset with :data:`EVAL_SEED`."""
    n = env.num_envs
    speeds = np.full(n, np.nan)
    falls = 0
    with torch.inference_mode():     # the env's tensors are created (and updated) in inference mode
        obs, _ = env.reset(seed=EVAL_SEED)
        while np.isnan(speeds).any():
            obs, _, _, _, extras = env.step(policy(obs))
            ep = extras.get("episode")
            if ep is None:
                continue
            for i, dx, length in zip(ep["env_ids"].tolist(), ep["x_distance"].tolist(), ep["length"].tolist()):
                if np.isnan(speeds[i]):
                    speeds[i] = dx / (length * env.step_dt)
                    falls += int(length < env.max_episode_length)
    return {"speed": float(speeds.mean()), "falls": falls, "episodes": n}


def eval_sb3(model: Any, vecnorm: Any, episodes: int) -> dict[str, float]:
    """The same measure for SB3 on ``episodes`` gymnasium Ant-v5 envs (observations normalized
    with the training ``VecNormalize``'s frozen statistics)."""
    import gymnasium as gym

    envs = [gym.make("Ant-v5") for _ in range(episodes)]
    obs = np.stack([e.reset(seed=EVAL_SEED + i)[0] for i, e in enumerate(envs)])
    x0 = np.array([e.unwrapped.data.qpos[0] for e in envs])
    dt = envs[0].unwrapped.dt
    speeds = np.full(episodes, np.nan)
    length = np.zeros(episodes, dtype=int)
    falls = 0
    while np.isnan(speeds).any():
        actions, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
        for i, e in enumerate(envs):
            if not np.isnan(speeds[i]):
                continue
            obs[i], _, terminated, truncated, info = e.step(actions[i])
            length[i] += 1
            if terminated or truncated:
                speeds[i] = (info["x_position"] - x0[i]) / (length[i] * dt)
                falls += int(terminated)
    for e in envs:
        e.close()
    return {"speed": float(speeds.mean()), "falls": falls, "episodes": episodes}


# ----------------------------------------------------------------------------- the two sides
# Hyperparameter overrides from --set (as `rlcourse train --set`): to try another recipe against the preset.
OVERRIDES: dict[str, Any] = {}


def preset_recipe(env_id: str = "Ant") -> dict[str, Any]:
    """``rlcourse train ppo --env ENV_ID``'s settings: the preset's envs and hyperparameters (the
    Ant's plus ``--set``)."""
    from rlcourse.algos import load_preset

    recipe = load_preset("ppo", env_id)
    if env_id == "Ant":
        recipe["hyperparameters"].update(OVERRIDES)
    return recipe


def train_ours(env_id: str, seed: int, turns: Turns | None, name: str, args: argparse.Namespace,
               until: Callable[[dict[str, float]], bool], max_seconds: float, budget: float,
               env_kwargs: dict[str, Any] | None = None, eval_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train PPO with ``env_id``'s preset recipe; evaluate every ``eval_interval``
    training seconds; stop at ``max_seconds``, or once past ``budget`` when ``until(eval)`` held."""
    from rlcourse import PPO, envs
    from rlcourse.runner import Runner

    recipe = preset_recipe(env_id)
    env = envs.make(env_id, num_envs=recipe["num_envs"], seed=seed, **(env_kwargs or {}))
    eval_env = envs.make(env_id, num_envs=args.eval_episodes, seed=EVAL_SEED, **(eval_kwargs or env_kwargs or {}))
    agent = PPO(env, seed=seed, preset=None, **recipe["hyperparameters"])
    clock, evals = TrainingClock(), []
    first: dict[str, Any] = {}
    next_eval = [args.eval_interval]

    def callback(runner: Runner) -> bool:
        t = clock.stop()
        if t < next_eval[0] and t < max_seconds:
            clock.start()
            return True
        next_eval[0] += args.eval_interval
        result = eval_ours(agent.inference_policy(), eval_env)
        result.update(t=round(t, 2), steps=agent.global_step)
        evals.append(result)
        print(f"  {name} seed {seed}: {t:6.1f} s, {agent.global_step:7d} steps, {result['speed']:5.2f} m/s, "
              f"falls {result['falls']}/{result['episodes']}", flush=True)
        if until(result) and not first:
            first.update(result)
        if t >= max_seconds or (first and t >= budget):
            return False
        if turns is not None:
            turns.pause(name)
        clock.start()
        return True

    if turns is not None:
        turns.wait(name)
    try:
        clock.start()
        Runner(agent, env, eval_episodes=0, progress=False, callback=callback).learn(int(recipe["total_steps"]))
    finally:
        env.close()
        eval_env.close()
        if turns is not None:
            turns.finish(name)
    return {"evals": evals, "first": first or None, "steps_per_s": agent.global_step / clock.seconds}


def train_sb3(seed: int, turns: Turns | None, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """SB3 PPO (RL Zoo MuJoCo setting) on Ant-v5 for ``budget`` training seconds, evaluated like ours."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Ant-v5", n_envs=1, seed=seed))
    model = without_log_folder(PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0))
    clock, evals = TrainingClock(), []
    first: dict[str, Any] = {}

    class EveryInterval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = args.sb3_eval_interval

        def _on_step(self) -> bool:
            t = clock.seconds + time.perf_counter() - clock._t0   # type: ignore[operator]
            if t < self.next_eval:
                return True
            t = clock.stop()
            self.next_eval += args.sb3_eval_interval
            result = eval_sb3(model, venv, args.eval_episodes)
            result.update(t=round(t, 2), steps=model.num_timesteps)
            evals.append(result)
            print(f"  {name} seed {seed}: {t:6.1f} s, {model.num_timesteps:7d} steps, {result['speed']:5.2f} m/s, "
                  f"falls {result['falls']}/{result['episodes']}", flush=True)
            if result["speed"] >= WALK_SPEED and not first:
                first.update(result)
            if t >= args.budget:
                return False
            if turns is not None:
                turns.pause(name)
            clock.start()
            return True

    if turns is not None:
        turns.wait(name)
    try:
        clock.start()
        model.learn(10**9, callback=EveryInterval())
    finally:
        venv.close()
        if turns is not None:
            turns.finish(name)
    return {"evals": evals, "first": first or None, "steps_per_s": model.num_timesteps / clock.seconds}


def run_pair(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Ours and SB3 on one seed, taking turns in one process."""
    turns = Turns(["ours", "sb3"] if seed % 2 == 0 else ["sb3", "ours"])   # who starts alternates
    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def side(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            out[name] = fn()
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)
            turns.finish(name)

    walks = lambda r: r["speed"] >= WALK_SPEED   # noqa: E731
    threads = [
        threading.Thread(target=side, args=("ours", lambda: train_ours(
            "Ant", seed, turns, "ours", args, walks, args.max_seconds, args.budget))),
        threading.Thread(target=side, args=("sb3", lambda: train_sb3(seed, turns, "sb3", args))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def at_budget(evals: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """The first evaluation at or after ``budget`` training seconds (else the last one)."""
    return next((e for e in evals if e["t"] >= budget), evals[-1])


def fmt_time(first: dict[str, Any] | None, limit: float) -> str:
    return f"{first['t']:.1f} s ({first['steps'] // 1000}k steps)" if first else f"> {limit:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="Ant seeds, comma-separated ('' for none)")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds given to both sides")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="ours keeps training up to this until it walks")
    parser.add_argument("--eval-interval", type=float, default=5.0, help="training seconds between evaluations")
    parser.add_argument("--sb3-eval-interval", type=float, default=10.0,
                        help="training seconds between SB3's evaluations (its evaluation is slower: one env at a time)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CLI's default is 1)")
    parser.add_argument("--quadruped-seeds", default="0", help="Quadruped seeds ('' for none)")
    parser.add_argument("--quadruped-seconds", type=float, default=180.0, help="Quadruped training limit")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one of the preset's PPO hyperparameters for ours (repeatable)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import yaml

    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        OVERRIDES[name.strip()] = yaml.safe_load(value)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    quad_seeds = [int(s) for s in args.quadruped_seeds.split(",") if s.strip()]
    recipe = preset_recipe()
    loads = [os.getloadavg()[0]]

    rows = []
    for seed in seeds:
        print(f"Ant seed {seed}", flush=True)
        rows.append((seed, run_pair(seed, args)))
        loads.append(os.getloadavg()[0])
    quad_rows = []
    for seed in quad_seeds:
        print(f"Quadruped seed {seed}", flush=True)
        command = {"lin_vel_x": (QUAD_COMMAND, QUAD_COMMAND), "lin_vel_y": (0.0, 0.0), "ang_vel_yaw": (0.0, 0.0)}
        tracks = lambda r: r["speed"] >= QUAD_TRACK_SPEED and r["falls"] == 0   # noqa: E731
        quad_rows.append((seed, train_ours("Quadruped", seed, None, "quadruped", args, tracks, args.quadruped_seconds,
                                           0.0, eval_kwargs={"command_ranges": command})))
        loads.append(os.getloadavg()[0])

    hp = recipe["hyperparameters"]
    lines = [
        f"- machine: {machine_line()}; 1-minute load average {min(loads):.1f}-{max(loads):.1f} during the run "
        "(a shared machine: other sessions were running)",
        f"- ours: PPO, `rlcourse train ppo --env Ant`'s recipe{' with ' + str(OVERRIDES) if OVERRIDES else ''} "
        f"({recipe['num_envs']} envs x "
        f"{hp.get('num_steps_per_env')} steps, {hp.get('num_learning_epochs')} epochs x {hp.get('num_mini_batches')} "
        f"minibatches, {hp.get('schedule')} step size, {hp.get('actor_hidden')} {hp.get('activation')}); "
        "SB3: PPO with the RL Zoo MuJoCo setting (1 env, n_steps 2048, 10 epochs, batch 64, 64-64 tanh, VecNormalize) "
        f"on Ant-v5; torch threads {args.threads} for both, interleaved in one process",
        f"- deterministic policy evaluated every {args.eval_interval:g} s (SB3: {args.sb3_eval_interval:g} s) of "
        f"training on {args.eval_episodes} full episodes (1000 steps = 50 s, or until a fall); "
        "**evaluation time excluded** from both training clocks",
    ]
    if rows:
        lines += ["", f"| seed | ours: first walks >= {WALK_SPEED:.1f} m/s | ours at {args.budget:.0f} s: m/s, falls | "
                  f"SB3 at {args.budget:.0f} s: m/s, falls | SB3 best m/s | env steps/s ours, SB3 |",
                  "|---:|---|---|---|---:|---|"]
        times = []
        for seed, r in rows:
            o, s = r["ours"], r["sb3"]
            ob, sb = at_budget(o["evals"], args.budget), at_budget(s["evals"], args.budget)
            times.append(o["first"]["t"] if o["first"] else float("inf"))
            lines.append(
                f"| {seed} | {fmt_time(o['first'], args.max_seconds)} | {ob['speed']:.2f}, {ob['falls']}/{ob['episodes']} "
                f"({ob['steps'] // 1000}k steps) | {sb['speed']:.2f}, {sb['falls']}/{sb['episodes']} "
                f"({sb['steps'] // 1000}k steps) | {max(e['speed'] for e in s['evals']):.2f} | "
                f"{o['steps_per_s']:.0f}, {s['steps_per_s']:.0f} |")
        med = statistics.median(times)
        verdict = "met" if med <= args.budget else "**not met**"
        lines += ["", f"- median time for ours to walk >= {WALK_SPEED:.1f} m/s over seeds {seeds}: "
                  f"{'> %.0f' % args.max_seconds if med == float('inf') else '%.1f' % med} s "
                  f"(target <= {args.budget:.0f} s: {verdict}); SB3 reached {WALK_SPEED:.1f} m/s on "
                  f"{sum(r['sb3']['first'] is not None for _, r in rows)} of {len(rows)} seeds within {args.budget:.0f} s"]
    quad = preset_recipe("Quadruped")
    for seed, q in quad_rows:
        best = max(q["evals"], key=lambda e: e["speed"])
        lines.append(
            f"- Quadruped seed {seed} (its own preset: {quad['num_envs']} envs x "
            f"{quad['hyperparameters'].get('num_steps_per_env')} steps, random commands; evaluated at the command "
            "(1 m/s, 0, 0)): "
            f"tracks >= {QUAD_TRACK_SPEED} m/s with no falls after {fmt_time(q['first'], args.quadruped_seconds)}; "
            f"best evaluation {best['speed']:.2f} m/s at {best['t']:.0f} s, falls {best['falls']}/{best['episodes']}; "
            f"{q['steps_per_s']:.0f} env steps/s")
    lines.append(f"- command: `.venv/bin/python benchmarks/bench_time_to_walk.py --seeds {args.seeds} "
                 f"--budget {args.budget:g} --max-seconds {args.max_seconds:g} --quadruped-seeds '{args.quadruped_seeds}' "
                 f"--quadruped-seconds {args.quadruped_seconds:g}"
                 + "".join(f" --set {item}" for item in args.set) + "`")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record(SECTION, body)


if __name__ == "__main__":
    main()
