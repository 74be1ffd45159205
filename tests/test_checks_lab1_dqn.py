"""Lab 1 (DQN) hidden checks, in both modes (in-process as in the instructor's notebook, and
graded: the sandbox half, records reloaded as tensors only, the judge): the reference passes,
every wrong implementation a student is likely to write is rejected with a message that names
the mistake and shows no expected numbers, and the training check re-evaluates the recorded
agent against the pinned pass mark. (The full nbgrader round trip of the lab is in
tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from rlcourse.algos import dqn as reference
from rlcourse.grading import lab1_dqn as checks

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab1_dqn"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong student code
def eps_other_actions_only(q, eps, g):
    """An exploring row never re-draws the greedy action, only the other ones."""
    n, num_actions = q.shape
    greedy = q.argmax(1)
    explore = torch.rand(n, generator=g) < eps
    offset = torch.randint(1, num_actions, (n,), generator=g)
    return torch.where(explore, (greedy + offset) % num_actions, greedy)


def eps_global_rng(q, eps, g):
    n, num_actions = q.shape
    explore = torch.rand(n) < eps
    return torch.where(explore, torch.randint(0, num_actions, (n,)), q.argmax(1))


def eps_one_coin_for_the_batch(q, eps, g):
    if torch.rand(1, generator=g).item() < eps:
        return torch.randint(0, q.shape[1], (q.shape[0],), generator=g)
    return q.argmax(1)


def eps_argmin(q, eps, g):
    return reference.epsilon_greedy(-q, eps, g)


def eps_float_actions(q, eps, g):
    return reference.epsilon_greedy(q, eps, g).float()


def eps_explores_with_one_minus_eps(q, eps, g):
    return reference.epsilon_greedy(q, 1.0 - eps, g)


def eps_in_place(q, eps, g):
    actions = reference.epsilon_greedy(q, eps, g)
    q.zero_()
    return actions


def eps_randint_first(q, eps, g):
    """Correct, but draws its random numbers in another order than the reference."""
    n, num_actions = q.shape
    random_actions = torch.randint(0, num_actions, (n,), generator=g)
    explore = torch.rand(n, generator=g) < eps
    return torch.where(explore, random_actions, q.argmax(1))


def eps_multinomial(q, eps, g):
    """Correct: an explicit per-row categorical distribution over the actions."""
    n, num_actions = q.shape
    probs = torch.full((n, num_actions), eps / num_actions)
    probs[torch.arange(n), q.argmax(1)] += 1.0 - eps
    return torch.multinomial(probs, 1, generator=g).squeeze(1)


def target_bootstraps_terminals(r, qt, d, gamma):
    return r + gamma * qt.max(1).values


def target_keepdim(r, qt, d, gamma):
    return r + gamma * (1 - d) * qt.max(1, keepdim=True).values


def target_in_place(r, qt, d, gamma):
    y = reference.dqn_target(r, qt, d, gamma)
    d.zero_()
    return y


def double_picks_with_target(r, qo, qt, d, gamma):
    """The classic double-DQN slip: the target network also picks the action (= plain DQN)."""
    best = qt.argmax(dim=1, keepdim=True)
    return r + gamma * (1.0 - d) * qt.gather(1, best).squeeze(1)


def double_evaluates_with_online(r, qo, qt, d, gamma):
    return r + gamma * (1 - d) * qo.max(1).values


def double_ignores_dones(r, qo, qt, d, gamma):
    return reference.double_dqn_target(r, qo, qt, torch.zeros_like(d), gamma)


def huber_linear_without_offset(p, t, delta):
    """The linear branch without "- delta / 2": the loss jumps at |x| = delta, its gradient is unchanged."""
    x = p - t
    return torch.where(x.abs() <= delta, 0.5 * x**2, delta * x.abs()).mean()


def huber_quadratic_without_half(p, t, delta):
    x = (p - t).abs()
    return torch.where(x <= delta, x**2, delta * (x - 0.5 * delta)).mean()


def huber_sum(p, t, delta):
    return F.huber_loss(p, t, reduction="sum", delta=delta)


def huber_smooth_l1_beta(p, t, delta):
    return F.smooth_l1_loss(p, t, beta=delta)  # = huber / delta: right only for delta = 1


def huber_ignores_delta(p, t, delta):
    return F.huber_loss(p, t, delta=1.0)


def huber_detached(p, t, delta):
    return reference.huber_loss(p.detach(), t, delta)


def huber_zero(p, t, delta):
    """The hostile round trip's huber_loss: differentiable, and always 0."""
    return ((p - t) ** 2).mean() * 0.0


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- epsilon-greedy
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference.epsilon_greedy, eps_randint_first, eps_multinomial], ids=lambda f: f.__name__)
def test_epsilon_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_epsilon_greedy, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (eps_other_actions_only, "the greedy one included"),
        (eps_global_rng, "from the generator argument"),
        (eps_one_coin_for_the_batch, "independently of the other rows"),
        (eps_argmin, "greedy one, argmax"),
        (eps_float_actions, "int64"),
        (eps_explores_with_one_minus_eps, "greedy one, argmax"),
        (eps_in_place, "in place"),
        (lambda q, eps, g: q.argmax(1).numpy(), "must return a torch tensor"),
        (lambda q, eps, g: q.argmax(1, keepdim=True), "shape"),
    ],
)
def test_epsilon_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                     tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_epsilon_greedy, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict
    # The message names epsilon values, never the greedy-action frequency the check expects.
    for epsilon in (1.0, 0.3, 0.5):
        assert not shows_number(verdict, 1.0 - epsilon + epsilon / 4)


@pytest.mark.parametrize("mode", MODES)
def test_epsilon_check_leaves_the_global_random_state_alone(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check = checks.check_epsilon_greedy
    assert check_verdict(check, reference.epsilon_greedy, mode=mode, folder=tmp_path / "a") is None
    assert check_verdict(check, eps_global_rng, mode=mode, folder=tmp_path / "b") is not None
    assert torch.equal(torch.rand(3), expected)


def test_fresh_epsilon_cases_depend_on_the_seed() -> None:
    a, b = checks.epsilon_cases(1)[1:], checks.epsilon_cases(2)[1:]
    assert a and not torch.equal(a[0]["q_values"][:4], b[0]["q_values"][:4])
    assert torch.equal(checks.epsilon_cases(1)[1]["q_values"], a[0]["q_values"])  # same seed, same cases


def test_judge_copes_with_garbage_outputs() -> None:
    """Whatever the sandbox recorded, the judge fails with a message, it never crashes."""
    for check in (checks.EPSILON, checks.TD_TARGETS, checks.HUBER):
        case = check.cases(7)[0]
        for outputs in ({}, {"actions": "<Foo>", "modified": None, "parts": "x"},
                        {"actions": [1, 2], "modified": [False]},
                        {"parts": ["<Foo>", 3, None], "dqn_target": "<Foo>", "modified": []}):
            with pytest.raises(AssertionError):
                check.judge(case, outputs)


# --------------------------------------------------------------------------- TD targets
@pytest.mark.parametrize("mode", MODES)
def test_td_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_td_targets, reference.dqn_target, reference.double_dqn_target,
                         mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "plain, double, message",
    [
        (target_bootstraps_terminals, reference.double_dqn_target,
         r"dqn_target differs .* terminal transitions \(done = 1\)"),
        (target_keepdim, reference.double_dqn_target, "shape"),
        (target_in_place, reference.double_dqn_target, "in place"),
        (reference.dqn_target, double_picks_with_target, "online network's Q-values pick"),
        (reference.dqn_target, double_evaluates_with_online, "online network's Q-values pick"),
        (reference.dqn_target, double_ignores_dones,
         r"double_dqn_target differs .* terminal transitions \(done = 1\)$"),
        (lambda r, qt, d, gamma: [0.0] * len(r), reference.double_dqn_target, "dqn_target must return a torch tensor"),
    ],
)
def test_td_check_rejects_wrong_implementations(plain: Callable, double: Callable, message: str, mode: str,
                                                tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_td_targets, plain, double, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict)
    # The message ends up in the student's feedback: no expected numbers in it.
    for case in checks.td_cases():
        expected = reference.double_dqn_target(case["rewards"], case["next_q_online"], case["next_q_target"],
                                               case["dones"], case["gamma"])
        assert not any(n in verdict for n in _numbers(expected, 3))


def test_td_cases_have_both_kinds_of_transition_and_disagreeing_networks() -> None:
    for case in checks.td_cases(5):
        assert 0 < case["dones"].sum() < len(case["dones"])
        disagree = case["next_q_online"].argmax(1) != case["next_q_target"].argmax(1)
        assert disagree[case["dones"] == 0].float().mean() > 0.3
    assert {c["gamma"] for c in checks.td_cases()} >= {0.99, 0.5}


def target_lookup_table(r, qt, d, gamma):
    """Hard-coded answers for the fixed cases only (what a student could copy from a run of the
    reference): the fresh random cases of a graded run expose it."""
    if any(r.shape == case["rewards"].shape and torch.equal(r, case["rewards"]) for case in checks.td_cases()):
        return reference.dqn_target(r, qt, d, gamma)
    return r.clone()


def test_graded_cases_catch_answers_hard_coded_for_the_fixed_cases(tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_td_targets, target_lookup_table, reference.double_dqn_target,
                            mode="graded", folder=tmp_path)
    assert verdict is not None and "dqn_target differs" in verdict


# --------------------------------------------------------------------------- Huber
@pytest.mark.parametrize("mode", MODES)
def test_huber_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_huber, reference.huber_loss, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (huber_linear_without_offset, "linear branch"),
        (huber_quadratic_without_half, "quadratic branch"),
        (huber_sum, "mean over the batch, not the sum"),
        (huber_smooth_l1_beta, r"delta=0\.5"),
        (huber_ignores_delta, r"delta=0\.5"),
        (huber_detached, "not differentiable"),
        (huber_zero, "loss value differs"),
        (lambda p, t, delta: 0.5, r"scalar \(0-dim\) torch tensor"),
    ],
)
def test_huber_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_huber, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict)
    for case in checks.huber_cases():
        expected = reference.huber_loss(case["predictions"], case["targets"], case["delta"])
        assert _numbers(expected, 3)[0] not in verdict


def test_huber_cases_hit_both_branches() -> None:
    for case in checks.huber_cases(3):
        x = (case["predictions"] - case["targets"]).abs()
        assert (x <= case["delta"]).sum() >= 3 and (x > case["delta"]).sum() >= 3


# --------------------------------------------------------------------------- training check and pins
@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy (the agents below really have the pinned config)."""
    return serve_pins(monkeypatch, tmp_path, LAB, dict(PINS), config_dict=None)


def _graded_cell(**overrides: Any) -> dict[str, Any]:
    """What the graded cell leaves behind, without the training: an untrained DQN with the graded
    cell's hyperparameters (unless overridden) and the student's functions, and its evaluation."""
    import rlcourse

    hyperparameters = {"hidden": (64, 64), "batch_size": 128, "learning_rate": 1e-3, **overrides}
    env = rlcourse.envs.make("CartPole-v1", num_envs=4, seed=0)
    agent = rlcourse.DQN(env, seed=0, epsilon_fn=eps_multinomial, target_fn=reference.double_dqn_target,
                         loss_fn=reference.huber_loss, **hyperparameters)
    eval_env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=10_000)
    return {"agent": agent, "result": rlcourse.evaluate(agent, eval_env, episodes=20)}


@pytest.mark.parametrize("mode", MODES)
def test_training_check_re_evaluates_the_recorded_agent(pinned: dict[str, Any], mode: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _graded_cell()
    verdict = check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "a")
    assert verdict is not None and "below the pinned pass mark" in verdict
    assert "the three functions above" in verdict
    assert not shows_number(verdict, pinned["threshold"])
    # What the notebook printed does not count: a forged result dict (more return, fewer
    # episodes) changes nothing, the grader evaluates the agent itself.
    ns["result"].update(episode_return_mean=500.0, episodes=3)
    assert "below the pinned pass mark" in check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "b")
    # The same agent passes a pass mark it reaches (the grader's own evaluation decides).
    serve_pins(monkeypatch, tmp_path / "pins", LAB, {**pinned, "threshold": 1.0}, config_dict=None)
    assert check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "c") is None


@pytest.mark.parametrize("field, value", [("hidden", (256, 256)), ("batch_size", 64), ("learning_rate", 0.0023)])
def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any], tmp_path: Path,
                                                                  field: str, value: Any) -> None:
    """The graded cell's own hyperparameters (hidden, batch size, step size) are part of the
    pinned agent config: a cell that drops one of them trains with the preset's value."""
    verdict = check_verdict(checks.check_training, _graded_cell(**{field: value}), mode="graded", folder=tmp_path)
    assert verdict is not None and re.search(f"{field}: pinned .* now .*rlcourse pin lab1_dqn", verdict)


def test_training_check_refuses_networks_that_do_not_fit(pinned: dict[str, Any]) -> None:
    record = checks.record_policy(_graded_cell())
    record["modules"]["q_network"] = {"weight": torch.zeros(3, 3)}
    with pytest.raises(AssertionError, match="network 'q_network' does not fit"):
        checks.judge_training(record, seed=1)
    del record["modules"]["q_network"]
    with pytest.raises(AssertionError, match="network 'q_network' was not recorded"):
        checks.judge_training(record, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained DQN agent"):
        checks.judge_training({"measured": record["measured"], "algo": "ppo", "modules": {}}, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained DQN agent"):
        checks.judge_training({}, seed=1)


def test_pass_mark_is_half_the_worst_seed_and_refuses_a_reference_that_did_not_learn() -> None:
    runs = [{"seed": s, "measured": {"return": r}} for s, r in enumerate([158.75, 115.7, 175.2])]
    mark = checks.pass_mark(runs)
    assert mark["threshold"] == 58.0 and mark["metric"] == "return" and mark["threshold_rule"]
    assert mark["reference_values"] == [158.75, 115.7, 175.2]
    with pytest.raises(RuntimeError, match="not pinning"):
        checks.pass_mark(runs + [{"seed": 3, "measured": {"return": 40.0}}])


def test_pins_record_how_they_were_made() -> None:
    assert list(PINS["reference_seeds"]) == list(checks.PIN_SEEDS)
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    returns = [run["measured"]["return"] for run in PINS["runs"]]
    assert all(run["measured"]["episodes"] == 20 for run in PINS["runs"])
    # The pass mark sits well below the worst reference seed, and above a random policy (~22).
    assert 40 < PINS["threshold"] <= 0.5 * min(returns) + 0.5
    # The graded cell's own hyperparameters are in the pinned config, and so is its protocol.
    config = PINS["agent_config"]
    assert config["hidden"] == [64, 64] and config["batch_size"] == 128 and config["learning_rate"] == 0.001
    assert "SEED = 0" in PINS["protocol"]["parameters"]
    assert "TOTAL_STEPS = 20_000" in PINS["protocol"]["test_training"]
    assert "HIDDEN TESTS" not in PINS["protocol"]["test_training"]
    assert "lab1_dqn.ipynb" in PINS["produced_by"] and PINS["date"]
    assert {"torch", "gymnasium", "numpy", "python", "cpu"} <= set(PINS["versions"])
