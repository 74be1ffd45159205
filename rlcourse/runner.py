"""The training runner shared by every algorithm.

One iteration is the same for PPO, SAC, DQN and DDPG (the rsl_rl protocol)::

    collect:  num_steps_per_env x (act -> env.step -> process_env_step)
    returns:  compute_returns(last_obs)      (GAE for PPO; nothing for off-policy)
    update:   losses = update()
    log:      TensorBoard + progress.csv + progress bar
    evaluate: the deterministic policy every `eval_every` env steps and at the end, on an
              eval env of its own; the best policy so far is kept (as RL Zoo's EvalCallback)
    save:     an atomic checkpoint every `checkpoint_every` iterations (best policy included)

A run directory ends up holding::

    events.out.tfevents.*   TensorBoard scalars (charts/..., losses/...)
    progress.csv            the same scalars, one row per logged iteration
    run.yaml                algorithm, env, seed, hyperparameters (what `rlcourse eval` rebuilds),
                            the CPU and library versions
    checkpoints/            ckpt_<step>.pt, resumable (they also hold the best policy so far)
    policy.pt               TorchScript policy with its observation normalizer: the best evaluated
                            one (the last one when evaluation is off)
    policy_last.pt          the same for the policy at the end of training
    learning_curve.png      episode return against env steps
    metrics.json            final deterministic evaluation of the last policy, best_eval_* /
                            last_eval_* for both policies, throughput

With several processes (``torch.distributed``, see :mod:`rlcourse.distributed`) every rank
runs this loop on its own envs; rank 0 alone writes the run directory, evaluates and shows
the progress bar, and the training-episode statistics it logs are those of its own envs.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import random
import re
import socket
import tempfile
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np
import torch
import yaml

from rlcourse import distributed, envs
from rlcourse.envs.base import VecEnv
from rlcourse.evaluation import evaluate
from rlcourse.export import export_torchscript
from rlcourse.machine import versions
from rlcourse.seeding import seed_everything

CHECKPOINT_RE = re.compile(r"ckpt_(\d+)\.pt$")
# The eval env made by the runner is seeded with seed + EVAL_SEED_OFFSET: its episodes are
# not the training env's, and every evaluation of a run sees the same start states.
EVAL_SEED_OFFSET = 10_000


def _progress_default() -> bool:
    # nbgrader marks any stderr output in a test cell as a failure; tqdm writes to stderr.
    return not (os.environ.get("NBGRADER_EXECUTION") or os.environ.get("RLCOURSE_NO_PROGRESS"))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file.

    The temporary file is ``.<name>.<random>.tmp``; :meth:`Runner.resume` deletes any a
    killed process left behind.
    """
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path`` (see :func:`atomic_save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``run_dir/checkpoints``, or ``None``."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.search(p.name))]
    return max(found)[1] if found else None


def flushing_denormals() -> bool:
    """Whether this thread treats denormal floats as zero (see :func:`denormals_flushed`)."""
    return float(torch.tensor([1e-39]) * 1.0) == 0.0


@contextlib.contextmanager
def denormals_flushed(enabled: bool = True) -> Iterator[None]:
    """Run the block with denormal floats flushed to zero on this thread, then restore the mode.

    A denormal is a float32 below 1.2e-38 in magnitude; x86 CPUs compute with them on a slow
    microcode path, tens of times slower than with normal numbers. Training produces many:
    Adam's running mean of a weight whose gradient is 0 (behind a ReLU that is off for the
    whole batch) decays by beta1 each step through the denormal range. After 4k steps of DQN
    on CartPole, 44% of those means in the 256x256 layer were denormal and Adam's step took
    3.5x as long. Such a number is far below the rounding error of any weight it updates, so
    flushing it changes nothing that is learned: trained parameters of DQN, PPO, SAC and DDPG
    runs came out bit-identical with and without, and took 2-27% less time (27% for DQN's
    256-256 network; benchmarks/RESULTS.md). The mode is per thread (NumPy on this thread too):
    with ``--threads 1`` (the default) that is all of the update.
    """
    previous = flushing_denormals()
    if enabled:
        torch.set_flush_denormal(True)   # returns False (and does nothing) on CPUs without the mode
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


@contextlib.contextmanager
def random_state_kept(device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block, then put Python's, NumPy's and torch's global generators back as they were.

    An evaluation in the middle of training must not shift the training run's random stream:
    a run with periodic evaluation then trains exactly the same policy as one without. The
    deterministic policy draws nothing, but an env (a gymnasium wrapper, a domain randomizer)
    may draw from the global generators, so they are restored whatever the block did.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _train_modes_kept(algo: Any) -> Iterator[None]:
    """Put the algorithm's networks back in their train/eval modes after the block.

    ``inference_policy()`` switches the live networks to eval mode; a network with dropout
    or batch norm would then train differently after an evaluation in the middle of a run.
    """
    modules = algo._modules().values() if hasattr(algo, "_modules") else []
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.train(training)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_proxy_path(port: int) -> str | None:
    """Under JupyterHub, the path (on the hub's address) that proxies ``port``: ``<prefix>proxy/<port>/``."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    return prefix.rstrip("/") + f"/proxy/{port}/" if prefix else None


def start_tensorboard(logdir: str | os.PathLike, port: int | None = None) -> str:
    """Start a TensorBoard server on localhost in this process; returns its URL."""
    from tensorboard import program

    tb = program.TensorBoard()
    tb.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port or free_port())])
    return tb.launch()


class Runner:
    """Drives an algorithm on an environment; logs, checkpoints, evaluates and exports.

    Args:
        algo: an :class:`~rlcourse.algos.base.Algorithm`.
        env: the training :class:`~rlcourse.envs.VecEnv`.
        run_dir: output folder (``None``: train only, write nothing).
        tensorboard: also start a TensorBoard server on localhost and print its URL.
        checkpoint_every: iterations between checkpoints (and one at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        log_interval_steps: env steps between logged rows (at least one per iteration).
        eval_episodes: episodes of each deterministic evaluation (0: no evaluation, and
            ``policy.pt`` is the last policy).
        eval_every: env steps between evaluations of the deterministic policy (0: only the one
            at the end). The best evaluated policy is kept and exported as ``policy.pt``.
        eval_env: env for the evaluations (default: a fresh one of the same id, seeded with
            ``seed + EVAL_SEED_OFFSET`` and reset with that seed before each evaluation; an env
            passed here keeps its own seeding).
        progress: show a progress bar (default: on, off under nbgrader).
        verbose: print where things were written.
        callback: ``callback(runner) -> bool | None`` called after every iteration;
            returning ``False`` stops training early (e.g. a reward threshold).
        flush_denormals: treat denormal floats as zero while training (faster on x86 CPUs,
            the same results; see :func:`denormals_flushed`).

    In a multi-process run every rank makes a Runner with the same arguments; on ranks other
    than 0 it writes nothing, evaluates nothing and shows no progress bar, and it reads
    ``run_dir`` only to resume.
    """

    def __init__(
        self,
        algo: Any,
        env: VecEnv,
        run_dir: str | os.PathLike | None = None,
        tensorboard: bool = False,
        checkpoint_every: int = 50,
        keep_checkpoints: int = 3,
        log_interval_steps: int = 1000,
        eval_episodes: int = 10,
        eval_env: VecEnv | None = None,
        eval_every: int = 0,
        progress: bool | None = None,
        verbose: bool = False,
        callback: Any = None,
        flush_denormals: bool = True,
    ) -> None:
        self.algo = algo
        self.env = env
        main = distributed.is_main()   # rank 0 (or the only process) writes, evaluates and logs
        self._resume_dir = Path(run_dir) if run_dir is not None else None
        self.run_dir = self._resume_dir if main else None
        self.tensorboard = tensorboard and main
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.log_interval_steps = int(log_interval_steps)
        if int(eval_episodes) < 0:
            raise ValueError(f"eval_episodes must be >= 0 (0: no evaluation), got {eval_episodes!r}")
        if int(eval_every) < 0:
            raise ValueError(f"eval_every must be >= 0 env steps (0: evaluate only at the end), got {eval_every!r}")
        if int(eval_every) > 0 and int(eval_episodes) == 0:
            raise ValueError(f"eval_every={eval_every} needs eval_episodes > 0")
        self.eval_episodes = int(eval_episodes) if main else 0
        self.eval_every = int(eval_every)
        self.eval_env = eval_env
        self._own_eval_env: VecEnv | None = None
        self.progress = (_progress_default() if progress is None else progress) and main
        self.verbose = verbose and main
        self.callback = callback
        self.flush_denormals = flush_denormals
        self.writer = None
        self.tensorboard_url: str | None = None
        self.wall_time_s = 0.0
        self.metrics: dict[str, Any] = {}
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_lengths: deque[float] = deque(maxlen=100)
        # Best-so-far deterministic policy (a CPU copy of algo.inference_policy()), its mean
        # evaluation return and the env step it was evaluated at; saved in every checkpoint.
        self.best_policy: torch.nn.Module | None = None
        self.best_eval_return: float | None = None
        self.best_eval_step: int | None = None
        self.last_eval: dict[str, Any] | None = None   # the latest evaluation's result, with its "step"

    # ---------------------------------------------------------------- main loop
    def learn(self, total_steps: int) -> dict[str, Any]:
        """Train until the algorithm's ``global_step`` reaches ``total_steps``; returns final metrics."""
        if not isinstance(total_steps, (int, np.integer)) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        algo, env = self.algo, self.env
        algo.total_steps = int(total_steps)
        if distributed.is_initialized():
            # Every rank starts from rank 0's networks. Before rank 0 writes anything: no rank
            # is still checking the command line against the run directory.
            distributed.broadcast_modules(algo._modules().values())
        self._open_outputs()
        steps_per_iter = algo.num_steps_per_env * env.num_envs * distributed.world_size()
        log_every = max(1, math.ceil(self.log_interval_steps / steps_per_iter))
        # In inference mode like every step below: a batched env keeps buffers that its steps
        # (inside inference mode) replaced, and a second learn() resets them in place.
        with torch.inference_mode():
            obs, _ = env.reset(seed=algo.seed + algo.iteration)

        from tqdm.auto import tqdm

        bar = tqdm(total=int(total_steps), initial=min(algo.global_step, total_steps), unit="step",
                   disable=not self.progress, dynamic_ncols=True, desc=f"{algo.name} {env.env_id}")
        window_returns: list[float] = []
        window_lengths: list[float] = []
        window_terms: dict[str, list[float]] = {}
        window_steps, window_time = 0, 0.0
        start_step = algo.global_step
        t_start = time.perf_counter()
        # Denormal floats flushed to zero while training: same results, less time (see denormals_flushed).
        with denormals_flushed(self.flush_denormals), bar:   # the bar closes on the way out
            while algo.global_step < total_steps:
                step_before = algo.global_step
                t0 = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(algo.num_steps_per_env):
                        actions = algo.act(obs)
                        obs, rewards, terminated, truncated, extras = env.step(actions)
                        algo.process_env_step(obs, rewards, terminated, truncated, extras)
                        ep = extras.get("episode")
                        if ep is not None:
                            window_returns += ep["return"].tolist()
                            window_lengths += ep["length"].tolist()
                            # Task-specific episode statistics (per-term reward sums
                            # "rew_<term>", distances, ...) go to TensorBoard as episode/<key>.
                            for key, value in ep.items():
                                if key not in ("return", "length", "env_ids"):
                                    window_terms.setdefault(key, []).extend(value.tolist())
                    algo.compute_returns(obs)
                losses = algo.update()
                dt = time.perf_counter() - t0
                window_steps += steps_per_iter
                window_time += dt
                bar.update(min(steps_per_iter, total_steps - bar.n))

                finished = algo.global_step >= total_steps
                if algo.iteration % log_every == 0 or finished:
                    self.recent_returns.extend(window_returns)
                    self.recent_lengths.extend(window_lengths)
                    row: dict[str, Any] = {
                        "iteration": algo.iteration,
                        "global_step": algo.global_step,
                        "wall_time_s": round(self.wall_time_s + time.perf_counter() - t_start, 3),
                        "charts/steps_per_second": window_steps / max(window_time, 1e-9),
                    }
                    if window_returns:
                        row["charts/episode_return"] = float(np.mean(window_returns))
                        row["charts/episode_length"] = float(np.mean(window_lengths))
                    row.update({f"episode/{k}": float(np.mean(v)) for k, v in window_terms.items() if v})
                    row.update(losses)
                    self._log(row)
                    window_terms = {}
                    if self.recent_returns:
                        bar.set_postfix(ret=f"{np.mean(self.recent_returns):.1f}", refresh=False)
                    window_returns, window_lengths, window_steps, window_time = [], [], 0, 0.0
                # All ranks stop together, when any rank's callback says so.
                if self.callback is not None and distributed.any_rank(self.callback(self) is False):
                    finished = True
                # Evaluate when this iteration crossed a multiple of eval_every, and at the end
                # (before the last checkpoint, so that it holds the final best as well).
                crossed = self.eval_every > 0 and step_before // self.eval_every < algo.global_step // self.eval_every
                if self.eval_episodes > 0 and (crossed or finished):
                    self.evaluate_policy()
                if self.run_dir is not None and (algo.iteration % self.checkpoint_every == 0 or finished):
                    self.save_checkpoint(self.wall_time_s + time.perf_counter() - t_start)
                if finished:
                    break
        self.wall_time_s += time.perf_counter() - t_start
        trained = algo.global_step - start_step
        self.metrics = {
            "algo": algo.name,
            "env": env.env_id,
            "seed": algo.seed,
            "total_steps": int(algo.global_step),
            "wall_time_s": round(self.wall_time_s, 3),
            "steps_per_second": trained / max(self.wall_time_s, 1e-9) if trained else 0.0,
        }
        if self.recent_returns:
            self.metrics["train_episode_return_mean"] = float(np.mean(self.recent_returns))
        if distributed.is_initialized():
            self.metrics["nproc"] = distributed.world_size()
            distributed.dump_rank_state(algo._modules())
        self._finish()
        return self.metrics

    # ---------------------------------------------------------------- outputs
    def _open_outputs(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir))
        algo = self.algo
        run_info = {
            "algo": algo.name,
            "env": self.env.env_id,
            "num_envs": self.env.num_envs,   # per process
            "nproc": distributed.world_size(),
            "seed": algo.seed,
            "total_steps": int(algo.total_steps),
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
            "hyperparameters": _plain(dataclasses.asdict(algo.cfg)),
            # A seed reproduces a run on the same machine only (see rlcourse.machine).
            "machine": versions(),
        }
        (self.run_dir / "run.yaml").write_text(yaml.safe_dump(run_info, sort_keys=False))
        if algo.iteration == 0:
            table = "\n".join(f"|{k}|{v}|" for k, v in run_info["hyperparameters"].items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        if self.tensorboard and self.tensorboard_url is None:
            self.tensorboard_url = start_tensorboard(self.run_dir)
            print(f"TensorBoard: {self.tensorboard_url}", flush=True)
            hub_path = hub_proxy_path(urllib.parse.urlsplit(self.tensorboard_url).port)
            if hub_path:   # a terminal in JupyterHub: 127.0.0.1 is the hub's machine, not the browser's
                print(f"TensorBoard through JupyterHub: open {hub_path} on the hub's address", flush=True)

    def _log(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            step = int(row["global_step"])
            for key, value in row.items():
                if "/" in key:
                    self.writer.add_scalar(key, float(value), step)
            self.writer.flush()
        if self.run_dir is not None:
            _append_csv_row(self.run_dir / "progress.csv", row)

    def save_checkpoint(self, wall_time_s: float | None = None) -> Path:
        """Write ``checkpoints/ckpt_<step>.pt`` atomically and prune old ones."""
        assert self.run_dir is not None
        folder = self.run_dir / "checkpoints"
        state = self.algo.checkpoint()
        state["runner"] = {"wall_time_s": self.wall_time_s if wall_time_s is None else wall_time_s}
        if self.best_policy is not None:
            # Without it a resumed run would forget the best policy of the part before the crash.
            state["runner"]["best"] = {"return": self.best_eval_return, "step": self.best_eval_step,
                                       "policy": self.best_policy.state_dict()}
        path = folder / f"ckpt_{self.algo.global_step:010d}.pt"
        atomic_save(state, path)
        found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.search(p.name)))
        for _, old in found[: -self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def resume(self, checkpoint: str | os.PathLike | None = None) -> Path:
        """Load ``checkpoint`` (default: the latest in ``run_dir``) into the algorithm."""
        path = Path(checkpoint) if checkpoint else (latest_checkpoint(self._resume_dir) if self._resume_dir else None)
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"no checkpoint to resume from in {self._resume_dir}/checkpoints")
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.algo.load_checkpoint(state)
        if distributed.rank() > 0:
            # The checkpoint holds rank 0's random state; every other rank goes on drawing
            # from a stream of its own (a resumed multi-process run is not bit-identical to an
            # uninterrupted one; a resumed single-process run is).
            seed_everything(self.algo.seed + self.algo.global_step)
            self.algo.generator.manual_seed(self.algo.seed + self.algo.global_step)
        self.wall_time_s = float(state.get("runner", {}).get("wall_time_s", 0.0))
        best = state.get("runner", {}).get("best")
        if best is not None:
            with _train_modes_kept(self.algo):   # only the structure is wanted; the weights are the checkpoint's
                policy = copy.deepcopy(self.algo.inference_policy()).cpu().eval()
            policy.load_state_dict(best["policy"])
            self.best_policy = policy
            self.best_eval_return, self.best_eval_step = float(best["return"]), int(best["step"])
        if self.run_dir is not None:
            _clean_after_crash(self.run_dir, self.algo.global_step)
        return Path(path)

    def evaluate_policy(self) -> dict[str, Any]:
        """Evaluate the deterministic policy now; keep it (and export it as ``policy.pt``) if it is the best so far.

        Returns the evaluation's result (``episode_return_mean``, ...) with the env ``step``.
        Ties keep the earlier policy. Training is not disturbed: the eval env is not the
        training env, the global random generators and the networks' train/eval modes are
        put back afterwards.
        """
        algo = self.algo
        env = self.eval_env
        seed = None   # an eval env passed in keeps its own seeding
        if env is None:
            seed = algo.seed + EVAL_SEED_OFFSET
            if self._own_eval_env is None:
                self._own_eval_env = envs.make(self.env.env_id, num_envs=min(self.eval_episodes, 8), seed=seed,
                                               device=getattr(self.env, "device", "cpu"))
            env = self._own_eval_env
        with random_state_kept(getattr(algo, "device", None)), _train_modes_kept(algo):
            result = evaluate(algo, env, episodes=self.eval_episodes, seed=seed)
            result.pop("returns", None)
            result["step"] = int(algo.global_step)
            is_best = self.best_eval_return is None or result["episode_return_mean"] > self.best_eval_return
            if is_best:
                self.best_policy = copy.deepcopy(algo.inference_policy()).cpu().eval()
        self.last_eval = result
        if is_best:
            self.best_eval_return, self.best_eval_step = result["episode_return_mean"], result["step"]
            if self.run_dir is not None:
                # Exported at once: a run killed later still leaves its best policy behind.
                export_torchscript(self.best_policy, self.run_dir / "policy.pt")
        if self.writer is not None:
            for key in ("episode_return_mean", "episode_return_std"):
                self.writer.add_scalar(f"eval/{key}", result[key], result["step"])
            self.writer.add_scalar("eval/best_episode_return_mean", self.best_eval_return, result["step"])
            self.writer.flush()
        return result

    def _finish(self) -> None:
        algo = self.algo
        if self.eval_episodes > 0 and (self.last_eval is None or self.last_eval["step"] != algo.global_step):
            self.evaluate_policy()   # e.g. learn() on a run that had already reached total_steps
        if self._own_eval_env is not None:
            self._own_eval_env.close()
            self._own_eval_env = None
        if self.last_eval is not None:
            # The unprefixed keys are the final evaluation of the last policy, as before.
            self.metrics.update({k: v for k, v in self.last_eval.items() if k != "step"})
            self.metrics.update({
                "eval_every": self.eval_every,
                "last_eval_return": self.last_eval["episode_return_mean"],
                "last_eval_step": self.last_eval["step"],
                "best_eval_return": self.best_eval_return,
                "best_eval_step": self.best_eval_step,
            })
        best = self.best_policy is not None
        self.metrics["policy_pt"] = "best" if best else "last"
        if self.run_dir is None:
            return
        export_torchscript(algo, self.run_dir / "policy_last.pt")
        export_torchscript(self.best_policy if best else algo, self.run_dir / "policy.pt")
        atomic_write(self.run_dir / "metrics.json", lambda f: f.write(json.dumps(self.metrics, indent=2).encode()))
        plot_learning_curve(self.run_dir)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.verbose:
            print(f"run directory: {self.run_dir}")


def plot_learning_curve(run_dir: str | os.PathLike) -> Path | None:
    """Plot ``charts/episode_return`` from ``progress.csv`` into ``learning_curve.png``."""
    # Figure + Agg canvas, not pyplot: never touches the global backend, so inline plots in a
    # notebook keep working after training.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    path = run_dir / "progress.csv"
    if not path.exists():
        return None
    steps, returns = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("charts/episode_return"):
                steps.append(int(row["global_step"]))
                returns.append(float(row["charts/episode_return"]))
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(steps, returns, color="tab:blue")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (training)")
    info = run_dir / "run.yaml"
    if info.exists():
        meta = yaml.safe_load(info.read_text())
        ax.set_title(f"{meta.get('algo', '').upper()} on {meta.get('env', '')}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out)
    return out


def _clean_after_crash(run_dir: Path, global_step: int) -> None:
    """Undo what a killed process left behind past its last checkpoint.

    A process killed mid-run may have logged iterations after the checkpoint we resume
    from (they will be trained and logged again) and may have been cut in the middle
    of a line; it may also leave the temporary file of an interrupted atomic write.
    """
    for tmp in [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    path = run_dir / "progress.csv"
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "global_step" not in rows[0]:
        return
    header, col = rows[0], rows[0].index("global_step")
    keep = [r for r in rows[1:] if len(r) == len(header) and r[col].isdigit() and int(r[col]) <= global_step]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([header, *keep])
    os.replace(tmp, path)


def _append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV at ``path``, widening the header when ``row`` brings new keys.

    Some scalars appear only later in a run (losses once an off-policy learner is past its
    warm-up, a reward term's episode sum once the first episode ended): the file is then
    rewritten atomically with the new columns, and earlier rows get empty cells.
    """
    header: list[str] = []
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            header = next(csv.reader(f))
    added = [k for k in row if k not in header]
    if not header:
        first = ["iteration", "global_step", "wall_time_s", "charts/episode_return",
                 "charts/episode_length", "charts/steps_per_second"]
        header = first + sorted(k for k in added if k not in first)
        with path.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=header).writeheader()
    elif added:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        header += sorted(added)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=header, extrasaction="ignore").writerow(row)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
