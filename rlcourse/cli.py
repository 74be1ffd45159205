"""Command line: ``rlcourse train|eval|grade|pin``.

Errors in what the user typed (unknown algorithm or env, a bad number, a missing
run directory) end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _hyperparameter_epilog() -> str:
    from rlcourse.algos import ALGORITHMS, config_help

    lines = ["hyperparameters (set with --set NAME=VALUE or in a --config YAML file):"]
    for name, cls in sorted(ALGORITHMS.items()):
        lines.append(f"  {name}:")
        for field, default, text in config_help(cls.Config):
            shown = list(default) if isinstance(default, tuple) else default
            lines.append(f"    {field:<24} {text} (default: {shown})")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(with_epilog: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(prog="rlcourse", description="Deep RL for robot control: train, evaluate, grade.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser(
        "train",
        help="train an agent and write a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Building the hyperparameter table imports every algorithm (and torch): only for --help.
        epilog=_hyperparameter_epilog() if with_epilog else None,
    )
    t.add_argument("algo", help="algorithm: ppo, dqn, ddpg or sac (their hyperparameters are listed below)")
    t.add_argument("--env", default=None, help="environment id (rlcourse task or gymnasium id)")
    t.add_argument("--num-envs", type=_positive_int, default=None, help="parallel environments (default: preset)")
    t.add_argument("--total-steps", type=_positive_int, default=None, help="environment steps (default: preset)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--run-dir", default=None, help="output folder (default runs/<algo>_<env>_s<seed>_<time>)")
    t.add_argument("--config", default=None, help="YAML file with env/num_envs/total_steps/seed/hyperparameters")
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one hyperparameter")
    t.add_argument("--tensorboard", action="store_true", help="start a TensorBoard server on localhost, print its URL")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch device (default cpu)")
    t.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default 1: small MLPs update faster on one thread than two)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=50, help="iterations between checkpoints")
    t.add_argument("--eval-episodes", type=_nonnegative_int, default=None,
                   help="episodes of each deterministic evaluation (default: preset, else 10; 0: none)")
    t.add_argument("--eval-every", type=_nonnegative_int, default=None,
                   help="env steps between evaluations; the best policy becomes policy.pt "
                        "(default: preset, else 0: only at the end)")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--nproc", type=_positive_int, default=1,
                   help="training processes on this machine, started with torchrun (gloo on CPU, nccl on CUDA: one "
                        "GPU each). Each steps --num-envs envs of its own; gradients are averaged, so an update "
                        "matches one process with nproc x num-envs envs. --total-steps counts all processes' "
                        "steps; rank 0 writes the run directory. Several machines: run on each "
                        "`torchrun --nnodes M --nproc-per-node N --node-rank I --rdzv-endpoint HOST:PORT "
                        "-m rlcourse.cli train ...` (without --nproc)")

    e = sub.add_parser("eval", help="re-evaluate a run directory's exported policy")
    e.add_argument("run_dir", help="a run directory written by `rlcourse train`")
    e.add_argument("--episodes", type=_positive_int, default=10)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--num-envs", type=_positive_int, default=None)
    e.add_argument("--which", default="best", choices=["best", "last"],
                   help="policy.pt (best evaluated during training, the default) or policy_last.pt (end of training)")
    e.add_argument("--video", default=None, metavar="OUT.mp4", help="also render episodes to an .mp4 or .gif file")
    e.add_argument("--video-episodes", type=_positive_int, default=1)

    g = sub.add_parser("grade", help="instructor pipeline: generate, autograde, feedback, grades.csv")
    g.add_argument("lab", nargs="?", default=None, help="one lab (e.g. lab2_ppo); default: every lab")
    g.add_argument("--submissions", default=None, help="folder of <student>/<lab>/<notebook>.ipynb (default autograder/submitted, else autograder/examples)")
    g.add_argument("--course-dir", default=None, help="course root (default: the repository)")
    g.add_argument("--timeout", type=_positive_int, default=900, help="seconds per submission before it is stopped")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="submissions graded at once on a local Dask cluster (default: one per core; "
                        "1: one after the other, in this process)")
    g.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="grade on the workers of this running Dask scheduler instead (they must see the "
                        "course folder at the same path)")
    g.add_argument("--db", default=None, metavar="URL",
                   help="gradebook database, e.g. postgresql://user@host/grading "
                        "(default: sqlite autograder/gradebook.db)")
    g.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="run submissions without the bubblewrap sandbox, with your rights (only for a class "
                        "whose code you trust; summary.csv marks every row)")
    g.add_argument("--regrade", action="store_true",
                   help="grade every submission again; by default one graded before with the same notebook, "
                        "pins, source notebook and grading code keeps its outcome")

    p = sub.add_parser("pin", help="run a lab's source notebook on several seeds and pin what its graded cell measured")
    p.add_argument("lab", nargs="?", default=None, help="one lab (e.g. lab2_ppo); default: every lab")
    p.add_argument("--course-dir", default=None, help="course root (default: the repository)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="reference seeds (default: the lab's PIN_SEEDS)")
    p.add_argument("--workers", type=_positive_int, default=None, help="notebooks run at once (default: one per core)")
    return parser


# ----------------------------------------------------------------------------- train
def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _first_set(*values: Any) -> Any:
    """The first value that is not ``None``."""
    return next(v for v in values if v is not None)


def cmd_train(args: argparse.Namespace) -> int:
    from rlcourse import distributed

    if distributed.launched_by_torchrun():
        local = int(os.environ["LOCAL_WORLD_SIZE"])
        if args.nproc not in (1, local):
            raise UsageError(f"--nproc {args.nproc} under torchrun, which started {local} processes on this machine")
        device = distributed.init(args.device)
        try:
            return _train(args, _train_settings(args, world_size=distributed.world_size()), device)
        finally:
            distributed.shutdown()
    settings = _train_settings(args, world_size=args.nproc)   # bad input: one error line, before any process starts
    if args.nproc == 1:
        return _train(args, settings, args.device)
    import torch

    if args.device == "cuda" and args.nproc > torch.cuda.device_count():
        raise UsageError(f"--nproc {args.nproc} --device cuda needs one GPU per process; torch sees "
                         f"{torch.cuda.device_count()}")
    return distributed.launch(args.nproc, _without_nproc(args.argv), threads=args.threads)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N`` (the processes torchrun starts train alone)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _train_settings(args: argparse.Namespace, world_size: int) -> dict[str, Any]:
    """Everything ``rlcourse train`` needs, from the command line, the config file, the run being
    resumed and the preset (in that order); a mistake raises :class:`UsageError`."""
    import torch

    from rlcourse.algos import get_algorithm, load_preset
    from rlcourse.algos.base import build_config, load_config_file
    from rlcourse.runner import latest_checkpoint

    algo_cls = get_algorithm(args.algo)
    file_cfg: dict[str, Any] = load_config_file(args.config) if args.config else {}
    run_dir = Path(args.run_dir) if args.run_dir else None
    saved: dict[str, Any] = {}
    if args.resume:
        if run_dir is None or not (run_dir / "run.yaml").exists():
            raise UsageError("--resume needs --run-dir pointing at an existing run (with run.yaml)")
        saved = yaml.safe_load((run_dir / "run.yaml").read_text())
        if latest_checkpoint(run_dir) is None:
            raise UsageError(f"{run_dir} has no checkpoint to resume from")
    env_id = args.env or file_cfg.get("env") or saved.get("env")
    if not env_id:
        raise UsageError("--env is required (e.g. --env CartPole-v1)")
    from rlcourse import envs

    try:
        envs.check_id(env_id)   # here, not in each of --nproc's processes
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    preset = load_preset(algo_cls.name, env_id)
    num_envs = args.num_envs or file_cfg.get("num_envs") or saved.get("num_envs") or preset.get("num_envs") or 8
    saved_nproc = int(saved.get("nproc", 1))
    if args.resume and not args.num_envs and saved_nproc != world_size:
        # Resumed with another number of processes: keep the run's total number of envs.
        total_envs = int(saved.get("num_envs", num_envs)) * saved_nproc
        if total_envs % world_size:
            raise UsageError(f"{run_dir} ran {saved_nproc} processes x {saved.get('num_envs')} envs; "
                             f"{total_envs} envs do not split over {world_size} processes: pass --num-envs")
        num_envs = total_envs // world_size
    total_steps = args.total_steps or file_cfg.get("total_steps") or saved.get("total_steps") or preset.get("total_steps")
    if not total_steps:
        raise UsageError("--total-steps is required for this env (no preset)")
    seed = saved.get("seed", args.seed) if args.resume else file_cfg.get("seed", args.seed)
    # 0 is a meaningful value for both, so the first source that sets one wins (not the first truthy one).
    eval_every = _first_set(args.eval_every, file_cfg.get("eval_every"), saved.get("eval_every"),
                            preset.get("eval_every"), 0)
    eval_episodes = _first_set(args.eval_episodes, file_cfg.get("eval_episodes"), saved.get("eval_episodes"),
                               preset.get("eval_episodes"), 10)
    for name, value in (("eval_every", eval_every), ("eval_episodes", eval_episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
    if eval_episodes == 0:
        # No evaluation: a schedule asked for on this command line is a mistake; one that comes
        # from the preset or the run's config is simply not used.
        if args.eval_every:
            raise UsageError(f"--eval-every {eval_every} needs --eval-episodes > 0")
        eval_every = 0
    hp = dict(preset["hyperparameters"])
    hp.update(saved.get("hyperparameters", {}))
    hp.update(file_cfg.get("hyperparameters") or {})
    hp.update(_parse_sets(args.set))
    build_config(algo_cls.Config, hp)   # a bad hyperparameter is reported here, not once per process
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch on this machine")

    if run_dir is not None and not args.resume and (run_dir / "run.yaml").exists():
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    if run_dir is None:
        # Chosen once, by the launching process: every rank must name the same folder.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{algo_cls.name}_{env_id}_s{seed}_{stamp}"
        args.argv += ["--run-dir", str(run_dir)]
    return {"algo_cls": algo_cls, "env_id": env_id, "num_envs": int(num_envs), "total_steps": int(total_steps),
            "seed": int(seed), "eval_every": eval_every, "eval_episodes": eval_episodes, "hp": hp, "run_dir": run_dir}


def _train(args: argparse.Namespace, settings: dict[str, Any], device: Any) -> int:
    """Train with ``settings`` in this process (one rank of a multi-process run, or the only process)."""
    import torch

    from rlcourse import distributed, envs
    from rlcourse.runner import Runner

    torch.set_num_threads(args.threads)
    algo_cls, env_id, num_envs = settings["algo_cls"], settings["env_id"], settings["num_envs"]
    total_steps, run_dir = settings["total_steps"], settings["run_dir"]
    seed = distributed.rank_seed(settings["seed"])   # rank r: seed + r * RANK_SEED_OFFSET
    env = envs.make(env_id, num_envs=num_envs, seed=seed, device=device)
    agent = algo_cls(env, seed=seed, device=device, preset=None, **settings["hp"])
    runner = Runner(
        agent, env, run_dir=run_dir, tensorboard=args.tensorboard, checkpoint_every=args.checkpoint_every,
        eval_episodes=settings["eval_episodes"], eval_every=settings["eval_every"],
        progress=False if args.no_progress else None,
    )
    main = distributed.is_main()
    if args.resume:
        ckpt = runner.resume()
        if main:
            print(f"resuming from {ckpt} at step {agent.global_step}", flush=True)
    if main:
        procs = f"{distributed.world_size()} processes x " if distributed.world_size() > 1 else ""
        print(f"training {algo_cls.name.upper()} on {env_id} ({procs}{num_envs} envs, {total_steps} steps) -> {run_dir}",
              flush=True)
    metrics = runner.learn(total_steps)
    env.close()
    if not main:
        return 0
    print(json.dumps(metrics, indent=2))
    if args.tensorboard and sys.stdin.isatty():
        print(f"TensorBoard still serving at {runner.tensorboard_url}; press Ctrl+C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from rlcourse import envs
    from rlcourse.evaluation import evaluate
    from rlcourse.export import load_policy

    run_dir = Path(args.run_dir)
    if not (run_dir / "run.yaml").exists() or not (run_dir / "policy.pt").exists():
        raise UsageError(f"{run_dir} is not a finished run directory (needs run.yaml and policy.pt)")
    info = yaml.safe_load((run_dir / "run.yaml").read_text())
    path = run_dir / ("policy.pt" if args.which == "best" else "policy_last.pt")
    if not path.exists():
        raise UsageError(f"{run_dir} has no {path.name} (written by runs since the best policy is kept); "
                         "use --which best")
    policy = load_policy(path)
    num_envs = args.num_envs or min(args.episodes, 8)
    env = envs.make(info["env"], num_envs=num_envs, seed=args.seed)
    result = evaluate(policy, env, episodes=args.episodes)
    env.close()
    result.pop("returns")
    result.update({"algo": info["algo"], "env": info["env"], "policy": args.which})
    if args.video:
        from rlcourse.video import record_video

        result["video"] = str(record_video(policy, info["env"], args.video, episodes=args.video_episodes, seed=args.seed))
    print(json.dumps(result, indent=2))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from rlcourse.grading import skip_unused_format_checkers

    skip_unused_format_checkers()  # before nbformat: seconds of start-up (see there)
    from rlcourse.grading.pipeline import grade

    return grade(lab=args.lab, submissions=args.submissions, course_dir=args.course_dir, timeout=args.timeout,
                 workers=args.workers, scheduler=args.scheduler, db=args.db, sandbox=args.sandbox,
                 regrade=args.regrade)


def cmd_pin(args: argparse.Namespace) -> int:
    from rlcourse.grading.pins import pin

    return pin(lab=args.lab, course_dir=args.course_dir, seeds=args.seeds, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_epilog=any(a in ("-h", "--help") for a in argv))
    args = parser.parse_args(argv)
    args.argv = list(argv)   # `train --nproc N` starts N copies of this command line
    handlers = {"train": cmd_train, "eval": cmd_eval, "grade": cmd_grade, "pin": cmd_pin}
    try:
        return handlers[args.command](args)
    except (UsageError, ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        if os.environ.get("RLCOURSE_DEBUG"):
            raise
        print(f"rlcourse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlcourse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
