"""``progress.csv``: every scalar the runner logs reaches the file, even one that first appears late."""

from __future__ import annotations

import csv

import rlcourse
from rlcourse.algos import SAC
from rlcourse.runner import Runner, _append_csv_row


def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_key_that_appears_later_widens_the_header(tmp_path) -> None:
    path = tmp_path / "progress.csv"
    _append_csv_row(path, {"iteration": 1, "global_step": 100, "charts/episode_return": 3.5})
    _append_csv_row(path, {"iteration": 2, "global_step": 200, "losses/critic_loss": 0.25, "episode/rew_alive": 1.0})
    _append_csv_row(path, {"iteration": 3, "global_step": 300, "losses/critic_loss": 0.125})
    rows = _read(path)
    assert [r["global_step"] for r in rows] == ["100", "200", "300"]
    assert [r["losses/critic_loss"] for r in rows] == ["", "0.25", "0.125"]
    assert [r["episode/rew_alive"] for r in rows] == ["", "1.0", ""]
    assert rows[0]["charts/episode_return"] == "3.5"
    assert not list(tmp_path.glob(".*.tmp"))  # the rewrite went through a temporary file and a rename


def test_off_policy_losses_logged_after_the_warm_up_reach_the_csv(tmp_path) -> None:
    # The first logged rows come before learning_starts (no losses yet); the losses that come
    # later must still get their columns.
    env = rlcourse.envs.make("Pendulum-v1", num_envs=1, seed=0)
    agent = SAC(env, seed=0, learning_starts=200, batch_size=32)
    Runner(agent, env, run_dir=tmp_path, eval_episodes=0, progress=False, tensorboard=False,
           log_interval_steps=100).learn(400)
    rows = _read(tmp_path / "progress.csv")
    assert len(rows) == 4
    critic = [r["losses/critic_loss"] for r in rows]
    assert critic[0] == "" and all(float(v) > 0 for v in critic[2:]), critic
