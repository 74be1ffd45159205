"""Checkpoints: atomic writes, exact resumption, and a training process killed with SIGKILL."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from rlcourse.algos import PPO
from rlcourse.runner import Runner, atomic_save, latest_checkpoint


def _params(agent: PPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.actor_critic.parameters()]


def test_resume_from_checkpoint_continues_exactly(tiny_ppo, iterate, tmp_path) -> None:
    """Train 2 + 2 iterations with a save/load in between == 4 iterations straight through.

    The environment itself is not part of a checkpoint, so both continuations start from
    the same env reset (`iterate` resets with the agent's seed); everything else (weights,
    Adam moments, normalizer, RNG streams, counters) must come from the checkpoint.
    """
    agent = tiny_ppo("CartPole-v1", seed=0, num_envs=2)
    iterate(agent, agent.env, 2)
    path = tmp_path / "agent.pt"
    agent.save(path)
    iterate(agent, agent.env, 2)

    restored = PPO.load(path, env=tiny_ppo("CartPole-v1", seed=0, num_envs=2).env)
    assert (restored.global_step, restored.iteration) == (2 * 16 * 2, 2)
    iterate(restored, restored.env, 2)
    assert (restored.global_step, restored.iteration) == (agent.global_step, agent.iteration)
    for a, b in zip(_params(agent), _params(restored), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(agent.obs_normalizer.var, restored.obs_normalizer.var)


def test_atomic_save_leaves_old_file_intact_on_failure(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # the temporary file was removed


def test_runner_keeps_latest_checkpoints(tiny_ppo, tmp_path) -> None:
    agent = tiny_ppo("CartPole-v1", num_envs=2)
    runner = Runner(agent, agent.env, run_dir=tmp_path, checkpoint_every=1, keep_checkpoints=2,
                    eval_episodes=0, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        runner.resume()
    runner.learn(4 * 16 * 2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_0000000096.pt", "ckpt_0000000128.pt"]
    assert latest_checkpoint(tmp_path).name == "ckpt_0000000128.pt"
    state = torch.load(latest_checkpoint(tmp_path), weights_only=False)
    assert (state["global_step"], state["iteration"]) == (128, 4)


def test_resume_cleans_up_after_a_crash(tiny_ppo, tmp_path) -> None:
    """Rows logged after the last checkpoint, a half-written row and stale temp files are removed."""
    agent = tiny_ppo("CartPole-v1", num_envs=2)
    Runner(agent, agent.env, run_dir=tmp_path, checkpoint_every=2, log_interval_steps=1,
           eval_episodes=0, progress=False).learn(2 * 16 * 2)
    progress = tmp_path / "progress.csv"
    header = progress.read_text().splitlines()[0]
    assert _progress_steps(tmp_path) == [32, 64]
    # What a process killed during iteration 4 (after logging iteration 3) leaves behind:
    n_columns = header.count(",") + 1
    with progress.open("a") as f:
        f.write("3,96" + ",0.5" * (n_columns - 2) + "\n")  # logged, never checkpointed
        f.write("4,128,0.7,")  # cut mid-line
    stale = [tmp_path / "checkpoints" / ".ckpt_0000000096.pt.abc123.tmp", tmp_path / ".policy.pt.x1.tmp"]
    for path in stale:
        path.write_bytes(b"partial")

    resumed = tiny_ppo("CartPole-v1", num_envs=2)
    runner = Runner(resumed, resumed.env, run_dir=tmp_path, checkpoint_every=2, log_interval_steps=1,
                    eval_episodes=0, progress=False)
    assert runner.resume().name == "ckpt_0000000064.pt"
    assert _progress_steps(tmp_path) == [32, 64]
    assert progress.read_text().splitlines()[0] == header
    assert not any(p.exists() for p in stale)
    runner.learn(4 * 16 * 2)
    assert _progress_steps(tmp_path) == [32, 64, 96, 128]


# --------------------------------------------------------------------------- kill -9 and --resume
STEPS_PER_ITER = 8 * 128  # >= the runner's 1000-step log interval, so progress.csv gets a row per iteration
TOTAL = 4 * STEPS_PER_ITER


def _progress_steps(run_dir: Path) -> list[int]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return [int(row["global_step"]) for row in csv.DictReader(f)]


def _leftover_temp_files(run_dir: Path) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_training_resumes_from_its_checkpoint(tmp_path, cli_command, run_cli, tiny_ppo_sets) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "8", "--total-steps", str(TOTAL),
            "--seed", "1", "--run-dir", str(run_dir), "--checkpoint-every", "1", "--no-progress",
            "--eval-episodes", "2", "--set", "num_steps_per_env=128", *tiny_ppo_sets]
    env = dict(os.environ, RLCOURSE_NO_PROGRESS="1")
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    proc = subprocess.Popen(cli_command + args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_dir = run_dir / "checkpoints"
    try:
        deadline = time.monotonic() + 240
        while not (ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt_*.pt"))):
            assert proc.poll() is None, f"training exited early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint appeared within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"

    # Every checkpoint file that exists is complete (written to a temp file, then renamed).
    ckpts = sorted(ckpt_dir.glob("ckpt_*.pt"))
    for path in ckpts:
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["global_step"] == int(re.search(r"ckpt_(\d+)", path.name).group(1))
    saved = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    saved_step = saved["global_step"]
    assert saved_step % STEPS_PER_ITER == 0 and 0 < saved_step < TOTAL
    hp_before = yaml.safe_load((run_dir / "run.yaml").read_text())["hyperparameters"]

    proc = run_cli(["train", "ppo", "--run-dir", str(run_dir), "--resume", "--no-progress", "--eval-episodes", "2"],
                   cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr
    assert f"at step {saved_step}" in proc.stdout

    # progress.csv continues from the checkpoint: one row per iteration, no gap, no repeat.
    assert _progress_steps(run_dir) == list(range(STEPS_PER_ITER, TOTAL + 1, STEPS_PER_ITER))
    run_info = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert run_info["hyperparameters"] == hp_before
    assert (run_info["seed"], run_info["num_envs"], run_info["total_steps"]) == (1, 8, TOTAL)
    final = torch.load(latest_checkpoint(run_dir), map_location="cpu", weights_only=False)
    assert (final["global_step"], final["iteration"]) == (TOTAL, TOTAL // STEPS_PER_ITER)
    assert final["config"] == saved["config"]
    assert final["config"]["num_steps_per_env"] == 128 and final["config"]["num_learning_epochs"] == 2
    for name in ("policy.pt", "metrics.json", "learning_curve.png"):
        assert (run_dir / name).exists(), name
    assert _leftover_temp_files(run_dir) == []
