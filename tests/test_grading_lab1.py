"""Lab 1 (DQN) grading: the hidden checks, the DQN lab hooks, the pins and the nbgrader round trip.

The fast tests run the checks in-process: they accept the reference and the notebook's own
solutions, and reject realistic wrong implementations with a message that names the problem
without printing expected numbers. The slow test grades one batch of submissions through the
real command line (`rlcourse grade lab1_dqn`) in a copy of the course: the source notebook, the
three examples, and for each graded function a submission whose only bug is in that function.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
import torch
import torch.nn.functional as F

from grading_helpers import copy_course, example, grade_batch, points, shows_number, with_cell
from rlcourse.algos import DQN
from rlcourse.algos import dqn as reference
from rlcourse.grading import lab1

REPO = Path(__file__).resolve().parents[1]
LAB = "lab1_dqn"
NOTEBOOK = f"{LAB}.ipynb"
SOURCE = REPO / "solutions" / LAB / NOTEBOOK
PINS_FILE = REPO / "autograder" / "pinned_metrics.json"
PINS: dict[str, Any] = json.loads(PINS_FILE.read_text()).get(LAB, {})
# Skipped on a developer's machine before the first pin; under CI (CI=1) a missing entry fails.
needs_pins = pytest.mark.skipif(not PINS and not os.environ.get("CI"), reason=f"no {LAB} entry in pinned_metrics.json: run `rlcourse pin {LAB}`")
CELLS = ("test_epsilon_greedy", "test_td_targets", "test_huber", "test_training")
FULL = {"test_epsilon_greedy": 2, "test_td_targets": 3, "test_huber": 2, "test_training": 3}


def notebook_solutions() -> dict[str, Callable]:
    """The functions of the source notebook's solution cells, as a student would define them."""
    nb = nbformat.read(SOURCE, as_version=4)
    ns: dict[str, Any] = {"torch": torch, "F": F}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(cell.source, ns)
    return ns


# --------------------------------------------------------------------------- wrong student code
def eps_other_actions_only(q, eps, g):
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
    return reference.dqn_target(r, qt, d, gamma)


def double_evaluates_with_online(r, qo, qt, d, gamma):
    return r + gamma * (1 - d) * qo.max(1).values


def double_ignores_dones(r, qo, qt, d, gamma):
    return reference.double_dqn_target(r, qo, qt, torch.zeros_like(d), gamma)


def huber_linear_without_offset(p, t, delta):
    x = (p - t).abs()
    return torch.where(x <= delta, 0.5 * x**2, delta * x).mean()


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


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- epsilon-greedy
@pytest.mark.parametrize("fn", [reference.epsilon_greedy, eps_randint_first, eps_multinomial], ids=lambda f: f.__name__)
def test_epsilon_check_accepts_correct_implementations(fn: Callable) -> None:
    lab1.check_epsilon_greedy(fn, PINS)


def test_epsilon_check_accepts_the_notebook_solution() -> None:
    lab1.check_epsilon_greedy(notebook_solutions()["epsilon_greedy"], PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (eps_other_actions_only, "the greedy one included"),
        (eps_global_rng, "from the generator argument"),
        (eps_one_coin_for_the_batch, "independently of the other rows"),
        (eps_argmin, "greedy one, argmax"),
        (eps_float_actions, "int64"),
        (eps_explores_with_one_minus_eps, "greedy one, argmax"),
    ],
)
def test_epsilon_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab1.check_epsilon_greedy(wrong, PINS)


def test_epsilon_check_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    lab1.check_epsilon_greedy(reference.epsilon_greedy, PINS)
    with pytest.raises(AssertionError):
        lab1.check_epsilon_greedy(eps_global_rng, PINS)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- TD targets
def test_td_check_accepts_the_reference_and_the_notebook_solution() -> None:
    lab1.check_td_targets(reference.dqn_target, reference.double_dqn_target, PINS)
    ns = notebook_solutions()
    lab1.check_td_targets(ns["dqn_target"], ns["double_dqn_target"], PINS)


@pytest.mark.parametrize(
    "plain, double, message",
    [
        (target_bootstraps_terminals, reference.double_dqn_target, r"dqn_target differs .* terminal transitions \(done = 1\)"),
        (target_keepdim, reference.double_dqn_target, "shape"),
        (target_in_place, reference.double_dqn_target, "in place"),
        (reference.dqn_target, double_picks_with_target, "online network's Q-values pick"),
        (reference.dqn_target, double_evaluates_with_online, "online network's Q-values pick"),
        (reference.dqn_target, double_ignores_dones, r"double_dqn_target differs .* terminal transitions \(done = 1\)$"),
    ],
)
def test_td_check_rejects_wrong_implementations(plain: Callable, double: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        lab1.check_td_targets(plain, double, PINS)
    case = lab1.td_cases()[0]
    expected = reference.double_dqn_target(case["rewards"], case["next_q_online"], case["next_q_target"],
                                           case["dones"], case["gamma"])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_td_cases_have_both_kinds_of_transition_and_disagreeing_networks() -> None:
    for case in lab1.td_cases():
        assert 0 < case["dones"].sum() < len(case["dones"])
        disagree = case["next_q_online"].argmax(1) != case["next_q_target"].argmax(1)
        assert disagree[case["dones"] == 0].float().mean() > 0.3
    assert {c["gamma"] for c in lab1.td_cases()} >= {0.99, 0.5}


# --------------------------------------------------------------------------- Huber
def test_huber_check_accepts_the_reference_and_the_notebook_solution() -> None:
    lab1.check_huber(reference.huber_loss, PINS)
    lab1.check_huber(notebook_solutions()["huber_loss"], PINS)


def test_reference_huber_is_smooth_l1_at_delta_one() -> None:
    """The default DQN loss did not change when the hook was added."""
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(100, generator=g) * 3, torch.randn(100, generator=g)
    assert torch.equal(reference.huber_loss(p, t, 1.0), F.smooth_l1_loss(p, t))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (huber_linear_without_offset, "linear branch"),
        (huber_quadratic_without_half, "quadratic branch"),
        (huber_sum, "mean over the batch, not the sum"),
        (huber_smooth_l1_beta, r"delta=0\.5"),
        (huber_ignores_delta, r"delta=0\.5"),
        (huber_detached, "not differentiable"),
    ],
)
def test_huber_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        lab1.check_huber(wrong, PINS)
    case = lab1.huber_cases()[0]
    expected = reference.huber_loss(case["predictions"], case["targets"], case["delta"])
    assert _numbers(expected, 3)[0] not in str(info.value)


def test_huber_cases_hit_both_branches() -> None:
    for case in lab1.huber_cases():
        x = (case["predictions"] - case["targets"]).abs()
        assert (x <= case["delta"]).sum() >= 3 and (x > case["delta"]).sum() >= 3


# --------------------------------------------------------------------------- the DQN hooks
TINY = {"hidden": (16, 16), "batch_size": 8, "buffer_size": 500, "learning_starts": 16, "gradient_steps": 2,
        "target_update_interval": 3, "num_steps_per_env": 1}


def test_dqn_uses_the_epsilon_and_loss_hooks(make_env) -> None:
    calls: dict[str, int] = {"eps": 0, "loss": 0}

    def my_eps(q, eps, g):
        calls["eps"] += 1
        return reference.epsilon_greedy(q, eps, g)

    def my_loss(p, t, delta):
        calls["loss"] += 1
        assert delta == 1.0
        return reference.huber_loss(p, t, delta)

    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, epsilon_fn=my_eps, loss_fn=my_loss, **TINY)
    agent.learn(40, eval_episodes=0, progress=False)
    # 20 batched steps of 2 envs: the first 8 act uniformly at random (global_step < 16), the
    # other 12 through epsilon_fn; updates start once 16 steps are stored: 13 updates x 2 gradient steps.
    assert calls["eps"] == 12 and calls["loss"] == 26


def test_dqn_default_hooks_are_the_reference_functions(make_env) -> None:
    """Passing the reference functions explicitly trains exactly like the defaults."""
    losses = []
    for hooks in ({}, {"epsilon_fn": reference.epsilon_greedy, "target_fn": reference.double_dqn_target,
                       "loss_fn": reference.huber_loss}):
        env = make_env("CartPole-v1", num_envs=2, seed=0)
        agent = DQN(env, seed=0, preset=None, **hooks, **TINY)
        agent.learn(60, eval_episodes=0, progress=False)
        losses.append([p.detach().clone() for p in agent.q_network.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*losses))


def test_dqn_rejects_an_epsilon_fn_with_the_wrong_shape(make_env) -> None:
    env = make_env("CartPole-v1", num_envs=2, seed=0)
    agent = DQN(env, seed=0, preset=None, epsilon_fn=lambda q, e, g: q.argmax(1, keepdim=True), **TINY)
    with pytest.raises(ValueError, match="one action per env"):
        agent.learn(40, eval_episodes=0, progress=False)


# --------------------------------------------------------------------------- training check and protocol
@needs_pins
@pytest.mark.parametrize("offset, passes", [(0.0, True), (50.0, True), (-1.0, False), (-60.0, False)])
def test_training_check_compares_with_the_pinned_threshold(offset: float, passes: bool) -> None:
    result = {"episode_return_mean": PINS["training"]["threshold"] + offset, "episodes": 20}
    if passes:
        lab1.check_training(result, PINS)
    else:
        with pytest.raises(AssertionError, match="below the pinned threshold") as info:
            lab1.check_training(result, PINS)
        assert not shows_number(str(info.value), PINS["training"]["threshold"])


@needs_pins
def test_training_check_refuses_a_protocol_the_pins_were_not_measured_with() -> None:
    result = {"episode_return_mean": 500.0, "episodes": 20}
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):
        lab1.check_training(result, PINS, total_steps=50_000)
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):
        lab1.check_training(result, PINS, hyperparameters={"hidden": (256, 256)})
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):   # a cell without the batch and step size
        lab1.check_training(result, PINS, hyperparameters={"hidden": (64, 64)})
    lab1.check_training(result, PINS, total_steps=lab1.PROTOCOL["total_steps"], seed=lab1.PROTOCOL["seed"],
                        hyperparameters={**lab1.PROTOCOL["hyperparameters"],
                                         "hidden": tuple(lab1.PROTOCOL["hyperparameters"]["hidden"])})
    with pytest.raises(AssertionError, match="fewer episodes"):
        lab1.check_training({"episode_return_mean": 500.0, "episodes": 3}, PINS)


@needs_pins
def test_training_cell_uses_the_pinned_protocol() -> None:
    nb = nbformat.read(SOURCE, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_training"]
    constants = dict(re.findall(r"^(SEED|TOTAL_STEPS|NUM_ENVS|EVAL_EPISODES) = ([\d_]+)", cell.source, re.M))
    protocol = lab1.PROTOCOL
    assert int(constants["SEED"]) == protocol["seed"]
    assert int(constants["TOTAL_STEPS"]) == protocol["total_steps"]
    assert int(constants["NUM_ENVS"]) == protocol["num_envs"]
    assert int(constants["EVAL_EPISODES"]) == protocol["eval_episodes"]
    hidden = re.search(r"^HIDDEN = \(([\d, ]+)\)", cell.source, re.M).group(1)
    hp = protocol["hyperparameters"]
    assert [int(h) for h in hidden.split(",")] == hp["hidden"]
    assert int(re.search(r"^BATCH_SIZE = (\d+)", cell.source, re.M).group(1)) == hp["batch_size"]
    assert float(re.search(r"^LEARNING_RATE = ([\d.e-]+)", cell.source, re.M).group(1)) == hp["learning_rate"]
    assert set(hp) == {"hidden", "batch_size", "learning_rate"}
    assert ("hidden=HIDDEN, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE" in cell.source
            and 'hyperparameters={"hidden": HIDDEN, "batch_size": BATCH_SIZE,' in cell.source)
    assert f'"{protocol["env"]}"' in cell.source
    assert f"seed={protocol['eval_seed']:_} + SEED" in cell.source
    assert "epsilon_fn=epsilon_greedy, target_fn=double_dqn_target, loss_fn=huber_loss" in cell.source
    assert PINS["training"]["protocol"] == protocol, "pinned_metrics.json is stale: run `rlcourse pin lab1_dqn`"


@needs_pins
def test_pinned_metrics_record_how_they_were_made() -> None:
    training = PINS["training"]
    assert len(training["reference_seeds"]) >= 5 and lab1.PROTOCOL["seed"] in training["reference_seeds"]
    assert len(training["reference_returns"]) == len(training["reference_seeds"])
    # The pass mark sits well below the worst reference seed, and above a random policy (~22).
    assert 40 < training["threshold"] <= 0.5 * min(training["reference_returns"]) + 0.5
    for key in ("produced_by", "date", "versions"):
        assert PINS[key]
    assert {"torch", "gymnasium", "numpy", "python"} <= set(PINS["versions"])
    assert PINS["td_target"]["tolerance"]["atol"] <= 1e-4


# --------------------------------------------------------------------------- the full pipeline
# Realistic bugs, each in one function only. Each is caught by that function's checks, yet
# still trains past the pass mark, so the submission loses exactly that function's points
# (measured with the graded seed and one more: see the lab 1 report / lab1.py).
WRONG_EPSILON_CELL = '''
def epsilon_greedy(q_values, epsilon, generator):
    n, num_actions = q_values.shape
    greedy = q_values.argmax(dim=1)
    explore = torch.rand(n, generator=generator) < epsilon
    # bug: an exploring row never re-draws the greedy action (only the other ones)
    offset = torch.randint(1, num_actions, (n,), generator=generator)
    return torch.where(explore, (greedy + offset) % num_actions, greedy)
'''.strip()

# The classic double-DQN slip: the target network also picks the action (= plain DQN).
WRONG_DOUBLE_CELL = '''
def double_dqn_target(rewards, next_q_online, next_q_target, dones, gamma):
    best = next_q_target.argmax(dim=1, keepdim=True)  # bug: should be next_q_online
    return rewards + gamma * (1.0 - dones) * next_q_target.gather(1, best).squeeze(1)
'''.strip()

# The linear branch without "- delta / 2": the loss jumps at |x| = delta, its gradient is unchanged.
WRONG_HUBER_CELL = '''
def huber_loss(predictions, targets, delta):
    x = predictions - targets
    return torch.where(x.abs() <= delta, 0.5 * x ** 2, delta * x.abs()).mean()
'''.strip()


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `rlcourse grade lab1_dqn` over the examples plus four test students, in a course copy."""
    course = copy_course(tmp_path_factory.mktemp("course"))
    complete = example(course, "example_complete", LAB, NOTEBOOK)
    students = {
        "source_notebook": nbformat.read(course / "solutions" / LAB / NOTEBOOK, as_version=4),
        "wrong_epsilon": with_cell(complete, "epsilon_greedy", WRONG_EPSILON_CELL),
        "wrong_double_target": with_cell(complete, "double_dqn_target", WRONG_DOUBLE_CELL),
        "wrong_huber": with_cell(complete, "huber_loss", WRONG_HUBER_CELL),
    }
    return grade_batch(course, LAB, students, NOTEBOOK)


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
def test_every_submission_is_graded(graded: dict[str, Any]) -> None:
    summary = graded["summary"]
    assert set(summary) == {"example_complete", "example_partial", "example_empty", "source_notebook",
                            "wrong_epsilon", "wrong_double_target", "wrong_huber"}
    for student, row in summary.items():
        assert row["status"] == "graded", row
        assert float(row["max_score"]) == 10
        assert float(graded["grades"][student]["score"]) == float(row["score"]), student
        assert (graded["course"] / row["feedback"]).exists()
    assert graded["before"] == graded["after"], "grading modified a submission"


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
@pytest.mark.parametrize("student", ["source_notebook", "example_complete"])
def test_a_correct_solution_gets_full_marks(graded: dict[str, Any], student: str) -> None:
    row = graded["summary"][student]
    assert points(row, CELLS) == FULL, row
    assert float(row["score"]) == 10


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
def test_the_unmodified_release_gets_zero_and_the_partial_example_its_first_part(graded: dict[str, Any]) -> None:
    row = graded["summary"]["example_empty"]
    assert float(row["score"]) == 0 and set(points(row, CELLS).values()) == {0.0}, row
    row = graded["summary"]["example_partial"]
    assert points(row, CELLS) == {**dict.fromkeys(CELLS, 0.0), "test_epsilon_greedy": 2}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
@pytest.mark.parametrize("student, cell", [("wrong_epsilon", "test_epsilon_greedy"),
                                           ("wrong_double_target", "test_td_targets"),
                                           ("wrong_huber", "test_huber")])
def test_a_wrong_function_loses_exactly_its_points(graded: dict[str, Any], student: str, cell: str) -> None:
    row = graded["summary"][student]
    assert points(row, CELLS) == {**FULL, cell: 0}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
def test_feedback_shows_neither_hidden_tests_nor_expected_values(graded: dict[str, Any]) -> None:
    secrets = []
    for case in lab1.td_cases():
        secrets += _numbers(reference.double_dqn_target(case["rewards"], case["next_q_online"], case["next_q_target"],
                                                        case["dones"], case["gamma"]))
    for case in lab1.huber_cases():
        secrets += _numbers(reference.huber_loss(case["predictions"], case["targets"], case["delta"]))
    for student, row in graded["summary"].items():
        html = (graded["course"] / row["feedback"]).read_text()
        for needle in ("BEGIN HIDDEN TESTS", "check_epsilon_greedy", "check_td_targets", "check_huber",
                       "check_training", "_lab1"):
            assert needle not in html, f"{student}'s feedback shows {needle!r}"
        page = re.sub(r"<style.*?</style>", "", html, flags=re.S)
        shown = {f"{float(n):.4f}" for n in re.findall(r"-?\d+\.\d{3,}", page)}
        assert not shown & set(secrets), f"{student}'s feedback shows expected values"
    html = (graded["course"] / graded["summary"]["wrong_double_target"]["feedback"]).read_text()
    assert "double_dqn_target" in html
