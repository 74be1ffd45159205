"""The ``rlcourse`` command line: one-line errors for bad input, and a full train -> eval round trip."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

from rlcourse.cli import main

# (argv, what the single error line must say)
BAD_TRAIN = [
    pytest.param(["train", "sac9", "--env", "CartPole-v1"], r"unknown algorithm 'sac9'", id="unknown-algo"),
    pytest.param(["train", "ppo", "--env", "CartPol-v1"], r"unknown environment id 'CartPol-v1'.*CartPole-v1",
                 id="unknown-env"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "-5"],
                 r"--total-steps: expected a positive integer, got '-5'", id="negative-steps"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "0"],
                 r"--total-steps: expected a positive integer", id="zero-steps"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--num-envs", "two"],
                 r"--num-envs: expected a positive integer, got 'two'", id="non-numeric-envs"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--set", "gama=0.9"],
                 r"unknown PPOConfig field 'gama'.*did you mean 'gamma'", id="unknown-set-field"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--set", "gamma=abc"],
                 r"PPOConfig.gamma .* must be float, got 'abc'", id="mistyped-set-value"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--set", "gamma"], r"--set expects NAME=VALUE",
                 id="set-without-value"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--set", "schedule=cosine"],
                 r"schedule must be constant, linear or adaptive", id="invalid-set-choice"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--resume"], r"--resume needs --run-dir",
                 id="resume-without-run-dir"),
    pytest.param(["train", "ppo", "--env", "CartPole-v1", "--resume", "--run-dir", "no_such_run"],
                 r"--resume needs --run-dir pointing at an existing run", id="resume-missing-run"),
    pytest.param(["train", "ppo"], r"--env is required", id="no-env"),
    pytest.param(["eval", "no_such_run"], r"no_such_run is not a finished run directory", id="eval-missing-run"),
    pytest.param(["eval", "no_such_run", "--episodes", "-1"], r"--episodes: expected a positive integer",
                 id="eval-negative-episodes"),
]


def _call(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``main(argv)`` in this process; argparse errors arrive as SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", BAD_TRAIN)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a mistaken run would write runs/ here, not into the repository
    monkeypatch.delenv("RLCOURSE_DEBUG", raising=False)
    code, out, err = _call(argv, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rlcourse"), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_resume_of_a_run_without_checkpoint(capsys, tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.yaml").write_text(yaml.safe_dump({"algo": "ppo", "env": "CartPole-v1"}))
    code, _, err = _call(["train", "ppo", "--run-dir", str(run_dir), "--resume"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "has no checkpoint to resume from" in err


def test_existing_run_is_not_overwritten(capsys, tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.yaml").write_text("algo: ppo\n")
    code, _, err = _call(["train", "ppo", "--env", "CartPole-v1", "--run-dir", str(run_dir)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "already holds a run" in err
    assert (run_dir / "run.yaml").read_text() == "algo: ppo\n"


@pytest.mark.parametrize(
    "argv, message",
    [pytest.param(["train", "nope", "--env", "CartPole-v1"], "unknown algorithm 'nope'", id="handler-error"),
     # argparse errors are covered in-process above; the second process start is for the full suite.
     pytest.param(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "-5"], "expected a positive integer",
                  id="argparse-error", marks=pytest.mark.slow)],
)
def test_console_script_reports_one_line(argv, message, run_cli, tmp_path) -> None:
    """The installed entry point, in a real process: exit 2, one stderr line, no traceback."""
    proc = run_cli(argv, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_train_prints_tensorboard_url_and_metrics(cartpole_run) -> None:
    run_dir, proc = cartpole_run
    assert re.search(r"TensorBoard: http://127\.0\.0\.1:\d+/", proc.stdout), proc.stdout
    # The last thing printed is the metrics JSON.
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_run_directory_contents(cartpole_run) -> None:
    run_dir, _ = cartpole_run
    assert list(run_dir.glob("events.out.tfevents.*"))
    for name in ("progress.csv", "policy.pt", "learning_curve.png", "metrics.json", "run.yaml"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    # Checkpoints every 2 iterations of 128 steps; the runner keeps the newest 3.
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["ckpt_0000000512.pt", "ckpt_0000000768.pt", "ckpt_0000001024.pt"]
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("episode_return_mean", "episode_return_std", "episodes", "total_steps", "wall_time_s",
                "steps_per_second"):
        assert key in metrics, key
    assert metrics["episodes"] == 3 and metrics["total_steps"] == 1024
    assert metrics["steps_per_second"] > 0 and metrics["wall_time_s"] > 0
    assert 8 <= metrics["episode_return_mean"] <= 500

    info = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert (info["algo"], info["env"], info["num_envs"], info["seed"]) == ("ppo", "CartPole-v1", 4, 0)
    assert info["hyperparameters"]["num_learning_epochs"] == 2  # from --set
    assert info["hyperparameters"]["actor_hidden"] == [16, 16]
    assert info["hyperparameters"]["gamma"] == 0.98  # from the CartPole preset

    with (run_dir / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["global_step"] == "1024"
    for column in ("charts/episode_return", "charts/episode_length", "charts/steps_per_second",
                   "losses/policy_loss", "losses/value_loss"):
        assert column in rows[0], column


@pytest.mark.slow
def test_tensorboard_events_hold_the_scalars(cartpole_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = cartpole_run
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episode_return", "charts/episode_length", "charts/steps_per_second",
                "losses/policy_loss", "losses/value_loss", "eval/episode_return_mean"):
        assert tag in tags, tag
    assert acc.Scalars("losses/value_loss")[-1].step == 1024


@pytest.mark.slow
def test_eval_prints_metrics_json(cartpole_run, run_cli, tmp_path) -> None:
    run_dir, _ = cartpole_run
    proc = run_cli(["eval", str(run_dir), "--episodes", "5"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["episodes"] == 5
    assert (result["algo"], result["env"]) == ("ppo", "CartPole-v1")
    assert result["episode_return_std"] >= 0
    assert 8 <= result["episode_return_mean"] <= 500
    # Same seed -> same evaluation.
    again = run_cli(["eval", str(run_dir), "--episodes", "5"], cwd=tmp_path, timeout=120)
    assert json.loads(again.stdout) == result
