"""Env throughput: our MuJoCo-backed ``Ant`` vs raw ``mujoco.rollout`` vs gymnasium's ``SyncVectorEnv``.

One process, the same ``ant.xml``, the same number of envs and rollout threads:

* ``ours``: ``rlcourse.envs.make("Ant", num_envs=64)`` stepped with random actions
  (observations, 8 reward terms, terminations and same-step resets included);
* ``raw rollout``: only the physics: one ``Rollout.rollout`` call per control step on
  the same 64 per-env models (``nstep = decimation``), feeding the last state back.
  This is the upper bound for any env built on ``mujoco.rollout``;
* ``gymnasium``: ``gymnasium.vector.SyncVectorEnv`` of 64 ``Ant-v5`` (RK4, frame_skip 5).

Our default physics uses ``implicitfast`` while Ant-v5 uses RK4 (4 model evaluations
per step), so the table also runs ours and raw with ``integrator="rk4"``: that row
compares environments with identical physics. Each configuration is timed
``--repeats`` times, interleaved, and the best run is kept (the machine is shared).

Targets: ours >= 0.9x raw rollout, ours >= 1.5x gymnasium.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine_line, record  # noqa: E402

SECTION = "Env throughput: Ant on the MuJoCo rollout backend"


def bench_ours(num_envs: int, steps: int, integrator: str) -> float:
    import rlcourse

    env = rlcourse.envs.make("Ant", num_envs=num_envs, seed=0, integrator=integrator)
    env.reset()
    g = torch.Generator().manual_seed(0)
    actions = [torch.rand(num_envs, 8, generator=g) * 2 - 1 for _ in range(steps + 10)]
    for a in actions[:10]:
        env.step(a)
    t0 = time.perf_counter()
    for a in actions[10:]:
        env.step(a)
    elapsed = time.perf_counter() - t0
    env.close()
    return num_envs * steps / elapsed


def bench_raw(num_envs: int, steps: int, integrator: str) -> float:
    import copy

    import mujoco
    from mujoco import rollout

    from rlcourse.envs.locomotion.backend import gymnasium_asset, load_model

    model = load_model(gymnasium_asset("ant.xml"), integrator=integrator, timestep=0.01)
    models = [copy.copy(model) for _ in range(num_envs)]
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    d = mujoco.MjData(model)
    s0 = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, d, s0, spec)
    state = np.tile(s0, (num_envs, 1))
    decimation = 5
    out = np.empty((num_envs, decimation, s0.size))
    sens = np.empty((num_envs, decimation, model.nsensordata))
    rng = np.random.default_rng(0)
    controls = [np.ascontiguousarray(np.repeat(rng.uniform(-1, 1, (num_envs, 1, model.nu)), decimation, axis=1))
                for _ in range(steps + 10)]
    with rollout.Rollout(nthread=nthread) as pool:
        for i, ctrl in enumerate(controls):
            if i == 10:
                t0 = time.perf_counter()
            pool.rollout(models, datas, state, ctrl, nstep=decimation, state=out, sensordata=sens, skip_checks=True)
            state[:] = out[:, -1]
    return num_envs * steps / (time.perf_counter() - t0)


def bench_gymnasium(num_envs: int, steps: int) -> float:
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Ant-v5") for _ in range(num_envs)])
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(steps + 10)]
    for i, a in enumerate(actions):
        if i == 10:
            t0 = time.perf_counter()
        envs.step(a)
    elapsed = time.perf_counter() - t0
    envs.close()
    return num_envs * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="timed control steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()

    configs = {
        "ours (implicitfast)": lambda: bench_ours(args.num_envs, args.steps, "implicitfast"),
        "raw rollout (implicitfast)": lambda: bench_raw(args.num_envs, args.steps, "implicitfast"),
        "ours (rk4)": lambda: bench_ours(args.num_envs, args.steps, "rk4"),
        "raw rollout (rk4)": lambda: bench_raw(args.num_envs, args.steps, "rk4"),
        "gymnasium SyncVectorEnv Ant-v5 (rk4)": lambda: bench_gymnasium(args.num_envs, max(args.steps // 4, 20)),
    }
    runs: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(args.repeats):
        for name, fn in configs.items():
            runs[name].append(fn())
            print(f"[{r + 1}/{args.repeats}] {name:<40} {runs[name][-1]:>9.0f} env-steps/s", file=sys.stderr)
    best = {k: max(v) for k, v in runs.items()}
    ratios = {
        "ours / raw rollout (implicitfast)": best["ours (implicitfast)"] / best["raw rollout (implicitfast)"],
        "ours / raw rollout (rk4)": best["ours (rk4)"] / best["raw rollout (rk4)"],
        "ours (rk4) / gymnasium (rk4), same physics": best["ours (rk4)"] / best["gymnasium SyncVectorEnv Ant-v5 (rk4)"],
        "ours (default) / gymnasium": best["ours (implicitfast)"] / best["gymnasium SyncVectorEnv Ant-v5 (rk4)"],
    }
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [
        f"{machine_line()}; rollout threads {os.cpu_count()}; {args.num_envs} envs, random actions, "
        f"best of {args.repeats} interleaved runs; 1-min load average at the end: {load:.1f}.",
        "",
        "| configuration | env-steps/s (best) | all runs |",
        "|---|---:|---|",
    ]
    lines += [f"| {k} | {best[k]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |" for k, v in runs.items()]
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    targets = {"ours / raw rollout (implicitfast)": ">= 0.9", "ours / raw rollout (rk4)": ">= 0.9",
               "ours (rk4) / gymnasium (rk4), same physics": ">= 1.5", "ours (default) / gymnasium": ">= 1.5"}
    lines += [f"| {k} | {v:.2f}x | {targets[k]} |" for k, v in ratios.items()]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record(SECTION, body)


if __name__ == "__main__":
    main()
