"""The grading view: what a submission can and cannot call while it is graded.

The view is imported in a fresh interpreter, as the sandbox imports it: the withheld reference
raises, a guarded one raises for the submission's code and still runs for the package's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlcourse.grading.view import view_for

PRELUDE = """
import sys
sys.path.insert(0, {root!r})
import rlcourse
assert rlcourse.__file__.startswith({root!r}), rlcourse.__file__
from rlcourse.grading.hidden import WithheldDuringGrading

def withheld(call):
    try:
        call()
    except WithheldDuringGrading as exc:
        return str(exc)
    raise AssertionError("the reference ran for the submission's code")
"""


def _run(lab: str, body: str, tmp_path: Path) -> str:
    root = str(view_for(lab, tmp_path).parent)
    code = PRELUDE.format(root=root) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_withheld_reference_raises_with_its_name(tmp_path: Path) -> None:
    out = _run("lab2_ppo", """
        import torch
        from rlcourse.algos.ppo import compute_gae
        z = torch.zeros(4, 2)
        print(withheld(lambda: compute_gae(z, z, z, torch.zeros(2), 0.99, 0.95)))
    """, tmp_path)
    assert "rlcourse.algos.ppo.compute_gae is withheld while your submission is graded" in out


def test_guarded_references_refuse_the_submission_and_serve_the_env(tmp_path: Path) -> None:
    """Lab 4: the student's sample/randomize/draw_latency/ActionLatency cannot be the reference's, in
    any disguise, while the Ant env (which draws its randomization with them) keeps working."""
    out = _run("lab4_domain_randomization", """
        import torch
        import rlcourse.envs.locomotion.randomization as R
        g = torch.Generator().manual_seed(0)
        print(withheld(lambda: R.sample("uniform", 0.0, 1.0, (3,), g)))
        print(withheld(lambda: R._default_sample("uniform", 0.0, 1.0, (3,), g)))
        print(withheld(lambda: R.randomize(torch.ones(2), torch.ones(2), "scaling")))
        print(withheld(lambda: R.ActionLatency(2, 3, 1)))
        print(withheld(lambda: R.draw_latency(0, 2, 4, g)))

        class Mine(R.ActionLatency):   # a subclass that borrows the reference's body
            pass
        print(withheld(lambda: Mine(2, 3, 1)))

        # The package's own code still runs the guarded references.
        env = rlcourse.envs.make("Ant", num_envs=2, seed=0, nthread=1, randomization={
            "friction": {"range": [0.5, 1.5], "mode": "reset"},
            "mass": {"range": [0.0, 0.3], "operation": "additive", "bodies": ["torso"], "mode": "reset"},
            "action_latency": {"range": [0, 4], "unit": "physics_steps"}})
        obs, _ = env.reset()
        for _ in range(3):
            obs, *_ = env.step(torch.zeros(2, 8))
        assert torch.isfinite(obs).all()
        frictions = env.dr.values["friction"][:, 0]
        assert ((frictions >= 0.5) & (frictions <= 1.5)).all() and frictions[0] != frictions[1], frictions
        # ...but the env's latency buffer refuses the submission's calls,
        print(withheld(lambda: env.dr._latency_buffer.step(torch.zeros(2, 8))))
        # and so does the env's own draw when the student's `sample` delegates to it.
        import dataclasses

        def sample(distribution, low, high, size, generator):
            term = dataclasses.replace(env.dr.terms["friction"], distribution=distribution, range=(low, high))
            return torch.as_tensor(env.dr.sample(term, size))

        print(withheld(lambda: sample("uniform", 0.0, 1.0, (3,), g)))
        env.dr.sample(env.dr.terms["friction"], (3,))  # outside the student's function: the env's draw
        print("env ok")
    """, tmp_path)
    lines = out.strip().splitlines()
    assert lines[-1] == "env ok"
    names = ["sample", "sample", "randomize", "ActionLatency", "draw_latency", "ActionLatency", "ActionLatency",
             "sample"]
    assert len(lines) == len(names) + 1
    for line, name in zip(lines, names):
        assert f"rlcourse.envs.locomotion.randomization.{name} is withheld" in line, line


def test_withholding_a_name_the_module_lacks_is_an_error() -> None:
    from rlcourse.grading.view import withhold

    with pytest.raises(ValueError, match="WITHHELD names nope in rlcourse.x"):
        withhold("def f():\n    return 1\n", ("nope",), "rlcourse.x", guarded=("nope",))
