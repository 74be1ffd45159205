"""Lecture self-check quizzes: valid answer keys, numeric answers recomputed, widgets that give feedback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from rlcourse.teaching.quiz import QUIZ_DIR, Question, QuestionCard, check, load_quiz, parse_number, quiz, quiz_names

COURSE = Path(__file__).resolve().parent.parent / "course"
LECTURES = sorted(p.stem for p in COURSE.glob("*.ipynb"))


def _discounted(rewards: list[float], gamma: float) -> float:
    return sum(gamma**k * r for k, r in enumerate(rewards))


def _gae_first(rewards: list[float], values: list[float], last_value: float, gamma: float, lam: float) -> float:
    # GAE by its definition: sum_l (gamma*lam)^l delta_l, no episode end inside the rollout
    v = values + [last_value]
    deltas = [r + gamma * v[t + 1] - v[t] for t, r in enumerate(rewards)]
    return sum((gamma * lam) ** l * d for l, d in enumerate(deltas))


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# Every numeric answer, recomputed from the question's own numbers (first principles, not the library).
RECOMPUTED = {
    ("01_rl_loop_and_mdps", "discounted-return"): _discounted([1, 0, 0, 10], 0.9),
    ("01_rl_loop_and_mdps", "effective-horizon"): (1 / (1 - 0.98)) / 50,             # steps / (steps per s)
    ("01_rl_loop_and_mdps", "bellman-backup"): -0.04 + 0.9 * (0.9 * 0.8 + 0.1 * -1),
    ("02_value_based_rl_dqn", "dqn-target"): 1 + 0.9 * max(2, 5),
    ("02_value_based_rl_dqn", "double-dqn-target"): 1 + 0.9 * [2, 5][max(range(2), key=[9, 0].__getitem__)],
    ("02_value_based_rl_dqn", "time-out-target"): 1 + 0.9 * max(3, 4),
    ("03_policy_gradients_and_ppo", "gae-two-steps"): _gae_first([1, 1], [2, 1], 2, 0.9, 0.5),
    ("03_policy_gradients_and_ppo", "clip-bad-action"): min(1.5 * -1, min(max(1.5, 0.8), 1.2) * -1),
    ("04_off_policy_ddpg_and_sac", "polyak-lag"): 1 - (1 - 0.005) ** 200,
    ("04_off_policy_ddpg_and_sac", "sac-target"): 1 + 0.9 * (min(5, 4) - 0.2 * -1),
    ("04_off_policy_ddpg_and_sac", "discretized-actions"): 3**12,
    ("05_massively_parallel_simulation", "batch-size"): 4096 * 24,
    ("05_massively_parallel_simulation", "minibatch-size"): 4096 * 24 // 4,
    ("05_massively_parallel_simulation", "ten-million-steps"): 10_000_000 / (4096 / 0.020),
    ("05_massively_parallel_simulation", "gae-weight-at-horizon"): (0.99 * 0.95) ** 24,
    ("06_reward_engineering", "progress-leftover"): (1 - 0.99) * (-1000 / 0.05),
    ("06_reward_engineering", "shaping-telescopes"): (0.9 * -1 - -3) + 0.9 * (0.9 * 0 - -1),
    ("06_reward_engineering", "bonus-loop"): 0.3 / (1 - 0.9**2),
    ("07_domain_randomization_and_sim_to_real", "uniform-above-nominal"): (2 - 1) / (2 - 0.5),
    ("07_domain_randomization_and_sim_to_real", "gaussian-negative-mass"): _normal_cdf((0 - 1.0) / 0.5),
    ("07_domain_randomization_and_sim_to_real", "latency-steps"): 0.040 / (1 / 50),
    ("08_monitoring_and_deployment", "adaptive-lr"): 3e-4 / 1.5 if 0.03 > 2 * 0.01 else 3e-4,
}

ALL = [(name, q) for name in quiz_names() for q in load_quiz(name).questions]
NUMERIC = [(name, q) for name, q in ALL if q.kind == "numeric"]
CHOICE = [(name, q) for name, q in ALL if q.kind == "choice"]


def _ids(items: list[tuple[str, Question]]) -> list[str]:
    return [f"{name[:2]}-{q.id}" for name, q in items]


def test_every_lecture_has_a_quiz_of_three_to_five_questions() -> None:
    assert LECTURES, "no lecture notebooks found"
    assert quiz_names() == LECTURES, "one quiz file per lecture notebook, named after it"
    for name in LECTURES:
        assert 3 <= len(load_quiz(name).questions) <= 5, name


@pytest.mark.parametrize("name", LECTURES)
def test_lecture_notebook_ends_with_its_quiz(name: str) -> None:
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "code" and "quiz(" in last.source and f'"{name}"' in last.source, \
        f"{name}: the last cell must call quiz({name!r})"
    assert not last.get("outputs"), "notebooks are committed without outputs"


@pytest.mark.parametrize(("name", "q"), NUMERIC, ids=_ids(NUMERIC))
def test_numeric_answer_matches_first_principles(name: str, q: Question) -> None:
    assert (name, q.id) in RECOMPUTED, f"add a recomputation of {name}/{q.id} to RECOMPUTED"
    truth = RECOMPUTED[(name, q.id)]
    assert abs(q.answer - truth) <= q.tolerance + 1e-9 * max(1.0, abs(truth)), (q.answer, truth)
    assert check(q, truth) and check(q, str(truth))
    # The tolerance is meaningful (at most 15 % of the answer), and slips are rejected:
    # 20 % off, the wrong sign, a percentage typed for a fraction.
    assert truth != 0 and q.tolerance <= 0.15 * abs(truth)
    assert not check(q, truth * 1.2) and not check(q, -truth)
    if abs(truth) < 1:
        assert not check(q, 100 * truth)


def test_recomputations_all_belong_to_questions() -> None:
    keys = {(name, q.id) for name, q in NUMERIC}
    assert set(RECOMPUTED) == keys, set(RECOMPUTED) ^ keys


@pytest.mark.parametrize(("name", "q"), CHOICE, ids=_ids(CHOICE))
def test_choice_key_is_valid_and_only_it_is_accepted(name: str, q: Question) -> None:
    assert 0 <= q.answer < len(q.options) and len(q.options) >= 3
    accepted = [i for i in range(len(q.options)) if check(q, i)]
    assert accepted == [q.answer]
    assert check(q, q.options[q.answer]) and not check(q, q.options[(q.answer + 1) % len(q.options)])
    assert not check(q, True) and not check(q, None) and not check(q, float(q.answer))


@pytest.mark.parametrize(("name", "q"), ALL, ids=_ids(ALL))
def test_explanations_are_substantial(name: str, q: Question) -> None:
    assert len(q.explanation.split()) >= 12, "explain why the answer is right, not only what it is"
    assert q.prompt.count("$") % 2 == 0 and q.explanation.count("$") % 2 == 0, "unbalanced $ in the LaTeX"
    # the text is HTML: a bare "<" could open a tag (write \lt in LaTeX)
    assert "<" not in q.prompt + q.explanation


def test_parse_number_forms() -> None:
    assert parse_number("2.71") == 2.71
    assert parse_number("2,5") == 2.5
    assert parse_number("\u2212200") == -200
    assert parse_number("3/4") == 0.75
    assert parse_number("2e-4") == 2e-4
    for bad in ("", "abc", "1/0", "nan", "inf", None, True):
        assert parse_number(bad) is None


def _numeric(answer: float = 2.5, tolerance: float = 0.1) -> Question:
    return Question(id="n", prompt="How much?", explanation="Because.", answer=answer, tolerance=tolerance)


def test_check_numeric_tolerance_edges() -> None:
    q = _numeric()
    assert check(q, 2.6) and check(q, 2.4) and check(q, "2.45")
    assert not check(q, 2.61) and not check(q, "two") and not check(q, None)


@pytest.mark.parametrize("bad", [
    dict(options=("a", "b"), answer=2),          # index out of range
    dict(options=("a", "a"), answer=0),          # repeated options
    dict(options=("a", "b"), answer=True),       # a bool is not an index
    dict(options=("$x$", "b"), answer=0),        # LaTeX in a plain-text label
    dict(answer=float("nan")),                   # numeric without a finite answer
    dict(answer=1.0, tolerance=-0.1),
    dict(answer=1.0, explanation=" "),
])
def test_invalid_questions_are_rejected(bad: dict) -> None:
    fields = dict(id="x", prompt="p", explanation="e") | bad
    with pytest.raises(ValueError):
        Question(**fields)


def test_quiz_file_errors(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("questions:\n  - {id: a, prompt: p, explanation: e, answr: 1}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_quiz(typo)
    dup = tmp_path / "dup.yaml"
    dup.write_text("questions:\n  - {id: a, prompt: p, explanation: e, answer: 1}\n"
                   "  - {id: a, prompt: q, explanation: e, answer: 2}\n")
    with pytest.raises(ValueError, match="repeat"):
        load_quiz(dup)
    with pytest.raises(ValueError, match="no quiz named"):
        load_quiz("99_no_such_lecture")


def test_quiz_files_are_package_data() -> None:
    # pyproject ships rlcourse/teaching/quizzes/*.yaml with the package
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert "teaching/quizzes/*.yaml" in text
    assert QUIZ_DIR.is_dir()


# --- the widgets ---------------------------------------------------------------------------------


def test_numeric_card_feedback_on_click() -> None:
    q = load_quiz("05_massively_parallel_simulation").questions[0]     # 4096 x 24
    card = QuestionCard(q, 1)
    assert card.feedback.value == "" and card.reveal_button.disabled
    card.check_button.click()                                          # nothing typed yet
    assert "Enter a number" in card.feedback.value and card.attempts == 0
    card.input.value = "90000"
    card.check_button.click()
    assert QuestionCard.WRONG in card.feedback.value and "transitions" not in card.feedback.value  # no explanation yet
    assert not card.reveal_button.disabled
    card.reveal_button.click()
    assert "98304" in card.feedback.value and "Answer" in card.feedback.value
    card.input.value = "98304"
    card.check_button.click()
    assert QuestionCard.CORRECT in card.feedback.value and "transitions" in card.feedback.value
    assert card.reveal_button.disabled and card.attempts == 2


def test_choice_card_feedback_on_value_change_and_click() -> None:
    q = load_quiz("02_value_based_rl_dqn").questions[-1]               # double DQN reduces the bias
    card = QuestionCard(q, 5)
    assert [label for label, _ in card.input.options][1].startswith("It reduces it")
    card.check_button.click()
    assert "Choose an option" in card.feedback.value
    card.input.value = 0                                               # "removes the bias completely"
    card.check_button.click()
    assert QuestionCard.WRONG in card.feedback.value
    card.input.value = q.answer
    assert card.submit() is True
    assert QuestionCard.CORRECT in card.feedback.value and "van Hasselt" in card.feedback.value


@pytest.mark.parametrize("name", LECTURES)
def test_every_quiz_renders(name: str) -> None:
    view = quiz(name)
    questions = load_quiz(name).questions
    assert len(view.cards) == len(questions)
    assert "rlcourse-quiz" in view.box._dom_classes
    bundle = view._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    json.dumps(data["application/vnd.jupyter.widget-view+json"])
    for card, q in zip(view.cards, questions):
        card.input.value = q.answer if q.options else str(q.answer)
        card.check_button.click()
        assert QuestionCard.CORRECT in card.feedback.value, (name, q.id)
