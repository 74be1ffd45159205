"""Best policy kept: periodic evaluation, ``policy.pt`` = best, ``policy_last.pt`` = last, resume, determinism.

Most tests script the evaluation returns (``rlcourse.runner.evaluate`` replaced by a stub) so
that which policy is best is known in advance; the determinism test runs the real evaluation.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from rlcourse import envs
from rlcourse.algos import DQN, PPO
from rlcourse.cli import main
from rlcourse.export import load_policy
from rlcourse.runner import Runner

NUM_ENVS = 2
STEPS_PER_ITER = NUM_ENVS * 16   # tiny PPO: 16 steps per env per iteration
TINY = {"num_steps_per_env": 16, "num_learning_epochs": 2, "num_mini_batches": 2, "actor_hidden": (16, 16),
        "critic_hidden": (16, 16), "schedule": "constant", "learning_rate": 3e-3}


class ScriptedEvaluation:
    """Stands in for :func:`rlcourse.evaluation.evaluate`: returns the scripted means in turn and
    remembers a copy of the policy it was shown at each env step."""

    def __init__(self, returns: list[float]) -> None:
        self.returns = list(returns)
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, agent: Any, env: Any, episodes: int = 10, seed: int | None = None) -> dict[str, Any]:
        self.seen[agent.global_step] = copy.deepcopy(agent.inference_policy().state_dict())
        value = self.returns.pop(0)
        return {"episode_return_mean": value, "episode_return_std": 0.0, "episode_length_mean": 10.0,
                "episodes": episodes, "returns": [value] * episodes}


def _agent(seed: int = 0) -> PPO:
    return PPO(envs.make("CartPole-v1", num_envs=NUM_ENVS, seed=seed), seed=seed, preset=None, **TINY)


def _runner(agent: PPO, run_dir: Path | None, **kw: Any) -> Runner:
    kw = {"eval_every": STEPS_PER_ITER, "eval_episodes": 2, "checkpoint_every": 1, "progress": False, **kw}
    return Runner(agent, agent.env, run_dir=run_dir, **kw)


def _same_weights(scripted: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = scripted.state_dict()
    return mine.keys() == state.keys() and all(torch.equal(mine[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Runner, ScriptedEvaluation]:
    """4 iterations, an evaluation after each; the second (step 64) scores best, later ones worse."""
    run_dir = tmp_path_factory.mktemp("best") / "run"
    fake = ScriptedEvaluation([10.0, 50.0, 20.0, 30.0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rlcourse.runner.evaluate", fake)
        agent = _agent()
        runner = _runner(agent, run_dir)
        runner.learn(4 * STEPS_PER_ITER)
        agent.env.close()
    return run_dir, runner, fake


def test_best_is_kept_when_a_later_evaluation_is_worse(scripted_run) -> None:
    run_dir, runner, fake = scripted_run
    assert sorted(fake.seen) == [32, 64, 96, 128] and fake.returns == []   # one evaluation per eval_every, none twice
    assert (runner.best_eval_return, runner.best_eval_step) == (50.0, 64)
    assert _same_weights(load_policy(run_dir / "policy.pt"), fake.seen[64])
    assert _same_weights(load_policy(run_dir / "policy_last.pt"), fake.seen[128])
    assert not _same_weights(load_policy(run_dir / "policy.pt"), fake.seen[128])   # training did move on


def test_metrics_json_names_best_and_last(scripted_run) -> None:
    run_dir, _, _ = scripted_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_eval_return"] == 50.0 and metrics["best_eval_step"] == 64
    assert metrics["last_eval_return"] == 30.0 and metrics["last_eval_step"] == 128
    assert metrics["policy_pt"] == "best" and metrics["eval_every"] == STEPS_PER_ITER
    assert metrics["episode_return_mean"] == 30.0   # the unprefixed keys stay the last policy's final evaluation
    assert not list(run_dir.rglob("*.tmp"))


def test_eval_uses_the_best_policy_unless_told_otherwise(scripted_run, capsys, monkeypatch) -> None:
    run_dir, _, _ = scripted_run
    loaded: list[str] = []

    def spy(path):
        loaded.append(Path(path).name)
        return load_policy(path)

    monkeypatch.setattr("rlcourse.export.load_policy", spy)
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "best"
    assert main(["eval", str(run_dir), "--episodes", "2", "--which", "last"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "last"
    assert loaded == ["policy.pt", "policy_last.pt"]


def test_resume_keeps_the_best_so_far(tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    first = ScriptedEvaluation([50.0, 10.0])   # the best comes before the checkpoint we resume from
    monkeypatch.setattr("rlcourse.runner.evaluate", first)
    agent = _agent()
    _runner(agent, run_dir).learn(2 * STEPS_PER_ITER)
    state = torch.load(run_dir / "checkpoints" / "ckpt_0000000064.pt", weights_only=False)
    assert (state["runner"]["best"]["return"], state["runner"]["best"]["step"]) == (50.0, 32)

    second = ScriptedEvaluation([20.0, 30.0])
    monkeypatch.setattr("rlcourse.runner.evaluate", second)
    resumed = _agent()
    runner = _runner(resumed, run_dir)
    runner.resume()
    assert (runner.best_eval_return, runner.best_eval_step) == (50.0, 32)
    runner.learn(4 * STEPS_PER_ITER)
    assert sorted(second.seen) == [96, 128]
    assert (runner.best_eval_return, runner.best_eval_step) == (50.0, 32)
    assert _same_weights(load_policy(run_dir / "policy.pt"), first.seen[32])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["best_eval_step"], metrics["last_eval_step"], metrics["last_eval_return"]) == (32, 128, 30.0)
    for a in (agent, resumed):
        a.env.close()


def _tiny_dqn(seed: int) -> DQN:
    env = envs.make("CartPole-v1", num_envs=NUM_ENVS, seed=seed)
    return DQN(env, seed=seed, preset=None, num_steps_per_env=16, gradient_steps=4, batch_size=16,
               buffer_size=1000, learning_starts=32, hidden=(16,), target_update_interval=8)


@pytest.mark.parametrize("make", [_agent, _tiny_dqn], ids=["ppo", "dqn"])
def test_evaluating_does_not_change_training(make) -> None:
    """The same seed trains bit-identical last policies with and without periodic evaluation (real evaluate)."""
    finals = []
    for eval_every in (0, STEPS_PER_ITER):
        agent = make(3)
        runner = _runner(agent, None, eval_every=eval_every, eval_episodes=2 if eval_every else 0)
        runner.learn(4 * STEPS_PER_ITER)
        finals.append({k: v.clone() for k, v in agent.inference_policy().state_dict().items()})
        agent.env.close()
    assert runner.best_eval_step is not None   # the second run did evaluate
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


@pytest.mark.parametrize(
    "argv, message",
    [pytest.param(["--eval-every", "-5"], r"--eval-every: expected a non-negative integer, got '-5'", id="negative"),
     pytest.param(["--eval-every", "ten"], r"--eval-every: expected a non-negative integer, got 'ten'", id="text"),
     pytest.param(["--eval-episodes", "-1"], r"--eval-episodes: expected a non-negative integer", id="neg-episodes"),
     pytest.param(["--eval-every", "100", "--eval-episodes", "0"], r"--eval-every 100 needs --eval-episodes > 0",
                  id="every-without-episodes")],
)
def test_bad_schedule_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLCOURSE_DEBUG", raising=False)
    try:
        code = main(["train", "ppo", "--env", "CartPole-v1", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_runner_rejects_a_bad_schedule() -> None:
    agent = _agent()
    with pytest.raises(ValueError, match="eval_every must be >= 0"):
        Runner(agent, agent.env, eval_every=-1)
    with pytest.raises(ValueError, match="needs eval_episodes > 0"):
        Runner(agent, agent.env, eval_every=100, eval_episodes=0)
    agent.env.close()


def test_eval_last_of_an_older_run_is_a_clear_error(scripted_run, tmp_path, capsys) -> None:
    run_dir, _, _ = scripted_run
    old = tmp_path / "old"
    old.mkdir()
    for name in ("run.yaml", "policy.pt"):   # what a run from before policy_last.pt holds
        (old / name).write_bytes((run_dir / name).read_bytes())
    assert main(["eval", str(old), "--which", "last"]) == 2
    assert "has no policy_last.pt" in capsys.readouterr().err


def test_an_evaluation_drawing_random_numbers_does_not_shift_training(monkeypatch) -> None:
    """An eval env may draw from the global generators (a domain randomizer, say): they are put back."""
    from rlcourse.evaluation import evaluate

    def drawing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        torch.rand(3), torch.randn(2)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr("rlcourse.runner.evaluate", drawing)
    finals = []
    for eval_every in (0, STEPS_PER_ITER):
        agent = _agent(3)
        _runner(agent, None, eval_every=eval_every, eval_episodes=2 if eval_every else 0).learn(4 * STEPS_PER_ITER)
        finals.append([p.detach().clone() for p in agent.actor_critic.parameters()])
        agent.env.close()
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))
