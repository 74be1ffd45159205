"""Shared fixtures: a tiny, fast PPO configuration, env factories and CLI helpers.

Everything here is sized for a 2-core CPU machine: the tiny PPO does one iteration
in a few milliseconds, and the one CLI training run that several tests inspect is
started once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from rlcourse import envs
from rlcourse.algos import PPO

# The networks in these tests are tiny, so intra-op threads only add synchronization
# cost; on a busy 2-core machine they oversubscribe it (PPO iterations measured 4x
# slower with 2 threads). RLCOURSE_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("RLCOURSE_TEST_THREADS", "1")))

# Small networks, short rollouts, few epochs: fast enough for unit tests, while still
# exercising every code path (normalizer, minibatches, schedules).
TINY_PPO: dict[str, Any] = {
    "num_steps_per_env": 16,
    "num_learning_epochs": 2,
    "num_mini_batches": 2,
    "actor_hidden": (16, 16),
    "critic_hidden": (16, 16),
    "activation": "tanh",
    "schedule": "constant",
    "learning_rate": 3e-3,
}

# CLI arguments that shrink the CartPole preset's networks and update to TINY_PPO's sizes
# (rollout length and schedule stay the preset's).
TINY_PPO_SETS = [
    "--set", "num_learning_epochs=2",
    "--set", "num_mini_batches=2",
    "--set", "actor_hidden=[16,16]",
    "--set", "critic_hidden=[16,16]",
]


@pytest.fixture
def tiny_ppo_sets() -> list[str]:
    """``--set`` arguments that shrink the CLI's PPO to the tiny configuration."""
    return list(TINY_PPO_SETS)


@pytest.fixture
def make_env() -> Callable[..., envs.VecEnv]:
    """``make_env(env_id, num_envs=2, seed=0, **kw)``; every env made is closed after the test."""
    made: list[envs.VecEnv] = []

    def _make(env_id: str = "CartPole-v1", num_envs: int = 2, seed: int | None = 0, **kwargs: Any) -> envs.VecEnv:
        env = envs.make(env_id, num_envs=num_envs, seed=seed, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


@pytest.fixture
def tiny_ppo(make_env: Callable[..., envs.VecEnv]) -> Callable[..., PPO]:
    """``tiny_ppo(env_id="CartPole-v1", seed=0, num_envs=4, **overrides)`` -> a PPO on TINY_PPO, with its env."""

    def _make(env_id: str = "CartPole-v1", seed: int = 0, num_envs: int = 4, **overrides: Any) -> PPO:
        env = make_env(env_id, num_envs=num_envs, seed=seed)
        return PPO(env, seed=seed, preset=None, **{**TINY_PPO, **overrides})

    return _make


def run_iterations(agent: Any, env: envs.VecEnv, iterations: int) -> list[dict[str, float]]:
    """Drive ``iterations`` rollout/update cycles by hand (the runner protocol) and return the losses.

    Unlike ``agent.learn`` this exposes each update's loss dictionary, which the
    determinism tests compare.
    """
    losses = []
    obs, _ = env.reset(seed=agent.seed)
    for _ in range(iterations):
        with torch.inference_mode():
            for _ in range(agent.num_steps_per_env):
                actions = agent.act(obs)
                obs, rewards, terminated, truncated, extras = env.step(actions)
                agent.process_env_step(obs, rewards, terminated, truncated, extras)
            agent.compute_returns(obs)
        losses.append(agent.update())
    return losses


@pytest.fixture
def iterate() -> Callable[..., list[dict[str, float]]]:
    """The :func:`run_iterations` helper as a fixture (tests/ is not a package)."""
    return run_iterations


# ----------------------------------------------------------------------------- CLI
def _cli_command() -> list[str]:
    # Prefer the installed console script: that is what students type.
    script = Path(sys.executable).with_name("rlcourse")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlcourse.cli"]


def cli(args: list[str], cwd: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``rlcourse ARGS`` in a subprocess with stdin closed; returns the completed process."""
    env = dict(os.environ, RLCOURSE_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))  # same reasoning as above
    env.pop("RLCOURSE_DEBUG", None)  # it turns one-line errors into tracebacks
    return subprocess.run(
        _cli_command() + list(args), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(args, cwd, timeout=300)``: the real ``rlcourse`` entry point in a subprocess."""
    return cli


@pytest.fixture
def cli_command() -> list[str]:
    """The argv prefix that starts the ``rlcourse`` CLI (for tests that manage the process)."""
    return _cli_command()


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One finished ``rlcourse train ppo --env CartPole-v1 --tensorboard`` run, shared by CLI/export tests.

    4 envs x 32 steps = 128 steps per iteration, 8 iterations; checkpoints every 2.
    """
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    proc = cli(
        ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "4", "--total-steps", "1024", "--seed", "0",
         "--run-dir", str(run_dir), "--tensorboard", "--no-progress", "--eval-episodes", "3",
         "--checkpoint-every", "2", *TINY_PPO_SETS],
        cwd=root,
    )
    assert proc.returncode == 0, f"training failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return run_dir, proc


# Seconds each long group of tests took in a full `make test` (2 workers; 2026-12-06, a 2-core
# AMD EPYC, 17 min in all, 2015 s of tests; an Intel Xeon was ~1.7x faster), used only to order
# them: the longest start first, so the two workers finish at about the same time
# (longest-processing-time-first scheduling). A group is a test file, except that each lab's
# round trip is a group of its own. A group not listed counts as short.
GROUP_SECONDS = {
    "test_labs_roundtrip.py[lab6_quadruped_capstone]": 525,
    "test_grading_parallel.py": 90, "test_grading_hostile.py": 90, "test_labs_roundtrip.py[lab3_reward_shaping]": 85,
    "test_labs_roundtrip.py[lab4_domain_randomization]": 190, "test_book.py": 60, "test_grading_inputs.py": 45,
    "test_labs_roundtrip.py[lab2_ppo]": 40, "test_labs_roundtrip.py[lab5_sac]": 40, "test_labs_roundtrip.py[lab1_dqn]": 35,
    "test_locomotion_learning.py": 30, "test_pins.py": 22, "test_browser_tensorboard.py": 21,
    "test_learning_offpolicy.py[dqn-cartpole]": 19, "test_learning_offpolicy.py[sac-pendulum]": 10,
    "test_learning_offpolicy.py[ddpg-pendulum]": 7, "test_distributed.py": 15, "test_live_tensorboard_helper.py": 12,
    "test_labs_in_sync.py": 10, "test_learning_ppo.py": 10, "test_browser_video.py": 12, "test_browser_lab3.py": 9,
    "test_tensorboard_live.py": 8,
    # one group per lecture (test_course_notebooks.py), so the lectures spread over both workers
    "test_course_notebooks.py[07_domain_randomization_and_sim_to_real]": 45,
    "test_course_notebooks.py[04_off_policy_ddpg_and_sac]": 42, "test_course_notebooks.py[02_value_based_rl_dqn]": 29,
    "test_course_notebooks.py[08_monitoring_and_deployment]": 19, "test_course_notebooks.py[03_policy_gradients_and_ppo]": 17,
    "test_course_notebooks.py[06_reward_engineering]": 12,
}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run ``make test`` ungrouped: a split group sets up its module fixtures (a whole
    grading batch) once per worker. (pytest 9 + pytest-xdist 3.8 silently dropped the groups.)"""
    if getattr(session.config.option, "loadgroup", False):  # set in pytest-xdist's workers
        if session.items and "@" not in session.items[0].nodeid:
            raise pytest.UsageError("pytest-xdist's --dist loadgroup is not grouping the tests with this pytest "
                                    f"({pytest.__version__}); install the versions pyproject.toml allows")


def _group(item: pytest.Item) -> str:
    """The scheduling group of a test: its file, file[lab] for a lab's round trip, file[lecture]
    for a lecture's execution, file[case] for an off-policy learning run."""
    name = item.path.name
    params = item.callspec.params if hasattr(item, "callspec") else {}
    if name == "test_labs_roundtrip.py" and "lab" in params:
        return f"{name}[{params['lab']}]"
    if name == "test_course_notebooks.py" and "path" in params:
        return f"{name}[{Path(params['path']).stem}]"
    if name == "test_learning_offpolicy.py" and params:
        return f"{name}[{item.callspec.id}]"
    return name


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for the two ``make test`` workers and run the longest groups first.

    ``make test`` runs pytest-xdist with ``--dist loadgroup --no-loadscope-reorder``: a group
    runs on one worker (module fixtures such as a grading batch stay in one process), groups
    are handed out in collection order. Started last, a long group would leave one worker idle
    at the end while the other works through it alone.
    """
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    items.sort(key=lambda item: -GROUP_SECONDS.get(_group(item), 0))  # stable: keeps each file's order
