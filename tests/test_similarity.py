"""Near-copies of withheld reference implementations are flagged for review, not failed."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import nbformat
import pytest

from rlcourse.algos import ppo
from rlcourse.grading import similarity

REPO = Path(__file__).resolve().parents[1]


def _solution_notebook(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "compute_gae"}
    nb.cells.append(cell)
    return nb


def test_a_pasted_reference_with_renamed_variables_is_flagged() -> None:
    source = textwrap.dedent(inspect.getsource(ppo.compute_gae))
    for old, new in (("rewards", "r"), ("advantages", "adv"), ("values", "v"), ("last_values", "boot")):
        source = source.replace(old, new)
    flags = similarity.near_copies(_solution_notebook(source), "lab2_ppo")
    assert len(flags) == 1 and "near-copy of rlcourse.algos.ppo.compute_gae" in flags[0]


def test_an_independent_solution_is_not_flagged() -> None:
    source = '''
def compute_gae(rewards, values, dones, last_values, gamma, lam):
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    gae = torch.zeros_like(last_values)
    for t in range(T - 1, -1, -1):
        nxt = last_values if t == T - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * live * nxt - values[t]
        gae = delta + gamma * lam * live * gae
        adv[t] = gae
    return adv, adv + values
'''
    assert similarity.near_copies(_solution_notebook(source), "lab2_ppo") == []


@pytest.mark.parametrize("lab", ["lab1_dqn", "lab2_ppo", "lab3_reward_shaping", "lab4_domain_randomization",
                                 "lab5_sac"])
def test_the_labs_own_solutions_are_not_flagged(lab: str) -> None:
    nb = nbformat.read(REPO / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    assert similarity.near_copies(nb, lab) == []


def test_similarity_ignores_names_docstrings_and_annotations() -> None:
    a = ast.parse('def f(x: int) -> int:\n    """doc"""\n    y = x + 1\n    return y * 2\n').body[0]
    b = ast.parse("def g(q):\n    z = q + 1\n    return z * 2\n").body[0]
    c = ast.parse("def g(q):\n    z = q - 1\n    return z / 2\n").body[0]
    assert similarity.similarity(a, b) == 1.0
    assert similarity.similarity(a, c) < 1.0
