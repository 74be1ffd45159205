"""Self-check quizzes at the end of each lecture: questions as data, checked in the notebook.

Each lecture's questions live in ``rlcourse/teaching/quizzes/<notebook stem>.yaml`` (for example
``03_policy_gradients_and_ppo.yaml``), a mapping with a ``title`` and a list of ``questions``.
A question is either

* **multiple choice**: ``options`` (a list of strings) and ``answer``, the 0-based index of the
  right option; or
* **numeric**: ``answer`` (a number) and ``tolerance`` (the largest accepted absolute error),
  optionally a ``unit``.

Both need an ``id`` (unique within the quiz), a ``prompt`` and an ``explanation`` of the right
answer. Prompts and explanations are HTML with LaTeX between ``$...$``; two bits of Markdown
are converted (```code``` and ``**bold**``), and a blank line starts a new paragraph.

* :func:`load_quiz` reads and validates one lecture's questions;
* :func:`check` says whether an answer is right (pure: no widgets);
* :func:`quiz` renders the questions as ipywidgets: a *Check* button gives feedback, a correct
  answer shows the explanation, and after a wrong one *Show answer* reveals it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

QUIZ_DIR = Path(__file__).resolve().parent / "quizzes"
"""Where the lectures' question files live (shipped as package data)."""

QUIZ_CLASS = "rlcourse-quiz"  # CSS class of the quiz's outer box (for a browser test or a site's style sheet)

_KEYS = {"id", "prompt", "explanation", "options", "answer", "tolerance", "unit"}


@dataclass(frozen=True)
class Question:
    """One quiz question: multiple choice when ``options`` is non-empty, numeric otherwise.

    Attributes:
        id: short name, unique within its quiz.
        prompt: the question (HTML + LaTeX, see the module docstring).
        explanation: why the right answer is right, shown after answering.
        options: the choices of a multiple-choice question; empty for a numeric one.
        answer: index of the right option (choice) or the right value (numeric).
        tolerance: largest accepted ``|given - answer|`` of a numeric question.
        unit: shown after the numeric input box and in the revealed answer.
    """

    id: str
    prompt: str
    explanation: str
    answer: int | float
    options: tuple[str, ...] = ()
    tolerance: float = 0.0
    unit: str = ""

    def __post_init__(self) -> None:
        where = f"question {self.id!r}"
        if not self.id or not isinstance(self.id, str):
            raise ValueError("every question needs a non-empty string id")
        for name in ("prompt", "explanation"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{where}: {name} must be a non-empty string")
        if self.options:
            if len(self.options) < 2 or len(set(self.options)) != len(self.options):
                raise ValueError(f"{where}: a choice question needs at least two distinct options")
            if not all(isinstance(o, str) and o.strip() for o in self.options):
                raise ValueError(f"{where}: options must be non-empty strings")
            if any("$" in o for o in self.options):
                # radio-button labels are plain text: LaTeX would show as raw dollars
                raise ValueError(f"{where}: options are plain text; write maths with Unicode (γ, λ, ∇), not $...$")
            if isinstance(self.answer, bool) or not isinstance(self.answer, int):
                raise ValueError(f"{where}: answer must be the 0-based index of the right option")
            if not 0 <= self.answer < len(self.options):
                raise ValueError(f"{where}: answer {self.answer} is not an index of its {len(self.options)} options")
            if self.tolerance or self.unit:
                raise ValueError(f"{where}: tolerance and unit belong to numeric questions")
        else:
            if isinstance(self.answer, bool) or not isinstance(self.answer, (int, float)) or not math.isfinite(self.answer):
                raise ValueError(f"{where}: a numeric question needs a finite number as answer")
            if not isinstance(self.tolerance, (int, float)) or not 0 <= self.tolerance < math.inf:
                raise ValueError(f"{where}: tolerance must be a finite number >= 0")

    @property
    def kind(self) -> str:
        """``"choice"`` or ``"numeric"``."""
        return "choice" if self.options else "numeric"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Question":
        """Build a question from one entry of a quiz file; unknown keys (typos) are errors."""
        if not isinstance(data, dict):
            raise ValueError(f"a question must be a mapping, got {type(data).__name__}")
        unknown = set(data) - _KEYS
        if unknown:
            raise ValueError(f"question {data.get('id')!r}: unknown keys {sorted(unknown)}")
        missing = {"id", "prompt", "explanation", "answer"} - set(data)
        if missing:
            raise ValueError(f"question {data.get('id')!r}: missing {sorted(missing)}")
        values = dict(data)
        values["options"] = tuple(values.get("options") or ())
        return cls(**values)

    def answer_text(self) -> str:
        """The right answer as a student would write it."""
        if self.options:
            return self.options[int(self.answer)]
        return f"{self.answer:g}" + (f" {self.unit}" if self.unit else "")


@dataclass(frozen=True)
class Quiz:
    """A lecture's questions, with the title shown above them."""

    title: str
    questions: tuple[Question, ...] = field(default_factory=tuple)


def quiz_names() -> list[str]:
    """The names of all shipped quizzes (the lecture notebooks' stems), sorted."""
    return sorted(p.stem for p in QUIZ_DIR.glob("*.yaml"))


def load_quiz(name: str | Path) -> Quiz:
    """Read and validate one quiz: a shipped name (``"03_policy_gradients_and_ppo"``) or a YAML path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = QUIZ_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"no quiz named {str(name)!r}; available: {', '.join(quiz_names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list) or not data["questions"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'questions' list")
    questions = tuple(Question.from_dict(q) for q in data["questions"])
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids repeat: {ids}")
    return Quiz(title=str(data.get("title", "Self-check")), questions=questions)


def parse_number(text: str | float | int | None) -> float | None:
    """A student's numeric input as a float, or ``None`` when it is not a number.

    Accepts ``"2.71"``, ``"2,71"`` (decimal comma), ``"−200"`` (Unicode minus), ``"1e-3"`` and
    simple fractions such as ``"3/4"``.
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().replace("\u2212", "-").replace(" ", "")
        if s.count(",") == 1 and "." not in s:
            s = s.replace(",", ".")
        try:
            if s.count("/") == 1:
                num, den = s.split("/")
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            return None
    return value if math.isfinite(value) else None


def check(question: Question, answer: Any) -> bool:
    """Whether ``answer`` is right: an option index or text for a choice, a number within tolerance otherwise."""
    if question.options:
        if isinstance(answer, str):
            return answer == question.options[int(question.answer)]
        if isinstance(answer, bool) or not isinstance(answer, int):
            return False
        return answer == question.answer
    value = parse_number(answer)
    if value is None:
        return False
    # A hair of slack so that an answer typed exactly at the tolerance's edge is not lost to rounding.
    slack = 1e-9 * max(1.0, abs(float(question.answer)))
    return abs(value - float(question.answer)) <= question.tolerance + slack


def to_html(text: str) -> str:
    """Question text to HTML: ```code``` and ``**bold**`` converted, blank lines start a paragraph."""
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", text.strip())
    html = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", html)
    return "<br><br>".join(part.strip() for part in re.split(r"\n\s*\n", html))


class QuestionCard:
    """The widgets of one question: prompt, input, *Check* and *Show answer* buttons, feedback.

    ``submit()`` is what *Check* runs; tests call it (or ``check_button.click()``) after setting
    ``input.value``.
    """

    CORRECT = "✔ Correct."
    WRONG = "✘ Not quite."

    def __init__(self, question: Question, number: int) -> None:
        import ipywidgets as widgets

        self.question = question
        self.attempts = 0
        prompt = widgets.HTMLMath(f"<b>{number}.</b> {to_html(question.prompt)}")
        if question.options:
            self.input = widgets.RadioButtons(options=[(to_plain(o), i) for i, o in enumerate(question.options)],
                                              value=None, layout=widgets.Layout(width="auto"))
            entry: Any = self.input
        else:
            self.input = widgets.Text(value="", placeholder="a number", layout=widgets.Layout(width="12em"))
            entry = widgets.HBox([self.input, widgets.Label(question.unit)]) if question.unit else self.input
        self.check_button = widgets.Button(description="Check", button_style="primary")
        self.reveal_button = widgets.Button(description="Show answer", disabled=True)
        self.feedback = widgets.HTMLMath("")
        self.check_button.on_click(lambda _: self.submit())
        self.reveal_button.on_click(lambda _: self.reveal())
        self.box = widgets.VBox([prompt, entry, widgets.HBox([self.check_button, self.reveal_button]), self.feedback],
                                layout=widgets.Layout(margin="0 0 1.2em 0"))

    def submit(self) -> bool:
        """Check the current input, write the feedback; returns whether it was right."""
        q, given = self.question, self.input.value
        if q.options and given is None:
            self.feedback.value = "Choose an option first."
            return False
        if not q.options and parse_number(given) is None:
            self.feedback.value = "Enter a number (for example 2.5, -0.3 or 3/4)."
            return False
        self.attempts += 1
        if check(q, given):
            self.feedback.value = f"<b>{self.CORRECT}</b> {to_html(q.explanation)}"
            self.reveal_button.disabled = True
            return True
        self.feedback.value = f"<b>{self.WRONG}</b> Try again, or press <i>Show answer</i>."
        self.reveal_button.disabled = False
        return False

    def reveal(self) -> None:
        """Show the right answer and its explanation."""
        self.feedback.value = f"<b>Answer: {to_html(self.question.answer_text())}.</b> {to_html(self.question.explanation)}"


def to_plain(text: str) -> str:
    """Option text for a radio button label (plain text: backticks and bold marks removed)."""
    return re.sub(r"\*\*([^*]+)\*\*", r"\1", text.replace("`", "")).strip()


class QuizView:
    """A rendered quiz: ``box`` is the ipywidgets container, ``cards`` one :class:`QuestionCard` per question."""

    def __init__(self, title: str, questions: Sequence[Question]) -> None:
        import ipywidgets as widgets

        self.cards = [QuestionCard(q, i + 1) for i, q in enumerate(questions)]
        header = widgets.HTML(f"<h3>{title}</h3><p>Answer, then press <i>Check</i>. Nothing is graded.</p>")
        self.box = widgets.VBox([header, *(c.box for c in self.cards)])
        self.box.add_class(QUIZ_CLASS)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displaying the view displays its widget box.
        return self.box._repr_mimebundle_(**kwargs)


def quiz(source: str | Path | Quiz | Iterable[Question], title: str | None = None) -> QuizView:
    """Render a quiz as widgets: a shipped quiz's name, a YAML path, a :class:`Quiz` or questions.

    Make it the last expression of a notebook cell to display it.
    """
    if isinstance(source, (str, Path)):
        source = load_quiz(source)
    if isinstance(source, Quiz):
        return QuizView(title or source.title, source.questions)
    return QuizView(title or "Self-check", list(source))
