"""``rlcourse pin [LAB]``: measure the reference solutions and write ``autograder/pinned_metrics.json``.

The hidden tests compare a student's work with these pins. Function checks compare with
the reference implementation live, so for them the file only records the tolerances. For
training outcomes the file records what the reference solution reached on several seeds
and the pass mark derived from it::

    threshold = round(MARGIN * min(reference returns over the seeds))

A correct solution trains like the reference on *some* seed (floating-point details of a
student's own code change the trajectory like a different seed would), so the pass mark
sits well below the worst reference seed. Every entry says how and when it was produced,
with which library versions and on which processor (:func:`rlcourse.machine.versions`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from rlcourse.grading.release import find_course_dir, list_labs
from rlcourse.machine import versions

PINS_RELPATH = Path("autograder") / "pinned_metrics.json"
# Fraction of the worst reference seed a submission must reach.
MARGIN = 0.5
# Seeds of the reference runs (the graded seed is always one of them).
LAB2_SEEDS = (0, 1, 2, 3, 4)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators, as a lab's training cell does first."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reference_runs(
    run_fn: Callable[[int], dict[str, Any]], seeds: Iterable[int], graded_seed: int, workers: int | None = None
) -> tuple[tuple[int, ...], list[dict[str, Any]], float]:
    """Run ``run_fn(seed)`` once per reference seed, in parallel worker processes.

    The graded seed is always one of the seeds. ``run_fn`` must be picklable (a module-level
    function, or a ``functools.partial`` of one). ``workers`` defaults to one per CPU core;
    with one worker the runs happen in this process, which keeps its torch thread count (the
    runs set 1 thread, as the notebooks do).

    Returns:
        ``(seeds, runs, seconds)``: the sorted seeds, ``run_fn``'s results in that order and
        the wall-clock time of all runs.
    """
    seeds = tuple(sorted(set(seeds) | {graded_seed}))
    workers = min(workers or os.cpu_count() or 1, len(seeds))
    start = time.perf_counter()
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        try:
            runs = [run_fn(s) for s in seeds]
        finally:
            torch.set_num_threads(threads)
    else:
        # "spawn": forking a process that has imported torch can deadlock its thread pools.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_fn, seeds))
    return seeds, runs, time.perf_counter() - start


def train_and_evaluate_agent(
    protocol: dict[str, Any], seed: int, make_agent: Callable[[Any, int], Any], eval_envs: int
) -> dict[str, Any]:
    """Labs 1, 2 and 5's graded run: train ``make_agent(env, seed)`` for ``protocol["total_steps"]``
    on ``protocol["env"]``, then evaluate its deterministic policy (:func:`rlcourse.evaluate`)."""
    import rlcourse

    seed_everything(seed)
    env = rlcourse.envs.make(protocol["env"], num_envs=protocol["num_envs"], seed=seed)
    agent = make_agent(env, seed)
    agent.learn(protocol["total_steps"], eval_episodes=0, progress=False)
    eval_env = rlcourse.envs.make(protocol["env"], num_envs=eval_envs, seed=protocol["eval_seed"] + seed)
    result = rlcourse.evaluate(agent, eval_env, episodes=protocol["eval_episodes"])
    env.close()
    eval_env.close()
    return result


def evaluated_return_run(train_and_evaluate: Callable[..., dict[str, Any]], metric: str, seed: int) -> dict[str, Any]:
    """One reference run of a lab graded on an evaluated return (labs 1, 2, 5), as a pins entry's ``runs`` row."""
    import torch

    torch.set_num_threads(1)  # same as the notebooks' graded cells
    start, cpu = time.perf_counter(), time.process_time()
    result = train_and_evaluate(seed=seed)
    return {"seed": seed, "return": result[metric], "std": result["episode_return_std"],
            "wall_time_s": round(time.perf_counter() - start, 1), "cpu_time_s": round(time.process_time() - cpu, 1)}


def return_training_entry(
    protocol: dict[str, Any], seeds: tuple[int, ...], runs: list[dict[str, Any]], threshold: float, rule: str,
    **extra: Any,
) -> dict[str, Any]:
    """The ``training`` entry of a lab graded on an evaluated return, from :func:`evaluated_return_run` rows."""
    returns = [r["return"] for r in runs]
    return {
        "protocol": dict(protocol),
        "reference_seeds": list(seeds),
        "reference_returns": [round(r, 2) for r in returns],
        "reference_mean": round(sum(returns) / len(returns), 2),
        "reference_min": round(min(returns), 2),
        **extra,
        "threshold": threshold,
        "threshold_rule": rule,
        "runs": runs,
    }


def pin_lab2(seeds: tuple[int, ...] = LAB2_SEEDS, workers: int | None = None) -> dict[str, Any]:
    """Train the reference PPO under :data:`rlcourse.grading.lab2.PROTOCOL` on ``seeds``."""
    from rlcourse.grading import lab2

    run = functools.partial(evaluated_return_run, lab2.train_and_evaluate, lab2.PROTOCOL["metric"])
    seeds, runs, seconds = reference_runs(run, seeds, lab2.PROTOCOL["seed"], workers)
    returns = [r["return"] for r in runs]
    worst = min(returns)
    # A reference that does not learn would make any pass mark meaningless.
    if worst < 100:
        raise RuntimeError(f"the reference PPO reached only {worst:.1f} on some seed ({returns}); not pinning")
    return {
        "gae": {
            "check": "compute_gae vs rlcourse.algos.ppo.compute_gae on rlcourse.grading.lab2.gae_cases()",
            "tolerance": dict(lab2.DEFAULT_TOLERANCES),
        },
        "surrogate": {
            "check": "value and d/dlog_probs vs rlcourse.algos.ppo.clipped_surrogate_loss on lab2.surrogate_cases()",
            "tolerance": dict(lab2.DEFAULT_TOLERANCES),
        },
        "training": return_training_entry(lab2.PROTOCOL, seeds, runs, float(round(MARGIN * worst)),
                                          f"round({MARGIN} * reference_min)"),
        "produced_by": "rlcourse pin lab2_ppo (rlcourse.grading.pins.pin_lab2 -> lab2.train_and_evaluate "
                       "with the reference compute_gae and clipped_surrogate_loss)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(seconds, 1),
        "versions": versions(),
    }


# The module of each lab's hidden checks, imported only when needed. It has the lab's
# ``agent_config()`` and, except lab 2 (whose pinner is :func:`pin_lab2` here), its ``pin()``:
# a function returning the lab's entry of pinned_metrics.json.
LAB_MODULES: dict[str, str] = {
    "lab1_dqn": "rlcourse.grading.lab1",
    "lab2_ppo": "rlcourse.grading.lab2",
    "lab3_reward_shaping": "rlcourse.grading.lab3",
    "lab4_domain_randomization": "rlcourse.grading.lab4",
    "lab5_sac": "rlcourse.grading.lab5",
}


def config_dict(cfg: Any) -> dict[str, Any]:
    """An algorithm config dataclass as the JSON the pins store (tuples become lists)."""
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def built_config(env_id: str, num_envs: int, make_agent: Callable[[Any], Any]) -> dict[str, Any]:
    """:func:`config_dict` of ``make_agent(env)``'s config, on a fresh ``env_id`` env (no training).

    Each lab's ``agent_config()`` passes the constructor its graded run uses.
    """
    import rlcourse

    env = rlcourse.envs.make(env_id, num_envs=num_envs, seed=0)
    try:
        return config_dict(make_agent(env).cfg)
    finally:
        env.close()


def agent_config(lab: str) -> dict[str, Any]:
    """The hyperparameters (every field of the algorithm's config) that ``lab``'s graded run trains
    with today: its protocol on top of ``presets/*.yaml`` (lab 4: the pretrained checkpoint's).
    ``rlcourse pin`` stores them with the pins; ``rlcourse grade`` compares (:func:`stale_config`)."""
    import importlib

    return importlib.import_module(LAB_MODULES[lab]).agent_config()


def stale_config(lab: str, training: dict[str, Any]) -> str | None:
    """``None`` if the pinned ``agent_config`` is what ``lab``'s graded run trains with today, else a
    message naming the fields that differ: a preset edited after pinning changes the graded run,
    so its pass mark no longer describes the reference."""
    pinned = training.get("agent_config")
    if pinned is None:
        return f"the pins of {lab} do not record the agent's hyperparameters; run `rlcourse pin {lab}`"
    current = agent_config(lab)
    changed = sorted(k for k in {*pinned, *current} if pinned.get(k) != current.get(k))
    if not changed:
        return None
    fields = ", ".join(f"{k}: pinned {pinned.get(k)!r}, now {current.get(k)!r}" for k in changed)
    return (f"{lab}'s graded run now trains with other hyperparameters than the pinned reference "
            f"({fields}); run `rlcourse pin {lab}`")


def check_pins_current(course_dir: Path, labs: Iterable[str]) -> None:
    """Raise ``RuntimeError`` if the pins of one of ``labs`` were measured with other
    hyperparameters than its graded run uses now (labs without a training pin, or a course
    without pins, pass)."""
    path = course_dir / PINS_RELPATH
    if not path.exists():
        return
    pinned = json.loads(path.read_text())
    for lab in labs:
        training = pinned.get(lab, {}).get("training") if lab in LAB_MODULES else None
        if training is not None and (message := stale_config(lab, training)) is not None:
            raise RuntimeError(message)


def _pinner(lab: str) -> Callable[[], dict[str, Any]]:
    """The pin function of ``lab`` (its module is imported only now)."""
    import importlib

    if lab == "lab2_ppo":
        return pin_lab2
    return importlib.import_module(LAB_MODULES[lab]).pin


def write_pins(course_dir: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Merge ``entries`` into ``autograder/pinned_metrics.json`` (other labs' pins are kept)."""
    path = course_dir / PINS_RELPATH
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def pin(lab: str | None = None, course_dir: str | os.PathLike | None = None) -> int:
    """Re-measure the pinned metrics of ``lab`` (default: every lab that has a pinner).

    Returns the exit status (0). Unknown labs raise ``ValueError`` (the CLI prints one line).
    """
    root = find_course_dir(course_dir)
    known = set(LAB_MODULES)
    if lab is None:
        labs = [name for name in list_labs(root) if name in known]
    elif lab not in known:
        raise ValueError(f"no pinned metrics are defined for {lab!r}; labs with pins: {', '.join(sorted(known))}")
    else:
        labs = [lab]
    for name in labs:
        print(f"pinning {name}: training the reference solution on several seeds ...", flush=True)
        entry = _pinner(name)()
        entry["training"]["agent_config"] = agent_config(name)
        path = write_pins(root, {name: entry})
        summary = entry.get("training", {})
        # lab 3 pins speeds, lab 4 the randomized policy's mean over the grid
        values = next((summary[k] for k in ("reference_returns", "reference_values", "reference_mean_randomized")
                       if k in summary), None)
        print(f"{name}: reference returns {values} -> threshold "
              f"{summary.get('threshold')} ({entry['wall_time_s']} s); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(pin(*(sys.argv[1:2] or [None])))
