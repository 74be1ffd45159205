"""Lab 4 (domain randomization) grading: hidden checks, the env hook, pins, and the full pipeline.

The fast tests run the hidden checks in-process against the reference functions and against
realistic wrong implementations. The slow test grades a batch of submissions through the
real command line (``rlcourse grade``) in a temporary copy of the course, once per module.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import nbformat
import pytest
import torch

import rlcourse
from rlcourse.grading import lab4

from grading_helpers import copy_course, example, grade_batch, points, with_cell


# The check tests, the wrong implementations and these helpers already live in
# tests/test_lab4_sampler_checks.py; this file adds what needs the released lab and its pins.
from test_lab4_sampler_checks import (  # noqa: E402
    CELLS, LAB, MAX_POINTS, NOTEBOOK, REPO, _pins, _result, _synthetic_pins, _training_pins,
)

def test_training_check_refuses_a_protocol_the_pins_were_not_measured_with() -> None:
    pins = _synthetic_pins()
    good = _result(pins["training"]["threshold"] + 1, 0.0)
    lab4.check_training(good, pins, **{k: v for k, v in lab4.protocol().items() if k != "metric"})
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):
        lab4.check_training(good, pins, finetune_steps=1000)
    with pytest.raises(RuntimeError, match="train_randomization"):
        lab4.check_training(good, pins, train_randomization={"mass": {"range": [0.9, 1.1]}})


def test_training_cell_uses_the_pinned_protocol() -> None:
    nb = nbformat.read(REPO / "solutions" / LAB / NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_training"]
    src = cell.source.split("### BEGIN HIDDEN TESTS")[0]
    namespace: dict[str, Any] = {}
    constants = "\n".join(line for line in src.split("\n")
                          if re.match(r"^(SEED|TASK|PRETRAINED|NUM_ENVS|FINETUNE_STEPS|SWEEP_EPISODES|SWEEP_EPISODE_LENGTH) = ", line))
    exec(constants, namespace)
    block = re.search(r"^TRAIN_RANDOMIZATION = \{.*?^\}$", src, re.M | re.S).group(0)
    exec(block, namespace)
    exec(re.search(r"^SWEEP = .*$", src, re.M).group(0), namespace)
    p = lab4.PROTOCOL
    assert namespace["SEED"] == p["seed"] and namespace["TASK"] == p["task"]
    assert namespace["PRETRAINED"] == p["pretrained"]
    assert namespace["NUM_ENVS"] == p["num_envs"] and namespace["FINETUNE_STEPS"] == p["finetune_steps"]
    assert namespace["SWEEP_EPISODES"] == p["sweep_episodes"]
    assert namespace["SWEEP_EPISODE_LENGTH"] == p["sweep_episode_length"]
    assert namespace["TRAIN_RANDOMIZATION"] == lab4.TRAIN_RANDOMIZATION
    assert namespace["SWEEP"] == lab4.SWEEP
    assert f"seed={p['eval_seed']:_} + SEED" in src
    assert json.loads(json.dumps(lab4.protocol())) == _training_pins()["training"]["protocol"], \
        "pinned_metrics.json is stale: run `rlcourse pin lab4_domain_randomization`"


def test_pinned_metrics_record_how_they_were_made() -> None:
    pins = _training_pins()
    training = pins["training"]
    assert len(training["reference_seeds"]) >= 5 and lab4.PROTOCOL["seed"] in training["reference_seeds"]
    # The pass mark sits well below the lowest seed's mean; the comparison with the nominal policy and
    # the (ungraded) worst cells are recorded.
    assert len(training["randomized_beats_nominal"]) == len(training["reference_seeds"])
    assert all(training["randomized_beats_nominal"])
    assert training["reference_min"] == min(training["reference_mean_randomized"])
    assert len(training["reference_mean_nominal"]) == len(training["reference_seeds"])
    assert len(training["reference_worst_nominal"]) == len(training["reference_seeds"])
    assert 0 < training["threshold"] <= lab4.MARGIN * training["reference_min"] + 0.5
    for key in ("produced_by", "date", "versions"):
        assert pins[key]
    assert pins["sampler"]["z_tolerance"] >= 5 and pins["sampler"]["sample_size"] >= 100_000


# --------------------------------------------------------------------------- the full pipeline
# Realistic slips, one per function part. Neither touches what the graded training uses, so
# each submission trains exactly like the reference (bit for bit: the same draws from the same
# generators) and must lose exactly its part's points:
# * the Gaussian branch reads the second number of the range as a variance (training draws only
#   uniform masses and log-uniform frictions through `sample`);
# * the observation noise is added in place (the env hands the function a fresh all-zero tensor,
#   so the noise it adds is the same; the hidden check sees the caller's tensor change).
WRONG_SAMPLER_CELL = '''
def sample(distribution, low, high, size, generator):
    if distribution == "uniform":
        return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)
    if distribution == "loguniform":
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u)
    if distribution == "gaussian":
        variance = high
        return low + variance * variance * torch.randn(size, generator=generator, dtype=torch.float64)
    raise ValueError(distribution)


def randomize(nominal, draws, operation):
    if operation == "scaling":
        return nominal * draws
    if operation == "additive":
        return nominal + draws
    raise ValueError(operation)
'''.strip()

WRONG_NOISE_CELL = '''
def add_obs_noise(obs, mean, std, generator):
    obs += (mean + std * torch.randn(tuple(obs.shape), generator=generator, dtype=torch.float64)).to(obs.dtype)
    return obs


def draw_latency(low, high, n, generator):
    return torch.randint(int(low), int(high) + 1, (n,), generator=generator)


class ActionLatency:
    def __init__(self, num_envs, num_actions, max_latency):
        self.history = torch.zeros(num_envs, max_latency + 1, num_actions)
        self.delays = torch.zeros(num_envs, dtype=torch.long)

    def reset(self, env_ids, delays):
        self.history[env_ids] = 0.0
        self.delays[env_ids] = delays

    def step(self, actions):
        self.history = torch.roll(self.history, shifts=1, dims=1)
        self.history[:, 0] = actions
        return self.history[torch.arange(self.history.shape[0]), self.delays]
'''.strip()


def test_wrong_cells_fail_only_their_own_check() -> None:
    """The round trip's two probes: each fails its hidden check and passes the other one."""
    ns: dict[str, Any] = {"torch": torch, "math": math}
    exec(WRONG_SAMPLER_CELL, ns)
    with pytest.raises(AssertionError, match="standard deviation"):
        lab4.check_sampler(ns["sample"], ns["randomize"], _pins())
    ns2: dict[str, Any] = {"torch": torch, "math": math}
    exec(WRONG_NOISE_CELL, ns2)
    lab4.check_sampler(lab4.sample, lab4.randomize, _pins())
    with pytest.raises(AssertionError, match="in place"):
        lab4.check_noise_latency(ns2["add_obs_noise"], ns2["draw_latency"], ns2["ActionLatency"], _pins())
    lab4.check_noise_latency(lab4.add_obs_noise, ns2["draw_latency"], ns2["ActionLatency"], _pins())


def test_wrong_cells_train_exactly_like_the_reference() -> None:
    """Why the probes keep their training points: the env sees the same draws as with the reference."""
    ns: dict[str, Any] = {"torch": torch, "math": math}
    exec(WRONG_SAMPLER_CELL, ns)
    exec(WRONG_NOISE_CELL, ns)
    ref = dict(sample=lab4.sample, randomize=lab4.randomize, obs_noise=lab4.add_obs_noise,
               draw_latency=lab4.draw_latency, latency_buffer=lab4.ActionLatency)
    wrong = dict(sample=ns["sample"], randomize=ns["randomize"], obs_noise=ns["add_obs_noise"],
                 draw_latency=ns["draw_latency"], latency_buffer=ns["ActionLatency"])

    def rollout(fns: dict[str, Any]) -> torch.Tensor:
        env = rlcourse.envs.make("Ant", num_envs=4, seed=1, randomization=lab4.TRAIN_RANDOMIZATION,
                                 episode_length=10, nthread=1)
        env.dr.override(**fns)
        obs, _ = env.reset()
        g = torch.Generator().manual_seed(0)
        out = [obs]
        for _ in range(25):
            obs, *_ = env.step(torch.rand(4, 8, generator=g) * 2 - 1)
            out.append(obs)
        env.close()
        return torch.stack(out)

    assert torch.equal(rollout(ref), rollout(wrong))


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `rlcourse grade lab4_domain_randomization` over the examples plus three test students."""
    course = copy_course(tmp_path_factory.mktemp("course"))
    complete = example(course, "example_complete", LAB, NOTEBOOK)
    students = {
        "source_notebook": nbformat.read(course / "solutions" / LAB / NOTEBOOK, as_version=4),
        "wrong_sampler": with_cell(complete, "sampler", WRONG_SAMPLER_CELL),
        "wrong_noise": with_cell(complete, "noise_latency", WRONG_NOISE_CELL),
    }
    return grade_batch(course, LAB, students, NOTEBOOK)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_every_submission_is_graded(graded_course: dict[str, Any]) -> None:
    summary = graded_course["summary"]
    assert set(summary) == {"example_complete", "example_partial", "example_empty", "source_notebook",
                            "wrong_sampler", "wrong_noise"}
    for student, row in summary.items():
        assert row["status"] == "graded", row
        assert float(row["max_score"]) == 10
        assert float(graded_course["grades"][student]["score"]) == float(row["score"]), student
    assert graded_course["before"] == graded_course["after"], "grading modified a submission"


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("student", ["source_notebook", "example_complete"])
def test_a_correct_solution_gets_full_marks(graded_course: dict[str, Any], student: str) -> None:
    row = graded_course["summary"][student]
    assert points(row, CELLS) == MAX_POINTS, row


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_unmodified_release_gets_zero(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["example_empty"]
    assert float(row["score"]) == 0 and set(points(row, CELLS).values()) == {0.0}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_partial_example_scores_its_sampler_only(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["example_partial"]
    assert points(row, CELLS) == {"test_sampler": 4, "test_noise_latency": 0, "test_training": 0}, row


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("student, lost", [("wrong_sampler", "test_sampler"), ("wrong_noise", "test_noise_latency")])
def test_a_wrong_part_loses_exactly_its_points(graded_course: dict[str, Any], student: str, lost: str) -> None:
    row = graded_course["summary"][student]
    assert points(row, CELLS) == {**MAX_POINTS, lost: 0}, row
    assert float(row["score"]) == 10 - MAX_POINTS[lost]


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_feedback_shows_neither_hidden_tests_nor_the_pass_mark(graded_course: dict[str, Any]) -> None:
    code = ["BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "check_sampler", "check_noise_latency", "check_training", "_lab4"]
    for student, row in graded_course["summary"].items():
        html = (graded_course["course"] / row["feedback"]).read_text()
        for needle in code:
            assert needle not in html, f"{student}'s feedback shows {needle!r}"
    html = (graded_course["course"] / graded_course["summary"]["wrong_sampler"]["feedback"]).read_text()
    assert "gaussian(1, 0.3): mean" in html      # the visible check says which distribution is off


def test_training_check_accepts_the_rounded_grid_the_cell_stores() -> None:
    """The cell stores the grid rounded to 3 decimals next to the exact minimum (a bug the first round trip found)."""
    result = _result(60.0, 10.0)
    result["randomized"]["worst_case_return"] += 0.0004
    result["randomized"]["mean_return"] += 0.0004
    lab4.check_training(result, _synthetic_pins())
