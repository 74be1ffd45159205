"""Lab 5 (SAC) grading: the hidden checks, the SAC lab hooks, the pins and the nbgrader round trip.

The fast tests run the checks in-process: they accept the reference and the notebook's own
solutions, and reject realistic wrong implementations with a message that names the problem
without printing expected numbers. The slow test grades one batch of submissions through the
real command line (`rlcourse grade lab5_sac`) in a copy of the course: the source notebook, the
three examples, and for each graded function a submission whose only bug is in that function.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grading_helpers import copy_course, example, grade_batch, points, shows_number, with_cell
from rlcourse.algos import SAC
from rlcourse.algos import common as reference_common
from rlcourse.algos import sac as reference
from rlcourse.grading import lab5

REPO = Path(__file__).resolve().parents[1]
LAB = "lab5_sac"
NOTEBOOK = f"{LAB}.ipynb"
SOURCE = REPO / "solutions" / LAB / NOTEBOOK
PINS: dict[str, Any] = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text()).get(LAB, {})
# Skipped on a developer's machine before the first pin; under CI (CI=1) a missing entry fails.
needs_pins = pytest.mark.skipif(not PINS and not os.environ.get("CI"), reason=f"no {LAB} entry in pinned_metrics.json: run `rlcourse pin {LAB}`")
CELLS = ("test_critic_target", "test_log_prob", "test_temperature", "test_polyak", "test_training")
FULL = {"test_critic_target": 2, "test_log_prob": 2, "test_temperature": 2, "test_polyak": 1, "test_training": 3}


def notebook_solutions() -> dict[str, Callable]:
    """The functions of the source notebook's solution cells, as a student would define them."""
    nb = nbformat.read(SOURCE, as_version=4)
    ns: dict[str, Any] = {"torch": torch, "F": F, "math": math, "nn": nn}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(cell.source, ns)
    return ns


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- wrong student code
def target_no_dones(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (torch.min(q1, q2) - alpha * lp)


def target_max(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (torch.max(q1, q2) - alpha * lp)


def target_no_entropy(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * torch.min(q1, q2)


def target_entropy_sign(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (torch.min(q1, q2) + alpha * lp)


def target_mean_of_critics(r, q1, q2, lp, d, gamma, alpha):
    return r + gamma * (1 - d) * (0.5 * (q1 + q2) - alpha * lp)


def target_float_alpha_only(r, q1, q2, lp, d, gamma, alpha):
    if isinstance(alpha, torch.Tensor):
        raise TypeError("alpha must be a float")
    return reference.sac_critic_target(r, q1, q2, lp, d, gamma, alpha)


def _gaussian(u, m, ls):
    return torch.distributions.Normal(m, ls.exp()).log_prob(u)


def log_prob_naive_eps(u, m, ls):
    return (_gaussian(u, m, ls) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)


def log_prob_naive(u, m, ls):
    return (_gaussian(u, m, ls) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)


def log_prob_not_summed(u, m, ls):
    return _gaussian(u, m, ls) - 2 * (math.log(2) - u - F.softplus(-2 * u))


def log_prob_correction_sign(u, m, ls):
    return (_gaussian(u, m, ls) + 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def log_prob_no_normalization(u, m, ls):
    return (-((u - m) ** 2) / (2 * torch.exp(2 * ls)) - 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def log_prob_detached(u, m, ls):
    return reference.squashed_gaussian_log_prob(u.detach(), m.detach(), ls.detach())


def log_prob_with_distributions(u, m, ls):
    """Correct: torch.distributions for the Gaussian, the stable identity for the correction."""
    return (_gaussian(u, m, ls) - 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


def temperature_alpha_form(la, lp, te):
    return -(la.exp() * (lp.detach() + te)).mean()


def temperature_not_detached(la, lp, te):
    return -(la * (lp + te)).mean()


def temperature_sign(la, lp, te):
    return (la * (lp.detach() + te)).mean()


def temperature_alpha_detached(la, lp, te):
    return -(la.detach() * (lp.detach() + te)).mean()


def polyak_without_no_grad(target, source, tau):
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1 - tau).add_(tau * s)


def polyak_swapped_tau(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.copy_((1 - tau) * s + tau * t)


def polyak_rebinds(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t = tau * s + (1 - tau) * t  # noqa: F841 (the bug)


def polyak_replaces_parameters(target, source, tau):
    with torch.no_grad():
        for module_t, module_s in zip(target.modules(), source.modules()):
            for name, p in list(module_t.named_parameters(recurse=False)):
                setattr(module_t, name, nn.Parameter(tau * getattr(module_s, name) + (1 - tau) * p))


def polyak_moves_source(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)
            s.lerp_(t, tau)


def polyak_data_attribute(target, source, tau):
    """Correct (old style): ``.data`` bypasses autograd."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.data.copy_(tau * s.data + (1 - tau) * t.data)


# --------------------------------------------------------------------------- critic target
def test_critic_target_check_accepts_the_reference_and_the_notebook_solution() -> None:
    lab5.check_critic_target(reference.sac_critic_target, PINS)
    lab5.check_critic_target(notebook_solutions()["sac_critic_target"], PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (target_no_dones, r"terminal transitions \(done = 1\) only"),
        (target_max, "take the minimum"),
        (target_no_entropy, "entropy term is missing"),
        (target_entropy_sign, "wrong sign"),
        (target_mean_of_critics, r"non-terminal transitions \(done = 0\)"),
    ],
)
def test_critic_target_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        lab5.check_critic_target(wrong, PINS)
    expected = reference.sac_critic_target(**lab5.critic_target_cases()[0])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_critic_target_check_passes_alpha_as_a_tensor() -> None:
    assert any(isinstance(c["alpha"], torch.Tensor) for c in lab5.critic_target_cases())
    with pytest.raises(TypeError):
        lab5.check_critic_target(target_float_alpha_only, PINS)


# --------------------------------------------------------------------------- log-probability
@pytest.mark.parametrize("fn", [reference.squashed_gaussian_log_prob, log_prob_with_distributions],
                         ids=lambda f: f.__name__)
def test_log_prob_check_accepts_correct_implementations(fn: Callable) -> None:
    lab5.check_log_prob(fn, PINS)


def test_log_prob_check_accepts_the_notebook_solution() -> None:
    lab5.check_log_prob(notebook_solutions()["squashed_gaussian_log_prob"], PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (log_prob_naive_eps, r"large \|u\|.*stable identity"),
        (log_prob_naive, r"not finite .* large \|u\|"),
        (log_prob_not_summed, "sum the log-probabilities over the action dimensions"),
        (log_prob_correction_sign, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_no_normalization, r"\|u\| <= 2: check the Gaussian"),
        (log_prob_detached, "not differentiable"),
    ],
)
def test_log_prob_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        lab5.check_log_prob(wrong, PINS)
    expected = reference.squashed_gaussian_log_prob(**lab5.log_prob_cases()[0])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_log_prob_cases_reach_where_the_naive_formula_fails() -> None:
    for case in lab5.log_prob_cases():
        u = case["pre_tanh"]
        moderate = (u.abs() <= lab5.LARGE_PRE_TANH).all(dim=1)
        assert moderate.sum() >= 5 and (~moderate).sum() >= 5
        assert (1 - torch.tanh(u) ** 2 == 0).any(), "some |u| must be large enough for the naive formula to give -inf"


def test_reference_log_prob_matches_torch_distributions() -> None:
    """The reference is the library's (unchanged) formula: compare with torch's TanhTransform where it is accurate."""
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) * 0.3
    u = mean + log_std.exp() * torch.randn(50, 2, generator=g)
    want = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(reference.squashed_gaussian_log_prob(u, mean, log_std), want, atol=1e-3, rtol=1e-4)


# --------------------------------------------------------------------------- temperature
def test_temperature_check_accepts_the_reference_and_the_notebook_solution() -> None:
    lab5.check_temperature_loss(reference.temperature_loss, PINS)
    lab5.check_temperature_loss(notebook_solutions()["temperature_loss"], PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (temperature_alpha_form, "multiplies log_alpha, not alpha"),
        (temperature_not_detached, "sends gradients into log_prob"),
        (temperature_sign, "check the sign"),
        (temperature_alpha_detached, "not differentiable with respect to log_alpha"),
    ],
)
def test_temperature_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab5.check_temperature_loss(wrong, PINS)


# --------------------------------------------------------------------------- Polyak
@pytest.mark.parametrize("fn", [reference_common.polyak_update, polyak_data_attribute], ids=lambda f: f.__name__)
def test_polyak_check_accepts_correct_implementations(fn: Callable) -> None:
    lab5.check_polyak(fn, PINS)


def test_polyak_check_accepts_the_notebook_solution() -> None:
    lab5.check_polyak(notebook_solutions()["polyak_update"], PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (polyak_without_no_grad, r"torch\.no_grad"),
        (polyak_swapped_tau, r"theta' <- tau \* theta \+ \(1 - tau\) \* theta'"),
        (polyak_rebinds, "left the target unchanged"),
        (polyak_replaces_parameters, "replaced the target's parameters"),
        (polyak_moves_source, "changed the source network"),
    ],
)
def test_polyak_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab5.check_polyak(wrong, PINS)


# --------------------------------------------------------------------------- the SAC hooks
TINY = {"actor_hidden": (16, 16), "critic_hidden": (16, 16), "batch_size": 8, "buffer_size": 500,
        "learning_starts": 16}


def test_sac_uses_every_hook(make_env) -> None:
    calls = dict.fromkeys(("target", "log_prob", "temperature", "polyak"), 0)

    def count(name: str, fn: Callable) -> Callable:
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    agent = SAC(env, seed=0, preset=None, target_fn=count("target", reference.sac_critic_target),
                log_prob_fn=count("log_prob", reference.squashed_gaussian_log_prob),
                temperature_loss_fn=count("temperature", reference.temperature_loss),
                polyak_fn=count("polyak", reference_common.polyak_update), **TINY)
    agent.learn(40, eval_episodes=0, progress=False)
    # 20 batched steps of 2 envs; updates start once 16 steps are stored: 13 gradient steps,
    # each with one log-prob call on the batched pass that samples the next actions (target)
    # and the fresh actions (actor loss) together.
    assert calls == {"target": 13, "log_prob": 13, "temperature": 13, "polyak": 13}


def test_sac_default_hooks_are_the_reference_functions(make_env) -> None:
    params = []
    for hooks in ({}, {"target_fn": reference.sac_critic_target, "log_prob_fn": reference.squashed_gaussian_log_prob,
                       "temperature_loss_fn": reference.temperature_loss, "polyak_fn": reference_common.polyak_update}):
        env = make_env("Pendulum-v1", num_envs=2, seed=0)
        agent = SAC(env, seed=0, preset=None, **hooks, **TINY)
        agent.learn(60, eval_episodes=0, progress=False)
        params.append([p.detach().clone() for p in agent.actor.parameters()] + [agent.log_alpha.detach().clone()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


# --------------------------------------------------------------------------- training check and protocol
@needs_pins
@pytest.mark.parametrize("offset, passes", [(0.0, True), (100.0, True), (-1.0, False), (-300.0, False)])
def test_training_check_compares_with_the_pinned_threshold(offset: float, passes: bool) -> None:
    result = {"episode_return_mean": PINS["training"]["threshold"] + offset, "episodes": 10}
    if passes:
        lab5.check_training(result, PINS)
    else:
        with pytest.raises(AssertionError, match="below the pinned threshold") as info:
            lab5.check_training(result, PINS)
        assert not shows_number(str(info.value), PINS["training"]["threshold"])


@needs_pins
def test_training_check_refuses_a_protocol_the_pins_were_not_measured_with() -> None:
    result = {"episode_return_mean": -100.0, "episodes": 10}
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):
        lab5.check_training(result, PINS, total_steps=20_000)
    lab5.check_training(result, PINS, total_steps=lab5.PROTOCOL["total_steps"], seed=lab5.PROTOCOL["seed"])
    with pytest.raises(AssertionError, match="below the pinned threshold"):
        lab5.check_training({"episode_return_mean": float("nan"), "episodes": 10}, PINS)


@needs_pins
def test_training_cell_uses_the_pinned_protocol() -> None:
    nb = nbformat.read(SOURCE, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_training"]
    constants = dict(re.findall(r"^(SEED|TOTAL_STEPS|NUM_ENVS|EVAL_EPISODES) = ([\d_]+)", cell.source, re.M))
    protocol = lab5.PROTOCOL
    assert int(constants["SEED"]) == protocol["seed"]
    assert int(constants["TOTAL_STEPS"]) == protocol["total_steps"]
    assert int(constants["NUM_ENVS"]) == protocol["num_envs"]
    assert int(constants["EVAL_EPISODES"]) == protocol["eval_episodes"]
    assert f'"{protocol["env"]}"' in cell.source
    assert f"seed={protocol['eval_seed']:_} + SEED" in cell.source
    for hook in ("target_fn=sac_critic_target", "log_prob_fn=squashed_gaussian_log_prob",
                 "temperature_loss_fn=temperature_loss", "polyak_fn=polyak_update"):
        assert hook in cell.source
    assert PINS["training"]["protocol"] == protocol, "pinned_metrics.json is stale: run `rlcourse pin lab5_sac`"


@needs_pins
def test_pinned_metrics_record_how_they_were_made() -> None:
    training = PINS["training"]
    assert len(training["reference_seeds"]) >= 5 and lab5.PROTOCOL["seed"] in training["reference_seeds"]
    assert len(training["reference_returns"]) == len(training["reference_seeds"])
    worst, untrained = min(training["reference_returns"]), training["untrained_return"]
    # The pass mark sits between an untrained policy (about -1200) and the worst reference seed.
    assert untrained + 200 < training["threshold"] < worst - 100
    for key in ("produced_by", "date", "versions"):
        assert PINS[key]
    assert {"torch", "gymnasium", "numpy", "python"} <= set(PINS["versions"])


# --------------------------------------------------------------------------- the full pipeline
# Realistic bugs, each in one function only. Each is caught by that function's checks, yet
# still trains past the pass mark, so the submission loses exactly that function's points.
# Pendulum never terminates (time-outs are stored with done = 0), so forgetting (1 - d) does
# not change training at all; the polyak bug only matters for parameters that require
# gradients, which SAC's target critics do not.
WRONG_TARGET_CELL = '''
def sac_critic_target(rewards, next_q1, next_q2, next_log_prob, dones, gamma, alpha):
    return rewards + gamma * (torch.min(next_q1, next_q2) - alpha * next_log_prob)  # bug: no (1 - dones)
'''.strip()

# The widespread epsilon fix of the naive formula: finite, but wrong for large |u|.
WRONG_LOG_PROB_CELL = '''
def squashed_gaussian_log_prob(pre_tanh, mean, log_std):
    gaussian = -((pre_tanh - mean) ** 2) / (2.0 * torch.exp(2.0 * log_std)) - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det = torch.log(1.0 - torch.tanh(pre_tanh) ** 2 + 1e-6)  # bug: naive, with an epsilon
    return (gaussian - log_det).sum(dim=-1)
'''.strip()

# CleanRL's variant (alpha instead of log_alpha): the same fixed point, but not this lab's loss.
WRONG_TEMPERATURE_CELL = '''
def temperature_loss(log_alpha, log_prob, target_entropy):
    return -(log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()  # bug: alpha, not log_alpha
'''.strip()

WRONG_POLYAK_CELL = '''
def polyak_update(target, source, tau):
    for target_param, param in zip(target.parameters(), source.parameters()):  # bug: no torch.no_grad()
        target_param.mul_(1.0 - tau).add_(tau * param)
'''.strip()

WRONG = {
    "wrong_target": ("sac_critic_target", WRONG_TARGET_CELL, "test_critic_target"),
    "wrong_log_prob": ("squashed_gaussian_log_prob", WRONG_LOG_PROB_CELL, "test_log_prob"),
    "wrong_temperature": ("temperature_loss", WRONG_TEMPERATURE_CELL, "test_temperature"),
    "wrong_polyak": ("polyak_update", WRONG_POLYAK_CELL, "test_polyak"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `rlcourse grade lab5_sac` over the examples plus five test students, in a course copy."""
    course = copy_course(tmp_path_factory.mktemp("course"))
    complete = example(course, "example_complete", LAB, NOTEBOOK)
    students = {"source_notebook": nbformat.read(course / "solutions" / LAB / NOTEBOOK, as_version=4)}
    for student, (grade_id, source, _) in WRONG.items():
        students[student] = with_cell(complete, grade_id, source)
    return grade_batch(course, LAB, students, NOTEBOOK)


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first slow test also grades the batch
def test_every_submission_is_graded(graded: dict[str, Any]) -> None:
    summary = graded["summary"]
    assert set(summary) == {"example_complete", "example_partial", "example_empty", "source_notebook", *WRONG}
    for student, row in summary.items():
        assert row["status"] == "graded", row
        assert float(row["max_score"]) == 10
        assert float(graded["grades"][student]["score"]) == float(row["score"]), student
        assert (graded["course"] / row["feedback"]).exists()
    assert graded["before"] == graded["after"], "grading modified a submission"


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("student", ["source_notebook", "example_complete"])
def test_a_correct_solution_gets_full_marks(graded: dict[str, Any], student: str) -> None:
    row = graded["summary"][student]
    assert points(row, CELLS) == FULL, row
    assert float(row["score"]) == 10


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_unmodified_release_gets_zero_and_the_partial_example_its_first_part(graded: dict[str, Any]) -> None:
    row = graded["summary"]["example_empty"]
    assert float(row["score"]) == 0 and set(points(row, CELLS).values()) == {0.0}, row
    row = graded["summary"]["example_partial"]
    assert points(row, CELLS) == {**dict.fromkeys(CELLS, 0.0), "test_critic_target": 2}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("student", sorted(WRONG))
def test_a_wrong_function_loses_exactly_its_points(graded: dict[str, Any], student: str) -> None:
    row = graded["summary"][student]
    assert points(row, CELLS) == {**FULL, WRONG[student][2]: 0}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_feedback_shows_neither_hidden_tests_nor_expected_values(graded: dict[str, Any]) -> None:
    secrets = []
    for case in lab5.critic_target_cases():
        secrets += _numbers(reference.sac_critic_target(**case))
    for case in lab5.log_prob_cases():
        secrets += _numbers(reference.squashed_gaussian_log_prob(**case))
    for student, row in graded["summary"].items():
        html = (graded["course"] / row["feedback"]).read_text()
        for needle in ("BEGIN HIDDEN TESTS", "check_critic_target", "check_log_prob", "check_temperature_loss",
                       "check_polyak", "check_training", "_lab5"):
            assert needle not in html, f"{student}'s feedback shows {needle!r}"
        page = re.sub(r"<style.*?</style>", "", html, flags=re.S)
        shown = {f"{float(n):.4f}" for n in re.findall(r"-?\d+\.\d{3,}", page)}
        assert not shown & set(secrets), f"{student}'s feedback shows expected values"
