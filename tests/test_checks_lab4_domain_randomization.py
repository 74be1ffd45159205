"""Lab 4 (domain randomization) hidden checks in both modes, and the env's override hook.

Every check runs in two modes (``grading_helpers.MODES``): in-process (the entry point, as in
the instructor's notebook) and graded (``judge.simulate``: the student's half as in the sandbox,
its records reloaded as tensors only, judged by the grader's half). The references are the
building blocks of :mod:`rlcourse.envs.locomotion.randomization`: they pass every check; every
wrong implementation a student is likely to write is rejected with a message that names the
mistake and shows no expected numbers; the override hook plugs a student's functions into the
env; the training check re-evaluates the recorded nominal policy (the shipped walker here, no
training) and compares with the pinned pass mark. (The full nbgrader round trip of the lab is
in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import mujoco
import numpy as np
import pytest
import torch

import rlcourse
import rlcourse.pretrained
from rlcourse.envs.locomotion import randomization as reference
from rlcourse.grading import common
from rlcourse.grading import lab4_domain_randomization as checks
from rlcourse.grading.hidden import plain

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab4_domain_randomization"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong samplers
def loguniform_as_uniform(distribution, low, high, size, generator):
    if distribution == "loguniform":
        distribution = "uniform"   # forgot the log: most draws above the geometric mean
    return reference.sample(distribution, low, high, size, generator)


def loguniform_log10(distribution, low, high, size, generator):
    if distribution == "loguniform":
        a, b = math.log10(low), math.log10(high)
        return torch.exp(a + (b - a) * torch.rand(size, generator=generator, dtype=torch.float64))
    return reference.sample(distribution, low, high, size, generator)


def gaussian_variance(distribution, low, high, size, generator):
    if distribution == "gaussian":
        return low + high**2 * torch.randn(size, generator=generator, dtype=torch.float64)   # std read as variance
    return reference.sample(distribution, low, high, size, generator)


def float32_draws(distribution, low, high, size, generator):
    return reference.sample(distribution, low, high, size, generator).float()


def global_rng(distribution, low, high, size, generator):
    return reference.sample(distribution, low, high, size, None)   # torch's global generator


def uniform_ignores_low(distribution, low, high, size, generator):
    if distribution == "uniform":
        return high * torch.rand(size, generator=generator, dtype=torch.float64)
    return reference.sample(distribution, low, high, size, generator)


def one_draw_per_row(distribution, low, high, size, generator):
    x = reference.sample(distribution, low, high, tuple(size[:1]) + (1,) * (len(size) - 1), generator)
    return x.expand(size).clone()


def randomize_swapped(nominal, draws, operation):
    return nominal + draws if operation == "scaling" else nominal * draws


def randomize_no_error(nominal, draws, operation):
    return nominal * draws if operation == "scaling" else nominal + draws


def randomize_in_place(nominal, draws, operation):
    if operation == "scaling":
        return draws.mul_(nominal)
    return reference.randomize(nominal, draws, operation)


# --------------------------------------------------------------------------- wrong noise / latency
def noise_variance(obs, mean, std, generator):
    return reference.add_obs_noise(obs, mean, std**2, generator)


def noise_in_place(obs, mean, std, generator):
    noise = mean + std * torch.randn(tuple(obs.shape), generator=generator, dtype=torch.float64)
    obs += noise.to(obs.dtype)
    return obs


def noise_per_row(obs, mean, std, generator):
    noise = mean + std * torch.randn(obs.shape[0], 1, generator=generator, dtype=torch.float64)
    return obs + noise.to(obs.dtype)


def noise_float64(obs, mean, std, generator):
    return obs.double() + mean + std * torch.randn(tuple(obs.shape), generator=generator, dtype=torch.float64)


def noise_uniform(obs, mean, std, generator):
    return obs + (mean + std * torch.rand(tuple(obs.shape), generator=generator)).to(obs.dtype)


def latency_excludes_high(low, high, n, generator):
    return torch.randint(int(low), int(high), (n,), generator=generator)   # randint's high is exclusive


def latency_float(low, high, n, generator):
    return torch.floor(low + (high - low + 1) * torch.rand(n, generator=generator))


class LatencyOffByOne(reference.ActionLatency):
    def step(self, actions):
        self.history[:, 0] = actions                 # written before the roll: one step too late
        self.history = torch.roll(self.history, shifts=1, dims=1)
        return self.history[torch.arange(self.history.shape[0]), self.delays]


class LatencyKeepsHistory(reference.ActionLatency):
    def reset(self, env_ids, delays):
        self.delays[env_ids] = delays                # forgets to clear the history


class LatencyIgnoresDelays(reference.ActionLatency):
    def step(self, actions):
        super().step(actions)
        return self.history[:, 1]                    # always one step, whatever the env's delay


# The two slips the old round trip submitted as whole solution cells, one per function part:
# the Gaussian branch reads the second number of the range as a variance, and the observation
# noise is added in place.
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


def _cell(source: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"torch": torch, "math": math}
    exec(source, ns)
    return ns


def _no_expected_numbers(message: str) -> None:
    """Failure messages end up in the feedback: no exact moments of the hidden sampler cases and
    no action the latency buffer should have returned."""
    for case in checks.sampler_cases(1):
        if case["kind"] == "draws":
            for value in checks.expected_moments(case).values():
                if value not in (0.0, 1.0, 1.8, 3.0):
                    assert f"{value:.4f}" not in message and f"{value:.3f}" not in message, message
    for case in checks.noise_latency_cases(1):
        if case["kind"] == "buffer":
            for value in case["actions"].flatten().tolist():
                assert f"{value:.3f}" not in message, message


def _verdict(entry: Callable, *args: Any, mode: str, folder: Path) -> str | None:
    verdict = check_verdict(entry, *args, mode=mode, folder=folder)
    if verdict is not None:
        _no_expected_numbers(verdict)
    return verdict


# --------------------------------------------------------------------------- sampler check
@pytest.mark.parametrize("mode", MODES)
def test_sampler_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert _verdict(checks.check_sampler, reference.sample, reference.randomize, mode=mode, folder=tmp_path) is None


def other_correct_sampler(distribution, low, high, size, generator):
    """Inverse-CDF / Box-Muller: another random stream than the reference's, the same distributions."""
    u = 1.0 - torch.rand(size, generator=generator, dtype=torch.float64)     # (0, 1]
    if distribution == "uniform":
        return high - (high - low) * u
    if distribution == "loguniform":
        return high * torch.pow(low / high, 1.0 - u) if low != high else torch.full(size, float(low), dtype=torch.float64)
    z = torch.sqrt(-2.0 * torch.log(u)) * torch.cos(2 * math.pi * torch.rand(size, generator=generator, dtype=torch.float64))
    return low + high * z


@pytest.mark.parametrize("mode", MODES)
def test_sampler_check_accepts_a_different_correct_sampler(mode: str, tmp_path: Path) -> None:
    """Statistics, not equality with the reference stream."""
    assert _verdict(checks.check_sampler, other_correct_sampler, reference.randomize, mode=mode,
                    folder=tmp_path) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fresh_cases_pass_the_reference_and_depend_on_the_seed(seed: int, tmp_path: Path) -> None:
    from rlcourse.grading import judge

    assert judge.simulate(checks.SAMPLER, other_correct_sampler, reference.randomize, seed=seed,
                          folder=tmp_path / "s") is None
    assert judge.simulate(checks.NOISE_LATENCY, reference.add_obs_noise, reference.draw_latency,
                          reference.ActionLatency, seed=seed, folder=tmp_path / "n") is None
    def ranges(cases: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
        return [(c["distribution"], c["low"], c["high"]) for c in cases if c["kind"] == "draws"]

    fixed = ranges(checks.sampler_cases())
    fresh = [r for r in ranges(checks.sampler_cases(seed)) if r not in fixed]
    assert len(fresh) == 3 and fresh != [r for r in ranges(checks.sampler_cases(seed + 10)) if r not in fixed]
    buffers = [c for c in checks.noise_latency_cases(seed) if c["kind"] == "buffer"]
    again = [c for c in checks.noise_latency_cases(seed) if c["kind"] == "buffer"]
    assert len(buffers) == 2 and torch.equal(buffers[1]["actions"], again[1]["actions"])   # same seed, same case


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (loguniform_as_uniform, "loguniform"),
        (loguniform_log10, "loguniform"),
        (gaussian_variance, "standard deviation"),
        (float32_draws, "float64"),
        (global_rng, "only from `generator`"),
        (uniform_ignores_low, "outside"),
        (one_draw_per_row, "independent"),
        (lambda *args: object(), "must return a torch tensor"),
        (lambda *args: "draws", "must return a torch tensor"),
        (lambda *args: 1 / 0, "raised an error on a hidden case: ZeroDivisionError"),
    ],
)
def test_sampler_check_rejects_wrong_samplers(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = _verdict(checks.check_sampler, wrong, reference.randomize, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [(randomize_swapped, "does not apply"), (randomize_no_error, "ValueError"), (randomize_in_place, "in place"),
     (lambda nominal, draws, op: [1.0], "must return a torch tensor")],
)
def test_sampler_check_rejects_wrong_randomize(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = _verdict(checks.check_sampler, reference.sample, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict


@pytest.mark.parametrize("mode", MODES)
def test_statistical_tolerance_is_tight_enough_to_see_small_errors(mode: str, tmp_path: Path) -> None:
    """6 standard errors of 200,000 draws: a 5 % error of a uniform's width is far outside."""
    se_mean = (1.5 - 0.5) / math.sqrt(12 * checks.SAMPLE_SIZE)
    assert checks.Z_TOLERANCE * se_mean < 0.05 * 0.1

    def slightly_narrow(distribution, low, high, size, generator):
        if distribution == "uniform":
            return reference.sample(distribution, low, high - 0.05 * (high - low), size, generator)
        return reference.sample(distribution, low, high, size, generator)

    verdict = _verdict(checks.check_sampler, slightly_narrow, reference.randomize, mode=mode, folder=tmp_path)
    assert verdict is not None and "further from" in verdict


# --------------------------------------------------------------------------- noise / latency check
@pytest.mark.parametrize("mode", MODES)
def test_noise_latency_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert _verdict(checks.check_noise_latency, reference.add_obs_noise, reference.draw_latency,
                    reference.ActionLatency, mode=mode, folder=tmp_path) is None


class LatencyReturnsNothing(reference.ActionLatency):
    def step(self, actions):
        super().step(actions)                        # forgets the return


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "noise, draw, cls, message",
    [
        (noise_variance, reference.draw_latency, reference.ActionLatency, "standard deviation"),
        (noise_in_place, reference.draw_latency, reference.ActionLatency, "in place"),
        (noise_per_row, reference.draw_latency, reference.ActionLatency, "correlated"),
        (noise_float64, reference.draw_latency, reference.ActionLatency, "dtype"),
        (noise_uniform, reference.draw_latency, reference.ActionLatency, "noise values"),
        (reference.add_obs_noise, latency_excludes_high, reference.ActionLatency, "both ends included"),
        (reference.add_obs_noise, latency_float, reference.ActionLatency, "int64"),
        (reference.add_obs_noise, reference.draw_latency, LatencyOffByOne, "wrong action"),
        (reference.add_obs_noise, reference.draw_latency, LatencyKeepsHistory, "after a reset"),
        (reference.add_obs_noise, reference.draw_latency, LatencyIgnoresDelays, "wrong action"),
        (reference.add_obs_noise, reference.draw_latency, LatencyReturnsNothing, "must return a torch tensor"),
    ],
)
def test_noise_latency_check_rejects_wrong_implementations(noise, draw, cls, message: str, mode: str,
                                                           tmp_path: Path) -> None:
    verdict = _verdict(checks.check_noise_latency, noise, draw, cls, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict


@pytest.mark.parametrize("mode", MODES)
def test_wrong_solution_cells_fail_only_their_own_check(mode: str, tmp_path: Path) -> None:
    wrong_sampler = _cell(WRONG_SAMPLER_CELL)
    verdict = _verdict(checks.check_sampler, wrong_sampler["sample"], wrong_sampler["randomize"], mode=mode,
                       folder=tmp_path / "a")
    assert verdict is not None and "standard deviation" in verdict
    wrong_noise = _cell(WRONG_NOISE_CELL)
    verdict = _verdict(checks.check_noise_latency, wrong_noise["add_obs_noise"], wrong_noise["draw_latency"],
                       wrong_noise["ActionLatency"], mode=mode, folder=tmp_path / "b")
    assert verdict is not None and "in place" in verdict
    # The rest of that cell is right.
    assert _verdict(checks.check_noise_latency, reference.add_obs_noise, wrong_noise["draw_latency"],
                    wrong_noise["ActionLatency"], mode=mode, folder=tmp_path / "c") is None


@pytest.mark.parametrize(
    "check, outputs, message",
    [
        (checks.judge_sampler, {"x": "<Foo>", "y": None}, "must return a torch tensor, got <Foo>"),
        (checks.judge_sampler, {"x": torch.zeros(3, dtype=torch.complex128)}, "size="),
        (checks.judge_noise_latency, {"steps": "<generator>", "modified": []}, "at every step"),
        (checks.judge_noise_latency, {"steps": [torch.zeros(2)] * 14, "modified": [False] * 14}, "must return"),
    ],
)
def test_judges_fail_clearly_on_garbage_records(check: Callable, outputs: dict[str, Any], message: str) -> None:
    """While grading, the records come from the sandbox: any content fails with a message."""
    cases = checks.sampler_cases() if check is checks.judge_sampler else checks.noise_latency_cases()
    case = next(c for c in cases if c["kind"] in ("draws", "buffer"))
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(case, outputs)


def test_withheld_and_guarded_names_are_the_student_functions() -> None:
    """All five student functions are withheld: strictly the one the env never runs, behind a guard
    the four the env runs (tests/test_grading_view.py tests the guard itself)."""
    ((module, strict),) = checks.WITHHELD.items()
    assert checks.GUARDED == {module: ("sample", "randomize", "draw_latency", "ActionLatency")}
    assert set(strict) == {"add_obs_noise"}
    # The env never calls add_obs_noise; it draws delays (draw_latency) for the action_latency term
    # of the graded cell's training config, and for the latency cells of its sweep.
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    env_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DomainRandomization")
    assert "add_obs_noise" not in {n.id for n in ast.walk(env_class) if isinstance(n, ast.Name)}
    assert "action_latency" in PINS["protocol"]["test_training"]
    assert "action_latency_physics_steps" in checks.EVALUATION["sweep"]


# --------------------------------------------------------------------------- the env hook
HOOK_RANDOMIZATION = {
    "friction": {"range": [0.03, 2.0], "distribution": "loguniform", "mode": "reset"},
    "mass": {"range": [0.03, 30.0], "distribution": "loguniform", "operation": "additive",
             "bodies": ["torso"], "mode": "reset"},
    "obs_noise": {"range": [0.0, 0.01]},
    "action_latency": {"range": [0, 7], "unit": "physics_steps"},   # 0-1 control steps and 0-4 physics steps
    "joint_damping": {"range": [0.5, 2.0], "distribution": "loguniform"},
}
REFERENCE_FUNCTIONS = dict(sample=reference.sample, randomize=reference.randomize, obs_noise=reference.add_obs_noise,
                           draw_latency=reference.draw_latency, latency_buffer=reference.ActionLatency)


def _rollout(override: dict[str, Any] | None, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    env = rlcourse.envs.make("Ant", num_envs=4, seed=3, randomization=HOOK_RANDOMIZATION, episode_length=15,
                             nthread=1)
    if override is not None:
        env.dr.override(**override)
    else:
        env.dr.startup()   # override() redraws the startup values: draw them again here too
    obs, _ = env.reset()
    g = torch.Generator().manual_seed(0)
    out = [obs]
    for _ in range(steps):
        obs, _, _, _, extras = env.step(torch.rand(4, 8, generator=g) * 2 - 1)
        out += [obs, extras["final_obs"]]
    masses = torch.from_numpy(np.stack([m.body_mass.copy() for m in env.sim.models]))
    env.close()
    return torch.stack(out), masses


def test_override_with_the_reference_functions_changes_nothing() -> None:
    """The hook is transparent: the reference functions given as a student's reproduce the
    env's own draws bit for bit (the observation noise and the latency buffer included)."""
    a, ma = _rollout(None)
    b, mb = _rollout(REFERENCE_FUNCTIONS)
    assert torch.equal(a, b) and torch.equal(ma, mb)


def test_override_uses_the_given_functions() -> None:
    calls: dict[str, int] = {"sample": 0, "randomize": 0, "noise": 0, "latency": 0, "buffer": 0}

    def counted(name: str, fn: Callable) -> Callable:
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    class Buffer(reference.ActionLatency):
        def step(self, actions):
            calls["buffer"] += 1
            return super().step(actions)

    _rollout(dict(sample=counted("sample", reference.sample), randomize=counted("randomize", reference.randomize),
                  obs_noise=counted("noise", reference.add_obs_noise),
                  draw_latency=counted("latency", reference.draw_latency), latency_buffer=Buffer), steps=20)
    assert all(v > 0 for v in calls.values()), calls
    # A wrong sampler changes the robots: every payload draw is 2 kg, added to the torso only.
    _, masses = _rollout(dict(sample=lambda d, lo, hi, size, g: torch.full(size, 2.0, dtype=torch.float64)), steps=1)
    model = rlcourse.envs.make("Ant", num_envs=1, nthread=1).model
    nominal = torch.as_tensor(model.body_mass)
    torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    assert torch.allclose(masses[:, torso], nominal[torso] + 2.0)
    others = [b for b in range(model.nbody) if b != torso]
    assert torch.equal(masses[:, others], nominal[others].expand(len(masses), -1))


def test_override_rejects_a_sampler_with_the_wrong_shape() -> None:
    env = rlcourse.envs.make("Ant", num_envs=2, randomization={"mass": {"range": [0.5, 2.0]}}, nthread=1)
    with pytest.raises(ValueError, match="shape"):
        env.dr.override(sample=lambda d, lo, hi, size, g: torch.ones(3, dtype=torch.float64))
    env.close()


# --------------------------------------------------------------------------- training check
GRID_SHAPE = np.shape(PINS["runs"][0]["measured"]["randomized_grid"])
NOMINAL_CELL = tuple(checks.SWEEP[key].index(value) for key, value in checks.NOMINAL_CONDITION.items())
# The grader's re-evaluation cut to the nominal robot and one other cell, one episode each (a
# fraction of a second). No latency: the shipped walker (the "good" policy below) falls with 40 ms,
# where an untrained policy stands still and scores more.
QUICK_EVALUATION = {"task": "Ant", "sweep": {"friction": [1.0, 1.5], "added_mass": [0.0], "actuator_strength": [1.0],
                                             "action_latency_physics_steps": [0]},
                    "episodes": 1, "num_envs": 1, "env_kwargs": {"episode_length": 300}}
# The evaluation seed of each mode: the fixed one in-process, judge.simulate's default while graded.
EVAL_SEEDS = {"in_process": None, "graded": 12345}


@pytest.fixture(scope="module")
def walker() -> Any:
    """A good policy: the shipped walker (an Ant PPO with the pinned hyperparameters), loaded the
    way the graded cell loads it, without the fine-tuning."""
    env = rlcourse.envs.make("Ant", num_envs=4, seed=0)
    yield rlcourse.pretrained.load("ant_walker", env=env)
    env.close()


@pytest.fixture(scope="module")
def untrained() -> Any:
    """A poor policy: an untrained Ant PPO with the pinned hyperparameters."""
    env = rlcourse.envs.make("Ant", num_envs=4, seed=0)
    yield rlcourse.PPO(env, seed=0, preset=None, **PINS["agent_config"])
    env.close()


def _pins(monkeypatch: pytest.MonkeyPatch, folder: Path, threshold: float) -> dict[str, Any]:
    """The lab's pins with ``threshold`` as the pass mark, served from a copy; the grader's sweep
    cut short. The agent-config check sees the agents' real config."""
    monkeypatch.setattr(checks, "EVALUATION", QUICK_EVALUATION)
    return serve_pins(monkeypatch, folder, LAB, {**PINS, "threshold": threshold}, config_dict=None)


def _namespace(randomized_agent: Any, nominal_agent: Any, randomized: float = 500.0,
               nominal: float = 400.0) -> dict[str, Any]:
    """What the graded cell leaves behind: ``result`` with both policies' grids as it printed them
    (means as given, a worst cell 40 below), both trained ``agents`` and ``agent`` (the nominal
    one, the last its loop trains)."""
    result = {}
    for name, mean in (("randomized", randomized), ("nominal", nominal)):
        grid = np.full(GRID_SHAPE, mean, dtype=float)
        grid[0, 0, 0, 0] = mean - 40.0
        grid[0, 0, 0, 1] = mean + 40.0
        result[name] = {"grid": grid.round(3).tolist(), "worst_case_return": float(grid.min()),
                        "mean_return": float(grid.mean()), "nominal_return": float(grid[NOMINAL_CELL])}
    return {"result": result, "agent": nominal_agent,
            "agents": {"randomized": randomized_agent, "nominal": nominal_agent}}


def _training_verdict(ns: dict[str, Any], mode: str, folder: Path) -> str | None:
    """The training check's verdict in ``mode``. While grading, a `result` that :func:`measure`
    refuses stops the sandbox half: the cell fails with that error, which the student reads."""
    try:
        return check_verdict(checks.check_training, ns, mode=mode, folder=folder)
    except AssertionError as exc:
        assert mode == "graded"
        return str(exc)


@pytest.mark.parametrize("mode", MODES)
def test_training_check_grades_the_graders_evaluation_of_both_policies(
        walker: Any, untrained: Any, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which policy is better is the grader's own measurement (fresh seed while grading): the
    numbers the cell printed decide nothing."""
    _pins(monkeypatch, tmp_path / "pins", threshold=-1e6)   # the pass mark decides nothing here
    record = plain(checks.record_training(_namespace(walker, untrained)))
    good, poor = (checks.evaluate_policy(record, name, EVAL_SEEDS[mode]) for name in ("randomized", "nominal"))
    assert all(checks.claim_holds(good, poor).values()), (good, poor)
    good, poor = good["mean"], poor["mean"]
    # Printed: randomized far below nominal; measured: randomized better. Passes.
    assert _training_verdict(_namespace(walker, untrained, 0.0, 900.0), mode, tmp_path / "a") is None
    # Printed: randomized far above nominal; measured: randomized worse. Fails.
    verdict = _training_verdict(_namespace(untrained, walker, 900.0, 0.0), mode, tmp_path / "b")
    assert verdict is not None and "not higher than the nominal" in verdict
    assert not shows_number(verdict, round(good, 1)) and not shows_number(verdict, round(poor, 1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset, passes", [(-50.0, True), (1.0, False), (200.0, False)])
def test_training_check_compares_with_the_pinned_pass_mark(walker: Any, untrained: Any, offset: float, passes: bool,
                                                           mode: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass mark applies to the grader's evaluation of the randomized policy."""
    _pins(monkeypatch, tmp_path / "pins", threshold=-1e6)
    record = plain(checks.record_training(_namespace(walker, untrained)))
    measured = checks.evaluate_policy(record, "randomized", EVAL_SEEDS[mode])["mean"]
    t = _pins(monkeypatch, tmp_path / "pins2", threshold=measured + offset)["threshold"]
    verdict = _training_verdict(_namespace(walker, untrained, 9999.0, 0.0), mode, tmp_path)
    if passes:
        assert verdict is None
    else:
        assert verdict is not None and "below the pinned pass mark" in verdict
        assert not shows_number(verdict, round(t, 1)) and not shows_number(verdict, PINS["threshold"])


@pytest.mark.parametrize("mode", MODES)
def test_training_check_accepts_the_rounded_grid_the_cell_stores(walker: Any, untrained: Any, mode: str,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell stores the grid rounded to 3 decimals next to the exact minimum and mean."""
    _pins(monkeypatch, tmp_path / "pins", threshold=-1e6)
    ns = _namespace(walker, untrained)
    ns["result"]["randomized"]["worst_case_return"] += 0.0004
    ns["result"]["randomized"]["mean_return"] += 0.0004
    assert _training_verdict(ns, mode, tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ns: ns["result"]["randomized"].update(worst_case_return=1e6), "minimum of its grid"),
        (lambda ns: ns["result"]["nominal"].update(mean_return=-1e6), "mean of its grid"),
        (lambda ns: ns["result"]["randomized"].update(nominal_return=1e6), "cell of the nominal robot"),
        (lambda ns: ns["result"]["nominal"].pop("nominal_return"), "cell of the nominal robot"),
        (lambda ns: ns["result"].pop("nominal"), "'nominal' grid"),
        (lambda ns: ns.pop("result"), "'randomized' grid"),
        (lambda ns: ns["result"]["nominal"].update(grid=ns["result"]["nominal"]["grid"][:-1]), "nominal grid must hold"),
        (lambda ns: ns["result"]["randomized"]["grid"][1][1][1].__setitem__(1, math.nan), "randomized grid must hold"),
        (lambda ns: ns["result"]["randomized"].update(grid=np.zeros((3, 3)).tolist()), "randomized grid must hold"),
        (lambda ns: ns.pop("agent"), "trained `agent`"),
        (lambda ns: ns.update(agent=type("Agent", (), {"cfg": None})()), "a trained PPO agent"),
        (lambda ns: ns.pop("agents"), "must leave `agents`"),
        (lambda ns: ns["agents"].pop("randomized"), "must leave `agents`"),
        (lambda ns: ns["agents"].update(nominal=object()), "agents['nominal'] must be a trained"),
    ],
)
def test_training_check_refuses_an_incomplete_result(walker: Any, change: Callable, message: str, mode: str,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _pins(monkeypatch, tmp_path / "pins", threshold=PINS["threshold"])["threshold"]
    ns = _namespace(walker, walker, t + 10, t)
    change(ns)
    if "agent" in ns and ns["agent"] is not walker:
        monkeypatch.setattr(common, "config_dict", lambda cfg: dict(PINS["agent_config"]))
    verdict = _training_verdict(ns, mode, tmp_path)
    assert verdict is not None and message in verdict
    assert not shows_number(verdict, t)


def test_summary_by_hand() -> None:
    """On a 3 x 2 x 3 x 3 grid of 0, 1, ..., 53 (the nominal robot at index (1, 0, 1, 0) = 21):
    mean 26.5, worst cell 0, worst case the mean of the 6 worst cells 0..5 = 2.5."""
    grid = np.arange(54.0).reshape(3, 2, 3, 3)
    assert checks.summary(grid, checks.SWEEP) == {"mean": 26.5, "worst": 0.0, "tail": 2.5, "nominal": 21.0}


def test_claim_holds_part_by_part() -> None:
    """Hand-made summaries: each part of the claim compares what it names, strictly for the mean and
    the worst case (tail; the single worst cell decides nothing), with NOMINAL_KEEP of the nominal
    policy's return on the nominal robot allowed."""
    nominal = {"mean": 400.0, "worst": 50.0, "tail": 100.0, "nominal": 700.0}
    keep = checks.NOMINAL_KEEP * 700.0
    assert checks.claim_holds({"mean": 401.0, "worst": 0.0, "tail": 101.0, "nominal": keep}, nominal) == \
        {"mean": True, "worst": True, "nominal": True}
    assert checks.claim_holds({"mean": 400.0, "worst": 99.0, "tail": 100.0, "nominal": keep - 0.01}, nominal) == \
        {"mean": False, "worst": False, "nominal": False}
    assert checks.claim_holds({"mean": 900.0, "worst": 99.0, "tail": 50.0, "nominal": 900.0}, nominal) == \
        {"mean": True, "worst": False, "nominal": True}


@pytest.mark.parametrize(
    "randomized, message",
    [
        ({"mean": 401.0, "worst": 11.0, "tail": 101.0, "nominal": 600.0}, None),
        ({"mean": 399.0, "worst": 11.0, "tail": 101.0, "nominal": 600.0}, "mean over the grid is not higher than the nominal"),
        ({"mean": 401.0, "worst": 11.0, "tail": 99.0, "nominal": 600.0}, "worst case (the mean of the worst tenth"),
        ({"mean": 401.0, "worst": 11.0, "tail": 101.0, "nominal": 100.0}, "on the nominal robot the randomized policy keeps less"),
    ],
)
def test_training_judge_fails_each_part_of_the_claim(walker: Any, randomized: dict[str, float], message: str | None,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grader's own measurements (here made up) decide; the verdict names the part that failed
    and shows none of the numbers."""
    _pins(monkeypatch, tmp_path / "pins", threshold=1.0)
    record = plain(checks.record_training(_namespace(walker, walker, 2000.0, 0.0)))
    nominal = {"mean": 400.0, "worst": 10.0, "tail": 100.0, "nominal": 700.0}
    monkeypatch.setattr(checks, "evaluate_policy", lambda rec, name, seed: randomized if name == "randomized" else nominal)
    if message is None:
        checks.judge_training(record, seed=1)
        return
    with pytest.raises(AssertionError, match=re.escape(message)) as info:
        checks.judge_training(record, seed=1)
    assert not any(shows_number(str(info.value), v) for v in (*randomized.values(), *nominal.values()))


def test_training_check_refuses_a_run_with_other_hyperparameters(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited preset: the instructor must re-pin (in-process an error, while grading the reason)."""
    _pins(monkeypatch, tmp_path / "pins", threshold=1.0)
    env = rlcourse.envs.make("Ant", num_envs=2, seed=0)
    agent = rlcourse.PPO(env, seed=0, preset=None, **{**PINS["agent_config"], "learning_rate": 1.0})
    env.close()
    ns = _namespace(agent, agent, 2000.0, 0.0)
    with pytest.raises(RuntimeError, match=f"learning_rate: pinned .* now 1.0.*rlcourse pin {LAB}"):
        checks.check_training(ns)
    verdict = _training_verdict(ns, "graded", tmp_path)
    assert verdict is not None and "learning_rate: pinned" in verdict and f"rlcourse pin {LAB}" in verdict


def _forge(record: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``record`` with the entry at ``path`` replaced (``None``: removed)."""
    record = {**record, "measured": dict(record["measured"]), "modules": dict(record["modules"]),
              "randomized_modules": dict(record["randomized_modules"])}
    *parents, key = path
    target = record
    for p in parents:
        target = target[p]
    if value is None:
        target.pop(key)
    else:
        target[key] = value
    return record


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("modules", "actor_critic"), {"weight": torch.zeros(3, 3)}, "network 'actor_critic' does not fit"),
        (("modules", "obs_normalizer"), None, "network 'obs_normalizer' was not recorded"),
        (("modules",), "<dict>", "network 'actor_critic' was not recorded"),
        (("randomized_modules",), None, "network 'actor_critic' was not recorded"),
        (("randomized_modules", "actor_critic"), {"weight": torch.zeros(3, 3)}, "network 'actor_critic' does not fit"),
        (("algo",), "sac", "did not leave a trained PPO agent"),
        (("measured",), "<Foo>", "must leave `result`"),
        (("measured", "agent_config"), None, "must leave `result`"),
        (("measured", "randomized_grid"), "<ndarray>", "randomized grid must hold"),
        (("measured", "nominal_grid"), [[1.0, 2.0]], "nominal grid must hold"),
        (("measured", "randomized_mean"), "nan", "randomized mean_return is not the mean of its grid"),
        (("measured", "randomized_mean"), 9e9, "randomized mean_return is not the mean of its grid"),
    ],
)
def test_training_judge_refuses_forged_or_broken_records(walker: Any, path: tuple[str, ...], value: Any,
                                                         message: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While grading, the record comes from the sandbox: whatever it holds fails with a message."""
    _pins(monkeypatch, tmp_path / "pins", threshold=1.0)
    record = plain(checks.record_training(_namespace(walker, walker, 2000.0, 0.0)))
    with pytest.raises(AssertionError, match=re.escape(message)):
        checks.judge_training(_forge(record, path, value), seed=1)


def test_evaluation_repeats_the_graded_cells_sweep() -> None:
    """The grader sweeps the recorded policy like the graded cell does (only the seed differs)."""
    cell = common.protocol(REPO / "solutions" / LAB / f"{LAB}.ipynb")["test_training"]
    constants = {t.id: ast.literal_eval(node.value) for node in ast.parse(cell).body
                 if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name) and t.id in ("TASK", "SWEEP", "SWEEP_EPISODES", "SWEEP_EPISODE_LENGTH",
                                                         "NOMINAL_ROBOT")}
    assert checks.NOMINAL_CONDITION == constants["NOMINAL_ROBOT"]
    assert checks.EVALUATION == {"task": constants["TASK"], "sweep": constants["SWEEP"],
                                 "episodes": constants["SWEEP_EPISODES"], "num_envs": constants["SWEEP_EPISODES"],
                                 "env_kwargs": {"episode_length": constants["SWEEP_EPISODE_LENGTH"]}}
    assert "num_envs=SWEEP_EPISODES" in cell and 'env_kwargs={"episode_length": SWEEP_EPISODE_LENGTH}' in cell


def test_pins_record_how_they_were_made() -> None:
    assert len(PINS["reference_seeds"]) >= 5 and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    means = [run["measured"]["randomized_mean"] for run in PINS["runs"]]
    nominal = [run["measured"]["nominal_mean"] for run in PINS["runs"]]
    # The claim holds on every reference seed; the pass mark is half the lowest seed's mean.
    assert PINS["claim_holds"] == [True] * len(means) and all(r > n for r, n in zip(means, nominal))
    assert PINS["metric"] == "randomized_mean" and PINS["threshold"] == float(round(checks.MARGIN * min(means)))
    assert PINS["nominal_keep"] == checks.NOMINAL_KEEP
    # The worst and nominal-robot cells come from the grids recorded with them.
    for run in PINS["runs"]:
        m = run["measured"]
        for name in checks.POLICIES:
            assert m[f"{name}_worst"] == pytest.approx(np.min(m[f"{name}_grid"]), abs=1e-3)
            assert m[f"{name}_nominal"] == pytest.approx(np.asarray(m[f"{name}_grid"])[NOMINAL_CELL], abs=1e-3)
        assert all(checks.claim_holds(*(checks.summary(np.asarray(m[f"{name}_grid"]), checks.SWEEP)
                                        for name in ("randomized", "nominal"))).values())
    assert PINS["agent_config"]["num_steps_per_env"] > 0
    assert "SEED = 0" in PINS["protocol"]["parameters"] and "TRAIN_RANDOMIZATION" in PINS["protocol"]["test_training"]
    assert {"torch", "mujoco", "numpy", "python", "cpu"} <= set(PINS["versions"])
