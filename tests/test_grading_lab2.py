"""Lab 2 (PPO) grading: hidden checks, pinned metrics, feedback redaction and the full pipeline.

The fast tests exercise the pieces in-process. The slow test grades a batch of submissions
in a temporary copy of the course through the real command line (`rlcourse grade`, which
runs `python -m nbgrader ...`): the source notebook, the three examples, a wrong GAE and a
submission whose test cell was deleted. Each of three of them trains CartPole once, so the
batch is graded once and shared by the slow tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
import torch

from rlcourse.algos import ppo as reference
from rlcourse.grading import lab2, pipeline
from rlcourse.grading.feedback import RedactHiddenTests

from grading_helpers import copy_course, digest, example, grade_batch, points, shows_number, with_cell

REPO = Path(__file__).resolve().parents[1]
LAB = "lab2_ppo"
NOTEBOOK = f"{LAB}.ipynb"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong student code
def gae_ignores_lambda(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, dones, last_values, gamma, 1.0)


def gae_hardcoded_lambda(rewards, values, dones, last_values, gamma, lam):
    # The bug the slow test submits (see WRONG_GAE_CELL).
    return reference.compute_gae(rewards, values, dones, last_values, gamma, 0.8)


def gae_forgets_gamma(rewards, values, dones, last_values, gamma, lam):
    # lambda instead of gamma * lambda in the recursion.
    return reference.compute_gae(rewards, values, dones, last_values, gamma, lam / gamma)


def gae_no_bootstrap(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, dones, torch.zeros_like(last_values), gamma, lam)


def gae_ignores_dones(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, torch.zeros_like(dones), last_values, gamma, lam)


def gae_returns_without_values(rewards, values, dones, last_values, gamma, lam):
    adv, _ = reference.compute_gae(rewards, values, dones, last_values, gamma, lam)
    return adv, adv


def gae_in_place(rewards, values, dones, last_values, gamma, lam):
    adv, ret = reference.compute_gae(rewards, values, dones, last_values, gamma, lam)
    rewards.mul_(1.0)
    dones.zero_()
    return adv, ret


def surrogate_no_clip(log_probs, old_log_probs, advantages, clip_eps):
    return -(torch.exp(log_probs - old_log_probs) * advantages).mean()


def surrogate_max(log_probs, old_log_probs, advantages, clip_eps):
    ratio = torch.exp(log_probs - old_log_probs)
    return -torch.max(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages).mean()


def surrogate_wrong_sign(log_probs, old_log_probs, advantages, clip_eps):
    return -reference.clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_eps)


def surrogate_detached(log_probs, old_log_probs, advantages, clip_eps):
    return reference.clipped_surrogate_loss(log_probs.detach(), old_log_probs, advantages, clip_eps)


def surrogate_clips_ratio_only(log_probs, old_log_probs, advantages, clip_eps):
    ratio = torch.exp(log_probs - old_log_probs).clamp(1 - clip_eps, 1 + clip_eps)
    return -(ratio * advantages).mean()


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- hidden checks
def test_gae_check_accepts_the_reference() -> None:
    lab2.check_gae(reference.compute_gae, PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (gae_ignores_lambda, "advantages differ"),
        (gae_forgets_gamma, "advantages differ"),
        (gae_hardcoded_lambda, "advantages differ"),
        (gae_no_bootstrap, "advantages differ"),
        (gae_ignores_dones, "advantages differ"),
        (gae_returns_without_values, "returns differ"),
        (gae_in_place, "in place"),
    ],
)
def test_gae_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        lab2.check_gae(wrong, PINS)
    # The message ends up in the student's feedback: no expected numbers in it.
    case = lab2.gae_cases()[0]
    expected, _ = reference.compute_gae(case["rewards"], case["values"], case["dones"], case["last_values"],
                                        case["gamma"], case["lam"])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_gae_cases_contain_a_termination_and_a_time_out_mid_rollout() -> None:
    case = lab2.gae_cases()[0]
    T = case["dones"].shape[0]
    assert case["dones"][1 : T - 1].sum() >= 2
    # The time-out step's reward was bootstrapped the way PPO.process_env_step does it.
    assert case["rewards"][6, 1] != lab2.gae_cases()[1]["rewards"][6, 1]
    lams = {c["lam"] for c in lab2.gae_cases()}
    assert {0.0, 1.0} <= lams


def test_surrogate_check_accepts_the_reference() -> None:
    lab2.check_surrogate(reference.clipped_surrogate_loss, PINS)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (surrogate_no_clip, "differs from the reference"),
        (surrogate_max, "differs from the reference"),
        (surrogate_wrong_sign, "differs from the reference"),
        (surrogate_detached, "not differentiable"),
        (surrogate_clips_ratio_only, "differs from the reference"),
    ],
)
def test_surrogate_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab2.check_surrogate(wrong, PINS)


def test_surrogate_cases_hit_both_clip_edges() -> None:
    case = lab2.surrogate_cases()[0]
    ratio = torch.exp(case["log_probs"] - case["old_log_probs"])
    eps = case["clip_eps"]
    assert (ratio > 1 + eps).any() and (ratio < 1 - eps).any() and ((ratio - 1).abs() < eps).any()
    assert (case["advantages"] > 0).any() and (case["advantages"] < 0).any()


@pytest.mark.parametrize("offset, passes", [(0.0, True), (50.0, True), (-1.0, False), (-200.0, False)])
def test_training_check_compares_with_the_pinned_threshold(offset: float, passes: bool) -> None:
    result = {"episode_return_mean": PINS["training"]["threshold"] + offset, "episodes": 20}
    if passes:
        lab2.check_training(result, PINS)
    else:
        with pytest.raises(AssertionError, match="below the pinned threshold") as info:
            lab2.check_training(result, PINS)
        assert not shows_number(str(info.value), PINS["training"]["threshold"])


def test_training_check_refuses_a_protocol_the_pins_were_not_measured_with() -> None:
    result = {"episode_return_mean": 500.0, "episodes": 20}
    with pytest.raises(RuntimeError, match="re-run `rlcourse pin"):
        lab2.check_training(result, PINS, total_steps=50_000)
    lab2.check_training(result, PINS, total_steps=lab2.PROTOCOL["total_steps"], seed=lab2.PROTOCOL["seed"])


def test_training_cell_uses_the_pinned_protocol() -> None:
    nb = nbformat.read(REPO / "solutions" / LAB / NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_training"]
    constants = dict(re.findall(r"^(SEED|TOTAL_STEPS|NUM_ENVS|EVAL_EPISODES) = ([\d_]+)", cell.source, re.M))
    protocol = lab2.PROTOCOL
    assert int(constants["SEED"]) == protocol["seed"]
    assert int(constants["TOTAL_STEPS"]) == protocol["total_steps"]
    assert int(constants["NUM_ENVS"]) == protocol["num_envs"]
    assert int(constants["EVAL_EPISODES"]) == protocol["eval_episodes"]
    assert f'"{protocol["env"]}"' in cell.source
    assert f"seed={protocol['eval_seed']:_} + SEED" in cell.source
    assert PINS["training"]["protocol"] == protocol, "pinned_metrics.json is stale: run `make pin`"


# --------------------------------------------------------------------------- pins
def test_pinned_metrics_record_how_they_were_made() -> None:
    training = PINS["training"]
    assert len(training["reference_seeds"]) >= 3 and lab2.PROTOCOL["seed"] in training["reference_seeds"]
    assert len(training["reference_returns"]) == len(training["reference_seeds"])
    # The pass mark sits well below the worst reference seed, above a random policy (~22).
    assert 50 < training["threshold"] <= 0.5 * min(training["reference_returns"]) + 0.5
    for key in ("produced_by", "date", "versions"):
        assert PINS[key]
    assert {"torch", "gymnasium", "numpy", "python"} <= set(PINS["versions"])
    assert PINS["gae"]["tolerance"]["atol"] <= 1e-4


def test_find_pins_walks_up_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lab2.PINS_ENV_VAR, raising=False)
    pins = tmp_path / "course" / "autograder" / "pinned_metrics.json"
    pins.parent.mkdir(parents=True)
    pins.write_text(json.dumps({LAB: {"marker": 1}}))
    deep = tmp_path / "course" / "autograder" / "autograded" / "alice" / LAB
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert lab2.find_pins() == pins
    assert lab2.load_pins() == {"marker": 1}
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({LAB: {"marker": 2}}))
    monkeypatch.setenv(lab2.PINS_ENV_VAR, str(other))
    assert lab2.load_pins() == {"marker": 2}
    monkeypatch.setenv(lab2.PINS_ENV_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match=lab2.PINS_ENV_VAR):
        lab2.find_pins()


def test_pin_rejects_an_unknown_lab(run_cli: Callable) -> None:
    proc = run_cli(["pin", "lab9_nope"], cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "lab9_nope" in proc.stderr


def test_grade_rejects_an_unknown_lab_and_a_missing_folder(run_cli: Callable, tmp_path: Path) -> None:
    proc = run_cli(["grade", "lab9_nope"], cwd=REPO)
    assert proc.returncode == 2 and "unknown lab 'lab9_nope'" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.choose_submissions(REPO, LAB, tmp_path / "missing")


def test_collect_copies_submissions_and_replaces_stale_copies(tmp_path: Path) -> None:
    course, source = tmp_path / "course", tmp_path / "incoming"
    for student in ("alice", "bob"):
        (source / student / LAB).mkdir(parents=True)
        (source / student / LAB / NOTEBOOK).write_text(f"{student}'s work")
    (source / "carol" / "other_lab").mkdir(parents=True)  # another lab: not collected
    (source / "carol" / "other_lab" / "x.ipynb").write_text("{}")
    stale = course / pipeline.SUBMITTED_RELPATH / "alice" / LAB / "old_file.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier batch")
    before = digest(source)
    assert pipeline.collect(course, LAB, source) == (["alice", "bob"], [])
    assert digest(source) == before
    copied = course / pipeline.SUBMITTED_RELPATH
    assert (copied / "bob" / LAB / NOTEBOOK).read_text() == "bob's work"
    assert not stale.exists()
    # The earlier copy is kept aside, not deleted.
    assert [p.read_text() for p in (course / pipeline.WORK_RELPATH / "replaced").rglob("old_file.txt")] == [
        "from an earlier batch"]


def test_collect_copies_only_notebooks_and_skips_ids_nbgrader_would_mangle(tmp_path: Path) -> None:
    course, source = tmp_path / "course", tmp_path / "incoming"
    work = source / "alice" / LAB
    (work / "autograder").mkdir(parents=True)
    (work / NOTEBOOK).write_text("alice's work")
    # Files that would sit next to the notebook while it is graded: fake pins, a fake package.
    (work / "autograder" / "pinned_metrics.json").write_text('{"lab2_ppo": {"training": {"threshold": -1e9}}}')
    (work / "rlcourse").mkdir()
    (work / "rlcourse" / "__init__.py").write_text("")
    (work / "link.ipynb").symlink_to(work / NOTEBOOK)
    for bad in ("bad name", "smith,john", "~root", "x'y"):
        (source / bad / LAB).mkdir(parents=True)
        (source / bad / LAB / NOTEBOOK).write_text("{}")
    students, rejected = pipeline.collect(course, LAB, source)
    assert students == ["alice"]
    assert sorted(o.student for o in rejected) == sorted(["bad name", "smith,john", "~root", "x'y"])
    assert all(o.status == "invalid_id" and "not a valid student id" in o.detail for o in rejected)
    copied = course / pipeline.SUBMITTED_RELPATH / "alice" / LAB
    assert sorted(p.name for p in copied.iterdir()) == [NOTEBOOK]


# --------------------------------------------------------------------------- feedback redaction
def test_redaction_removes_hidden_tests_and_their_traceback() -> None:
    cell = nbformat.v4.new_code_cell(
        "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(3) == 0.123456\n### END HIDDEN TESTS",
        metadata={"nbgrader": {"grade": True, "grade_id": "t", "points": 1, "locked": True, "solution": False,
                               "schema_version": 3}},
    )
    cell.outputs = [nbformat.v4.new_output(
        "error", ename="AssertionError", evalue="values differ",
        traceback=["----", "      1 assert f(1) == 2", "----> 3 assert f(3) == 0.123456"])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = RedactHiddenTests().preprocess(nb, {})
    text = json.dumps(nb)
    assert "0.123456" not in text and "HIDDEN" not in text
    assert nb.cells[0].source == "assert f(1) == 2"
    assert nb.cells[0].outputs[0]["traceback"] == ["AssertionError: values differ"]


# --------------------------------------------------------------------------- processes
def test_run_with_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    """A hanging submission is stopped, kernel included (Jupyter starts kernels in their own session)."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    code, seconds = pipeline.run_with_timeout([sys.executable, "-c", script], 3, tmp_path / "log.txt", tmp_path)
    assert code is None and seconds < 300     # returned long before the 600 s sleeps: no hang
    assert "wall-clock limit" in (tmp_path / "log.txt").read_text()
    import psutil

    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_run_with_timeout_returns_the_exit_status(tmp_path: Path) -> None:
    code, _ = pipeline.run_with_timeout([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], 60,
                                        tmp_path / "log.txt", tmp_path)
    assert code == 3 and "hi" in (tmp_path / "log.txt").read_text()


def test_nbgrader_command_runs_nbgrader_without_the_slow_optional_import(tmp_path: Path) -> None:
    from rlcourse.grading import release

    proc = subprocess.run(release.nbgrader_command(tmp_path, "--version"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=release.nbgrader_env())
    assert proc.returncode == 0 and "nbgrader version" in proc.stdout, proc.stderr
    # The same start-up, then what every nbgrader command does: load and validate a notebook.
    check = (release.NBGRADER_MAIN.split("from nbgrader")[0]
             + "import nbformat; nbformat.validate(nbformat.v4.new_notebook()); "
             + "print(sys.modules.get('rfc3987_syntax') is None, 'jsonschema' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True"], proc.stderr


# --------------------------------------------------------------------------- the full pipeline
# A realistic slip that must cost the GAE points and nothing else: lambda hard-coded to the
# CartPole preset's 0.8 instead of taken from the argument. The hidden checks call compute_gae
# with other lambdas and catch it; the graded training passes lam=0.8, so the run is
# bit-identical to the reference solution's and must pass. (An earlier probe, lambda in place of
# gamma * lambda, changed the training trajectory like a new seed would, and on the CI machine
# that seed fell below the pass mark: a probe must not depend on training luck.)
WRONG_GAE_CELL = '''
def compute_gae(rewards, values, dones, last_values, gamma, lam):
    lam = 0.8  # bug: the preset's value hard-coded
    T = rewards.shape[0]
    not_done = 1.0 - dones.float()
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * not_done[t] * next_values - values[t]
        next_advantage = delta + gamma * lam * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    returns = advantages + values
    return advantages, returns
'''.strip()


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `rlcourse grade lab2_ppo` over the examples plus three test students, in a course copy."""
    course = copy_course(tmp_path_factory.mktemp("course"))
    complete = example(course, "example_complete", LAB, NOTEBOOK)
    partial = example(course, "example_partial", LAB, NOTEBOOK)
    students = {
        # The instructor's notebook itself, hidden tests and solution markers included.
        "source_notebook": nbformat.read(course / "solutions" / LAB / NOTEBOOK, as_version=4),
        "wrong_gae": with_cell(complete, "compute_gae", WRONG_GAE_CELL),
        # GAE right, surrogate missing, and the GAE test cell deleted: it must come back and score.
        "deleted_test_cell": with_cell(partial, "test_gae", None),
    }
    return grade_batch(course, LAB, students, NOTEBOOK)


def _points(row: dict[str, str]) -> dict[str, float]:
    return points(row, ("test_gae", "test_surrogate", "test_training"))


@pytest.mark.slow
def test_every_submission_is_graded_and_exported(graded_course: dict[str, Any]) -> None:
    summary, grades = graded_course["summary"], graded_course["grades"]
    expected = {"example_complete", "example_partial", "example_empty", "source_notebook", "wrong_gae",
                "deleted_test_cell"}
    assert set(summary) == expected
    assert set(grades) == expected
    for student, row in summary.items():
        assert row["status"] == "graded", row
        assert float(row["max_score"]) == 10
        assert float(grades[student]["score"]) == float(row["score"]), student
        assert (graded_course["course"] / row["feedback"]).exists()


@pytest.mark.slow
def test_originals_are_never_modified(graded_course: dict[str, Any]) -> None:
    assert graded_course["before"] == graded_course["after"]


@pytest.mark.slow
@pytest.mark.parametrize("student", ["source_notebook", "example_complete"])
def test_a_correct_solution_gets_full_marks(graded_course: dict[str, Any], student: str) -> None:
    row = graded_course["summary"][student]
    assert _points(row) == {"test_gae": 3, "test_surrogate": 3, "test_training": 4}, row
    assert float(row["score"]) == 10


@pytest.mark.slow
def test_the_unmodified_release_gets_zero(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["example_empty"]
    assert float(row["score"]) == 0 and set(_points(row).values()) == {0.0}, row


@pytest.mark.slow
def test_a_wrong_gae_loses_exactly_the_gae_points(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["wrong_gae"]
    assert _points(row) == {"test_gae": 0, "test_surrogate": 3, "test_training": 4}, row
    assert float(row["score"]) == 7


@pytest.mark.slow
def test_partial_example_scores_its_gae(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["example_partial"]
    assert _points(row) == {"test_gae": 3, "test_surrogate": 0, "test_training": 0}, row


@pytest.mark.slow
def test_a_deleted_test_cell_is_restored_and_graded(graded_course: dict[str, Any]) -> None:
    row = graded_course["summary"]["deleted_test_cell"]
    assert _points(row) == {"test_gae": 3, "test_surrogate": 0, "test_training": 0}, row
    graded = graded_course["course"] / "autograder" / "autograded" / "deleted_test_cell" / LAB / NOTEBOOK
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(graded, as_version=4).cells]
    assert "test_gae" in ids


@pytest.mark.slow
def test_feedback_shows_neither_hidden_tests_nor_expected_values(graded_course: dict[str, Any]) -> None:
    # Values the hidden checks compare with (the reference on the hidden inputs) and the pass mark's source.
    secrets = []
    for case in lab2.gae_cases():
        adv, _ = reference.compute_gae(case["rewards"], case["values"], case["dones"], case["last_values"],
                                       case["gamma"], case["lam"])
        secrets += _numbers(adv, 4)
    for case in lab2.surrogate_cases():
        secrets += _numbers(reference.clipped_surrogate_loss(**case).detach(), 4)
    code = ["BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "check_gae", "check_surrogate", "check_training", "_lab2"]
    for student, row in graded_course["summary"].items():
        html = (graded_course["course"] / row["feedback"]).read_text()
        for needle in code:
            assert needle not in html, f"{student}'s feedback shows {needle!r}"
        page = re.sub(r"<style.*?</style>", "", html, flags=re.S)  # the embedded CSS is full of numbers
        # Any number printed with 3+ decimals that rounds to an expected value counts as a leak.
        shown = {f"{float(n):.4f}" for n in re.findall(r"-?\d+\.\d{3,}", page)}
        leaked = shown & set(secrets)
        assert not leaked, f"{student}'s feedback shows expected values {sorted(leaked)[:5]}"
    # The student with the wrong GAE is told which check failed (its visible hand-computed case).
    html = (graded_course["course"] / graded_course["summary"]["wrong_gae"]["feedback"]).read_text()
    assert "AssertionError: advantages" in html
