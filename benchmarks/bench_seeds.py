"""Every preset on 10 seeds, through the command line: is the policy a user gets a good one?

For each preset and seed this runs what a user runs::

    rlcourse train ALGO --env ENV --seed S --run-dir RUN --no-progress
    rlcourse eval RUN --episodes 50 --num-envs 50 --seed 12345      # policy.pt on fresh episodes
    rlcourse eval RUN                                                # the user's default: 10 episodes

and reports, per seed, the handed-back policy's (``policy.pt``) mean return on the 50 fresh
episodes (eval seed 12345: training used env seeds S..., the runner's own evaluations S + 10000...),
the env steps trained, the step at which the handed-back policy was evaluated, the training
time (``wall_time_s`` in metrics.json, periodic evaluations included) and the wall time of the
whole ``rlcourse train`` process, and whether the threshold is reached (CartPole: mean return
>= 475; Pendulum: >= -200; Ant: mean forward speed >= 1.0 m/s of the deterministic policy over
full 1000-step episodes, measured on the same 50 episodes). The RL Baselines3 Zoo's published
score for the same algorithm and env stands beside them. Target: >= 9 of 10 seeds reach the
threshold, for every preset.

The section in benchmarks/RESULTS.md is re-written after every seed, so a run that is stopped
loses nothing; presets measured by an earlier invocation keep their tables (the rows are kept
in a data comment in the section). Finished run directories under ``--run-root`` are reused
(pass ``--retrain`` to train them again).

    .venv/bin/python benchmarks/bench_seeds.py [--presets ppo-cartpole,...] [--seeds 0-9] [--jobs 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine_line, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Handed-back policy on 10 seeds, every preset (bench_seeds.py, issue 19)"
EVAL_SEED = 12345          # `rlcourse eval`'s default seed: no training or runner-eval env uses it
ANT_WALK_SPEED = 1.0       # m/s: issue 19: "the wall-clock at which ours first walks >= 1.0 m/s"
# RL Baselines3 Zoo, benchmark.md at commit 22e3ff2 (2026-04-23), DLR-RM/rl-baselines3-zoo:
# one trained agent per row, deterministic policy, mean +- std over `eval_episodes` episodes.
ZOO_SOURCE = "DLR-RM/rl-baselines3-zoo `benchmark.md` (commit 22e3ff2, 2026-04-23)"


@dataclass(frozen=True)
class Preset:
    algo: str
    env_id: str
    threshold: float
    metric: str      # "return" or "speed"
    zoo: str         # the Zoo's published score for the same algorithm and env


PRESETS: dict[str, Preset] = {
    # Cheapest first by training time per seed on 2 quiet cores (PPO CartPole ~50 s, PPO Pendulum
    # ~35 s, DQN CartPole ~80 s, DDPG Pendulum ~70 s, SAC Pendulum ~115 s, PPO Ant 2-5 min), with
    # the two presets issue 19 names (PPO Pendulum, DQN CartPole) early.
    "ppo-cartpole": Preset("ppo", "CartPole-v1", 475.0, "return",
                           "ppo CartPole-v1: 500.0 +- 0.0 (100k steps, 300 episodes)"),
    "ppo-pendulum": Preset("ppo", "Pendulum-v1", -200.0, "return",
                           "ppo Pendulum-v1: -172.2 +- 104.2 (100k steps, 750 episodes)"),
    "dqn-cartpole": Preset("dqn", "CartPole-v1", 475.0, "return",
                           "dqn CartPole-v1: 500.0 +- 0.0 (50k steps, 300 episodes)"),
    "ddpg-pendulum": Preset("ddpg", "Pendulum-v1", -200.0, "return",
                            "ddpg Pendulum-v1: -152.1 +- 94.3 (20k steps, 750 episodes)"),
    "sac-pendulum": Preset("sac", "Pendulum-v1", -200.0, "return",
                           "sac Pendulum-v1: -157.0 +- 88.7 (20k steps, 750 episodes)"),
    "ppo-ant": Preset("ppo", "Ant", ANT_WALK_SPEED, "speed",
                      "ppo Ant-v3 (gymnasium's MuJoCo Ant, another reward and task): 1327.2 +- 451.6 return "
                      "(1M steps, 175 episodes); no forward speed published"),
}


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,1,2"`` or ``"0-4,7"`` -> a sorted list of distinct seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = (int(x) for x in part.split("-"))
            if hi < lo:
                raise argparse.ArgumentTypeError(f"empty seed range {part!r}")
            seeds.update(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            seeds.add(int(part))
        else:
            raise argparse.ArgumentTypeError(f"bad seed {part!r} (expected e.g. 0-9 or 0,1,2)")
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return sorted(seeds)


def parse_presets(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
    return list(dict.fromkeys(names))   # in the order given


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", type=parse_presets, default=list(PRESETS),
                        help=f"comma-separated, run in the order given (default: all, {','.join(PRESETS)})")
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(10)), help="e.g. 0-9 (default) or 0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (default 1)")
    parser.add_argument("--eval-episodes", type=int, default=50,
                        help="fresh episodes the handed-back policy is evaluated on (default 50)")
    parser.add_argument("--run-root", default="/tmp/bench_seeds", help="run directories go here")
    parser.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing, record nothing")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    parser.add_argument("--render-only", action="store_true",
                        help="re-write the RESULTS.md section from the rows it holds, run nothing")
    return parser


# ----------------------------------------------------------------------------- one seed
def cli() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "rlcourse"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rlcourse.cli"]


def train_command(name: str, seed: int, run_dir: Path) -> list[str]:
    p = PRESETS[name]
    return [*cli(), "train", p.algo, "--env", p.env_id, "--seed", str(seed), "--run-dir", str(run_dir), "--no-progress"]


def eval_command(run_dir: Path, episodes: int | None) -> list[str]:
    if episodes is None:   # what a user types
        return [*cli(), "eval", str(run_dir)]
    return [*cli(), "eval", str(run_dir), "--episodes", str(episodes), "--num-envs", str(episodes),
            "--seed", str(EVAL_SEED)]


def _run_json(cmd: list[str], log: Path) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    log.write_text(f"$ {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} exited {out.returncode}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])


def ant_speed(run_dir: Path, episodes: int, seed: int) -> dict[str, Any]:
    """Forward speed (m/s along +x) of ``policy.pt`` over full Ant episodes: one episode per env,
    ``episodes`` envs seeded like ``rlcourse eval --episodes N --num-envs N --seed seed`` (the same
    episodes). A fall (torso below 0.31 m) ends an episode early; its speed is over its own length."""
    import torch

    from rlcourse import envs
    from rlcourse.export import load_policy

    torch.set_num_threads(1)
    policy = load_policy(run_dir / "policy.pt")
    env = envs.make("Ant", num_envs=episodes, seed=seed)
    obs, _ = env.reset(seed=seed)
    speeds = [float("nan")] * episodes
    returns = [float("nan")] * episodes
    falls = 0
    with torch.no_grad():
        while any(s != s for s in speeds):
            obs, _, _, _, extras = env.step(policy(obs.to(torch.float32)))
            ep = extras.get("episode")
            if ep is None:
                continue
            for i, dx, length, ret in zip(ep["env_ids"].tolist(), ep["x_distance"].tolist(), ep["length"].tolist(),
                                          ep["return"].tolist()):
                if speeds[i] != speeds[i]:
                    speeds[i] = dx / (length * env.step_dt)
                    returns[i] = ret
                    falls += int(length < env.max_episode_length)
    env.close()
    return {"speed_mean": statistics.fmean(speeds), "speed_min": min(speeds), "falls": falls,
            "return_mean": statistics.fmean(returns), "episodes": episodes}


def run_seed(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    p = PRESETS[name]
    run_dir = Path(args.run_root) / f"{name}_s{seed}"
    row: dict[str, Any] = {"seed": seed, "run_dir": str(run_dir)}
    finished = (run_dir / "metrics.json").exists() and (run_dir / "bench_train.json").exists()
    if args.retrain or not finished:
        if run_dir.exists():
            shutil.rmtree(run_dir)   # a killed run: train it again from the start
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = subprocess.run(train_command(name, seed, run_dir), capture_output=True, text=True, cwd=ROOT)
        process_s = time.perf_counter() - t0
        load = max(load, os.getloadavg()[0])
        (run_dir.parent / f"{run_dir.name}.train.log").write_text(out.stdout + "\n" + out.stderr)
        if out.returncode != 0:
            row["error"] = f"train exited {out.returncode}: {out.stderr.strip()[-300:]}"
            return row
        (run_dir / "bench_train.json").write_text(json.dumps({"process_s": process_s, "load": load}))
    row.update(json.loads((run_dir / "bench_train.json").read_text()))
    m = json.loads((run_dir / "metrics.json").read_text())
    row.update({"steps": m["total_steps"], "train_s": m["wall_time_s"], "best_eval": m.get("best_eval_return"),
                "best_step": m.get("best_eval_step"), "last_eval": m.get("last_eval_return"),
                "policy_pt": m.get("policy_pt")})
    try:
        fresh = _run_json(eval_command(run_dir, args.eval_episodes), run_dir / "bench_eval.log")
        user = _run_json(eval_command(run_dir, None), run_dir / "bench_eval_default.log")
    except (RuntimeError, ValueError) as exc:
        row["error"] = str(exc)
        return row
    row.update({"return": fresh["episode_return_mean"], "return_std": fresh["episode_return_std"],
                "episodes": fresh["episodes"], "return_10": user["episode_return_mean"]})
    if p.metric == "speed":
        row.update(ant_speed(run_dir, args.eval_episodes, EVAL_SEED))
        row["reached"] = row["speed_mean"] >= p.threshold
    else:
        row["reached"] = row["return"] >= p.threshold
        row["reached_10"] = row["return_10"] >= p.threshold
    return row


# ----------------------------------------------------------------------------- tables
def _num(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _steps(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def threshold_text(p: Preset) -> str:
    if p.metric == "speed":
        return f"mean forward speed >= {p.threshold:.1f} m/s (deterministic policy, full 1000-step episodes)"
    return f"mean return >= {p.threshold:g}"


def seed_table(name: str, rows: list[dict[str, Any]]) -> str:
    """Markdown table of one preset's seeds."""
    p = PRESETS[name]
    speed = p.metric == "speed"
    head = ["seed", "policy.pt return (fresh eps)", "`rlcourse eval` (10 ep)"]
    if speed:
        head += ["forward speed m/s (min)", "falls"]
    head += ["reached", "best eval in training @ step", "last eval", "steps", "train s", "process s", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in sorted(rows, key=lambda r: r["seed"]):
        if "error" in r and "return" not in r:
            lines.append(f"| {r['seed']} | error: {r['error'][:120]} |" + " |" * (len(head) - 2))
            continue
        cells = [str(r["seed"]), f"{r['return']:.1f} +- {r['return_std']:.1f}", _num(r.get("return_10"))]
        if speed:
            cells += [f"{r['speed_mean']:.2f} ({r['speed_min']:.2f})", f"{r['falls']}/{r['episodes']}"]
        cells += ["**yes**" if r["reached"] else "**no**",
                  f"{_num(r.get('best_eval'))} @ {_steps(r.get('best_step'))}", _num(r.get("last_eval")),
                  _steps(r.get("steps")), _num(r.get("train_s")), _num(r.get("process_s")), _num(r.get("load"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_row(name: str, rows: list[dict[str, Any]]) -> str:
    """One line of the summary table: seeds reaching the threshold, median time, the Zoo's score."""
    p = PRESETS[name]
    done = [r for r in rows if "reached" in r]
    reached = sum(r["reached"] for r in done)
    median_train = statistics.median(r["train_s"] for r in done) if done else None
    median_proc = statistics.median(r["process_s"] for r in done) if done else None
    if p.metric == "speed":
        score = statistics.median(r["speed_mean"] for r in done) if done else None
        score_text = f"{_num(score, '.2f')} m/s"
        user = "-"
    else:
        score = statistics.median(r["return"] for r in done) if done else None
        score_text = _num(score)
        user = f"{sum(r.get('reached_10', False) for r in done)}/{len(done)}"
    met = "met" if rows and reached >= 9 * len(rows) / 10 else "**not met**"   # a failed run counts as a miss
    if len(rows) < 10:
        met += f" (only {len(rows)} seeds run)"
    errors = len(rows) - len(done)
    seeds = f"{reached}/{len(rows)}" + (f" ({errors} failed to run)" if errors else "")
    return (f"| {name} | {threshold_text(p)} | {seeds} | {user} | {met} | {score_text} | "
            f"{_num(median_train)} | {_num(median_proc)} | {p.zoo} |")


SUMMARY_HEAD = ("| preset | threshold | seeds reaching it | on `rlcourse eval`'s 10 episodes | target >= 9/10 | "
                "median policy.pt score | median train s | median process s | RL Zoo (published) |\n"
                "|---|---|---:|---:|---|---:|---:|---:|---|")
DATA_RE = re.compile(r"<!-- bench_seeds data: (.*?) -->", re.S)


def _training_threads(machine: str) -> str:
    """machine_line() names this script's torch threads; the runs train with the CLI's default of 1."""
    return re.sub(r"\(threads \d+\)", "(training: 1 torch thread, the CLI default)", machine)


def section_body(data: dict[str, Any], eval_episodes: int) -> str:
    names = [n for n in PRESETS if n in data]
    parts = [
        "`.venv/bin/python benchmarks/bench_seeds.py` (`nice -n 5`, `--jobs 1`): per preset and seed "
        "`rlcourse train ALGO --env ENV --seed S --run-dir RUN --no-progress`, then "
        f"`rlcourse eval RUN --episodes {eval_episodes} --num-envs {eval_episodes} --seed {EVAL_SEED}`. "
        f"**The return reported is that evaluation: policy.pt (the handed-back policy) on {eval_episodes} fresh "
        f"episodes** (eval seed {EVAL_SEED}; training used env seeds from S, the runner's periodic evaluations, "
        "which choose policy.pt, seeds from S + 10000 and so are biased upwards as an estimate: they are shown "
        "as \"best eval in training\"). `rlcourse eval` (10 ep) is what a user gets from `rlcourse eval RUN` "
        "(10 episodes, 8 envs, seed 12345). Threshold decisions use the fresh-episode mean. train s = "
        "`wall_time_s` of metrics.json (training with its periodic evaluations); process s = the whole "
        "`rlcourse train` process (start-up and export included); steps = env steps trained (the preset's "
        "budget), with the step at which policy.pt was evaluated beside its training eval. **Times were "
        "measured under load** (the machine's 2 cores are shared with other sessions; \"load\" is the "
        "1-minute load average around the run): returns are deterministic per seed, times are not. "
        f"RL Zoo scores: {ZOO_SOURCE}, one agent per row, deterministic policy.",
        "",
        SUMMARY_HEAD,
        *(summary_row(n, data[n]["rows"]) for n in names),
    ]
    missing = [n for n in PRESETS if n not in data]
    if missing:
        parts += ["", f"Not measured: {', '.join(missing)}."]
    for n in names:
        d = data[n]
        p = PRESETS[n]
        parts += ["", f"### {n}: {p.algo.upper()} {p.env_id}, {threshold_text(p)}", "",
                  f"- machine: {_training_threads(d['machine'])}; load average {d['load']}",
                  f"- RL Zoo: {p.zoo}", "", seed_table(n, d["rows"])]
    slim = {n: {**d, "rows": [{k: v for k, v in r.items() if k != "run_dir"} for r in d["rows"]]}
            for n, d in data.items()}
    parts += ["", f"<!-- bench_seeds data: {json.dumps(slim, separators=(',', ':'))} -->"]
    return "\n".join(parts)


def recorded_data() -> dict[str, Any]:
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text()
    start = text.find(f"## {SECTION}\n")
    if start < 0:
        return {}
    found = DATA_RE.search(text, start)
    return json.loads(found.group(1)) if found else {}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1 or args.eval_episodes < 1:
        raise SystemExit("--jobs and --eval-episodes must be >= 1")
    if args.dry_run:
        for name in args.presets:
            for seed in args.seeds:
                run_dir = Path(args.run_root) / f"{name}_s{seed}"
                print(" ".join(train_command(name, seed, run_dir)))
                print(" ".join(eval_command(run_dir, args.eval_episodes)))
        return 0
    data = {} if args.no_record else recorded_data()
    if args.render_only:
        record(SECTION, section_body(data, args.eval_episodes))
        return 0
    for name in args.presets:
        rows: list[dict[str, Any]] = []
        loads: list[float] = []

        def save() -> None:
            rows.sort(key=lambda r: r["seed"])
            lo, hi = (min(loads), max(loads)) if loads else (0.0, 0.0)
            data[name] = {"machine": machine_line(), "load": f"{lo:.1f}-{hi:.1f} (1-minute, during the runs)",
                          "rows": rows}
            if not args.no_record:
                record(SECTION, section_body(data, args.eval_episodes))

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_seed, name, s, args): s for s in args.seeds}
            for fut in concurrent.futures.as_completed(futures):
                row = fut.result()
                rows.append(row)
                if "load" in row:
                    loads.append(row["load"])
                shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "run_dir"}
                print(f"{name} seed {row['seed']}: {json.dumps(shown)}", flush=True)
                save()
        print(SUMMARY_HEAD.splitlines()[0])
        print(summary_row(name, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
