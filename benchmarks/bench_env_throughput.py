"""Env throughput: our MuJoCo-backed ``Ant`` vs raw ``mujoco.rollout`` vs gymnasium's ``SyncVectorEnv``.

One process, the same ``ant.xml``, the same number of envs (by default the PPO ``Ant``
preset's, i.e. what ``make train`` steps) and rollout threads:

* ``ours``: ``rlcourse.envs.make("Ant", num_envs=N)`` stepped with random actions
  (observations, 8 reward terms, terminations and same-step resets included);
* ``raw rollout``: only the physics: one ``Rollout.rollout`` call per control step on
  the same N per-env models (``nstep = decimation``), feeding the last state back.
  This is the upper bound for any env built on ``mujoco.rollout``;
* ``gymnasium``: ``gymnasium.vector.SyncVectorEnv`` of N ``Ant-v5`` (RK4, frame_skip 5).

Our default physics uses ``implicitfast`` while Ant-v5 uses RK4 (4 model evaluations
per step), so ours and raw also run with ``integrator="rk4"``: that row compares
environments with identical physics.

The machine may be shared, so the three are *interleaved*: every round times a chunk
of ``--chunk`` steps of each contender back to back, and throughput is total steps over
total time per contender. Load changes then hit all of them alike.

A last table splits our step time into the time spent inside ``rollout`` (physics) and
everything else (Python/torch overhead: actions, kinematics, rewards, observations, resets).

Targets: ours >= 0.95x raw rollout (issue 19, at the preset's env count), ours >= 1.5x gymnasium.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine_line, record  # noqa: E402

SECTION = "Env throughput: Ant on the MuJoCo rollout backend"


def ours(num_envs: int, integrator: str) -> Callable[[int], None]:
    import rlcourse

    env = rlcourse.envs.make("Ant", num_envs=num_envs, seed=0, integrator=integrator)
    env.reset()
    g = torch.Generator().manual_seed(0)
    # Time spent inside mujoco.rollout, to split our step time into physics and overhead.
    # Also the main thread's CPU time outside rollout: on a shared machine it is the steadier
    # measure of our overhead (wall time also counts the moments other processes held the core).
    pool, physics, cpu = env.sim._pool, [0.0], [0.0, 0.0]   # cpu: [whole steps, inside rollout]
    rollout_call = pool.rollout

    def timed_rollout(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return rollout_call(*args, **kwargs)
        finally:
            physics[0] += time.perf_counter() - t0
            cpu[1] += time.thread_time() - c0

    pool.rollout = timed_rollout

    def run(steps: int) -> None:
        c0 = time.thread_time()
        for _ in range(steps):
            env.step(torch.rand(num_envs, 8, generator=g) * 2 - 1)
        cpu[0] += time.thread_time() - c0

    run.physics_s = physics  # type: ignore[attr-defined]
    run.cpu_s = cpu  # type: ignore[attr-defined]
    return run


def raw_rollout(num_envs: int, integrator: str) -> Callable[[int], None]:
    import mujoco
    from mujoco import rollout

    from rlcourse.envs.locomotion.backend import gymnasium_asset, load_model

    model = load_model(gymnasium_asset("ant.xml"), integrator=integrator, timestep=0.01)
    models = [copy.copy(model) for _ in range(num_envs)]
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    s0 = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, mujoco.MjData(model), s0, spec)
    state = np.tile(s0, (num_envs, 1))
    decimation = 5
    out = np.empty((num_envs, decimation, s0.size))
    sens = np.empty((num_envs, decimation, model.nsensordata))
    rng = np.random.default_rng(0)
    pool = rollout.Rollout(nthread=nthread)

    def run(steps: int) -> None:
        for _ in range(steps):
            ctrl = np.repeat(rng.uniform(-1, 1, (num_envs, 1, model.nu)), decimation, axis=1)
            pool.rollout(models, datas, state, ctrl, nstep=decimation, state=out, sensordata=sens, skip_checks=True)
            state[:] = out[:, -1]

    return run


def gymnasium_sync(num_envs: int) -> Callable[[int], None]:
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Ant-v5") for _ in range(num_envs)])
    envs.reset(seed=0)
    envs.action_space.seed(0)

    def run(steps: int) -> None:
        for _ in range(steps):
            envs.step(envs.action_space.sample())

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=None,
                        help="envs (default: the PPO Ant preset's, what `make train` steps)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--chunk", type=int, default=20, help="control steps per contender per round")
    parser.add_argument("--no-record", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()
    if args.num_envs is None:
        from rlcourse.algos import load_preset

        args.num_envs = int(load_preset("ppo", "Ant")["num_envs"])
    n = args.num_envs

    contenders = {
        "ours (implicitfast)": ours(n, "implicitfast"),
        "raw rollout (implicitfast)": raw_rollout(n, "implicitfast"),
        "ours (rk4)": ours(n, "rk4"),
        "raw rollout (rk4)": raw_rollout(n, "rk4"),
        "gymnasium SyncVectorEnv Ant-v5 (rk4)": gymnasium_sync(n),
    }
    for run in contenders.values():       # warm-up: allocations, first-touch, thread pools
        run(5)
    for name, run in contenders.items():
        if hasattr(run, "physics_s"):
            run.physics_s[0] = 0.0
            run.cpu_s[:] = [0.0, 0.0]
    load_start = os.getloadavg()[0]
    elapsed = {k: 0.0 for k in contenders}
    steps = {k: 0 for k in contenders}
    for r in range(args.rounds):
        for name, run in contenders.items():
            chunk = max(args.chunk // 4, 1) if name.startswith("gymnasium") else args.chunk
            t0 = time.perf_counter()
            run(chunk)
            elapsed[name] += time.perf_counter() - t0
            steps[name] += chunk
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    sps = {k: n * steps[k] / elapsed[k] for k in contenders}
    gym_key = "gymnasium SyncVectorEnv Ant-v5 (rk4)"
    ratios = [
        ("ours / raw rollout (implicitfast)", sps["ours (implicitfast)"] / sps["raw rollout (implicitfast)"], ">= 0.95"),
        ("ours / raw rollout (rk4)", sps["ours (rk4)"] / sps["raw rollout (rk4)"], ">= 0.95"),
        ("ours (rk4) / gymnasium, same physics", sps["ours (rk4)"] / sps[gym_key], ">= 1.5"),
        ("ours (default, implicitfast) / gymnasium", sps["ours (implicitfast)"] / sps[gym_key], ">= 1.5"),
    ]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [
        f"{machine_line()}; rollout threads {os.cpu_count()}; {n} envs, random actions; "
        f"{args.rounds} interleaved rounds of {args.chunk} steps; 1-min load average at the start {load_start:.1f}, "
        f"at the end {load:.1f}.",
        "",
        "| configuration | env-steps/s | timed steps |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {sps[k]:.0f} | {n * steps[k]} |" for k in contenders]
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    lines += [f"| {name} | {value:.2f}x | {target} |" for name, value, target in ratios]
    # Where our step time goes: inside mujoco.rollout (physics) vs everything else (Python/torch).
    lines += ["", f"| ours, per control step of {n} envs | physics (in rollout) | everything else | "
              "everything else, main-thread CPU | raw rollout step |",
              "|---|---:|---:|---:|---:|"]
    for integ in ("implicitfast", "rk4"):
        key = f"ours ({integ})"
        per_step = elapsed[key] / steps[key] * 1e3
        physics = contenders[key].physics_s[0] / steps[key] * 1e3
        raw = elapsed[f"raw rollout ({integ})"] / steps[f"raw rollout ({integ})"] * 1e3
        cpu_total, cpu_rollout = contenders[key].cpu_s
        overhead_cpu = (cpu_total - cpu_rollout) / steps[key] * 1e3
        lines.append(f"| {integ} | {physics:.2f} ms | {per_step - physics:.2f} ms | {overhead_cpu:.2f} ms | {raw:.2f} ms |")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record(SECTION, body)


if __name__ == "__main__":
    main()
