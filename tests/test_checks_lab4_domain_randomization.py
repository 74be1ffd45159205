"""Lab 4 (domain randomization) hidden checks, in-process, and the env's override hook.

The references are the building blocks of :mod:`rlcourse.envs.locomotion.randomization`: they
pass every check; every wrong implementation a student is likely to write is rejected with a
message that names the mistake and shows no expected numbers; the override hook plugs a
student's functions into the env; the training check compares with the pinned pass mark. (The
full nbgrader round trip of the lab is in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

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
from rlcourse.envs.locomotion import randomization as reference
from rlcourse.grading import lab4_domain_randomization as checks

from grading_helpers import serve_pins, shows_number

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
    for case in checks.sampler_cases():
        for key in ("mean", "std", "log_mean", "log_std"):
            if key in case and case[key] not in (0.0, 1.0):
                assert f"{case[key]:.4f}" not in message and f"{case[key]:.3f}" not in message, message
    for value in checks.latency_case()["actions"].flatten().tolist():
        assert f"{value:.3f}" not in message, message


# --------------------------------------------------------------------------- sampler check
def test_sampler_check_accepts_the_reference() -> None:
    checks.check_sampler(reference.sample, reference.randomize)


def test_sampler_check_accepts_a_different_correct_sampler() -> None:
    """Statistics, not equality with the reference stream: inverse-CDF / Box-Muller samplers pass."""

    def other(distribution, low, high, size, generator):
        u = 1.0 - torch.rand(size, generator=generator, dtype=torch.float64)     # (0, 1]
        if distribution == "uniform":
            return high - (high - low) * u
        if distribution == "loguniform":
            return high * torch.pow(low / high, 1.0 - u) if low != high else torch.full(size, float(low), dtype=torch.float64)
        z = torch.sqrt(-2.0 * torch.log(u)) * torch.cos(2 * math.pi * torch.rand(size, generator=generator, dtype=torch.float64))
        return low + high * z

    checks.check_sampler(other, reference.randomize)


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
    ],
)
def test_sampler_check_rejects_wrong_samplers(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)) as info:
        checks.check_sampler(wrong, reference.randomize)
    _no_expected_numbers(str(info.value))


@pytest.mark.parametrize(
    "wrong, message",
    [(randomize_swapped, "does not apply"), (randomize_no_error, "ValueError"), (randomize_in_place, "in place")],
)
def test_sampler_check_rejects_wrong_randomize(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_sampler(reference.sample, wrong)
    _no_expected_numbers(str(info.value))


def test_statistical_tolerance_is_tight_enough_to_see_small_errors() -> None:
    """6 standard errors of 200,000 draws: a 5 % error of a uniform's width is far outside."""
    se_mean = (1.5 - 0.5) / math.sqrt(12 * checks.SAMPLE_SIZE)
    assert checks.Z_TOLERANCE * se_mean < 0.05 * 0.1

    def slightly_narrow(distribution, low, high, size, generator):
        if distribution == "uniform":
            return reference.sample(distribution, low, high - 0.05 * (high - low), size, generator)
        return reference.sample(distribution, low, high, size, generator)

    with pytest.raises(AssertionError, match="further from") as info:
        checks.check_sampler(slightly_narrow, reference.randomize)
    _no_expected_numbers(str(info.value))


# --------------------------------------------------------------------------- noise / latency check
def test_noise_latency_check_accepts_the_reference() -> None:
    checks.check_noise_latency(reference.add_obs_noise, reference.draw_latency, reference.ActionLatency)


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
    ],
)
def test_noise_latency_check_rejects_wrong_implementations(noise, draw, cls, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_noise_latency(noise, draw, cls)
    _no_expected_numbers(str(info.value))


def test_wrong_solution_cells_fail_only_their_own_check() -> None:
    wrong_sampler = _cell(WRONG_SAMPLER_CELL)
    with pytest.raises(AssertionError, match="standard deviation") as info:
        checks.check_sampler(wrong_sampler["sample"], wrong_sampler["randomize"])
    _no_expected_numbers(str(info.value))
    wrong_noise = _cell(WRONG_NOISE_CELL)
    with pytest.raises(AssertionError, match="in place") as info:
        checks.check_noise_latency(wrong_noise["add_obs_noise"], wrong_noise["draw_latency"], wrong_noise["ActionLatency"])
    _no_expected_numbers(str(info.value))
    # The rest of that cell is right.
    checks.check_noise_latency(reference.add_obs_noise, wrong_noise["draw_latency"], wrong_noise["ActionLatency"])


# --------------------------------------------------------------------------- the env hook
HOOK_RANDOMIZATION = {
    "friction": {"range": [0.03, 2.0], "distribution": "loguniform", "mode": "reset"},
    "mass": {"range": [0.03, 30.0], "distribution": "loguniform", "operation": "additive",
             "bodies": ["torso"], "mode": "reset"},
    "obs_noise": {"range": [0.0, 0.01]},
    "action_latency": {"range": [0, 3]},
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


def _namespace(randomized: float, nominal: float) -> dict[str, Any]:
    """What the graded cell leaves behind: ``result`` with both policies' grids (means as given,
    a worst cell 40 below) and the trained ``agent``."""
    class Agent:
        cfg = None

    result = {}
    for name, mean in (("randomized", randomized), ("nominal", nominal)):
        grid = np.full(GRID_SHAPE, mean, dtype=float)
        grid[0, 0] = mean - 40.0
        grid[0, 1] = mean + 40.0
        result[name] = {"grid": grid.round(3).tolist(), "worst_case_return": float(grid.min()),
                        "mean_return": float(grid.mean())}
    return {"result": result, "agent": Agent()}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy; the agent's config check sees the pinned config."""
    return serve_pins(monkeypatch, tmp_path, LAB, PINS)


@pytest.mark.parametrize("offset, passes", [(0.0, True), (50.0, True), (-1.0, False), (-200.0, False)])
def test_training_check_compares_with_the_pinned_pass_mark(pinned: dict[str, Any], offset: float,
                                                           passes: bool) -> None:
    t = pinned["threshold"]
    ns = _namespace(t + offset, t + offset - 10.0)
    if passes:
        checks.check_training(ns)
    else:
        with pytest.raises(AssertionError, match="below the pinned pass mark") as info:
            checks.check_training(ns)
        assert not shows_number(str(info.value), t)


@pytest.mark.parametrize("nominal_above", [80.0, 0.0])
def test_training_check_needs_the_randomized_mean_above_the_nominal_one(pinned: dict[str, Any],
                                                                      nominal_above: float) -> None:
    """Above the pass mark is not enough: the randomized mean must beat the nominal one (a tie fails)."""
    t = pinned["threshold"]
    with pytest.raises(AssertionError, match="not higher than the nominal") as info:
        checks.check_training(_namespace(t + 5, t + 5 + nominal_above))
    assert not shows_number(str(info.value), t)


def test_training_check_grades_the_mean_not_the_worst_cell(pinned: dict[str, Any]) -> None:
    ns = _namespace(pinned["threshold"] + 50, pinned["threshold"])
    randomized, nominal = ns["result"]["randomized"], ns["result"]["nominal"]
    randomized["grid"][-1][-1] = nominal["worst_case_return"] - 1.0
    randomized["worst_case_return"] = nominal["worst_case_return"] - 1.0
    randomized["mean_return"] = float(np.mean(randomized["grid"]))
    checks.check_training(ns)


def test_training_check_accepts_the_rounded_grid_the_cell_stores(pinned: dict[str, Any]) -> None:
    """The cell stores the grid rounded to 3 decimals next to the exact minimum and mean."""
    ns = _namespace(pinned["threshold"] + 10, pinned["threshold"])
    ns["result"]["randomized"]["worst_case_return"] += 0.0004
    ns["result"]["randomized"]["mean_return"] += 0.0004
    checks.check_training(ns)


def _edited(change: Callable[[dict[str, Any]], None], threshold: float) -> dict[str, Any]:
    ns = _namespace(threshold + 10, threshold)
    change(ns)
    return ns


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ns: ns["result"]["randomized"].update(worst_case_return=1e6), "minimum of its grid"),
        (lambda ns: ns["result"]["nominal"].update(mean_return=-1e6), "mean of its grid"),
        (lambda ns: ns["result"].pop("nominal"), "'nominal' grid"),
        (lambda ns: ns.pop("result"), "'randomized' grid"),
        (lambda ns: ns["result"]["nominal"].update(grid=ns["result"]["nominal"]["grid"][:-1]), "nominal grid must hold"),
        (lambda ns: ns["result"]["randomized"]["grid"][1].__setitem__(1, math.nan), "randomized grid must hold"),
        (lambda ns: ns.pop("agent"), "trained `agent`"),
    ],
)
def test_training_check_refuses_an_incomplete_result(pinned: dict[str, Any], change: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)) as info:
        checks.check_training(_edited(change, pinned["threshold"]))
    assert not shows_number(str(info.value), pinned["threshold"])


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    edited = {**PINS["agent_config"], "learning_rate": 1.0}
    monkeypatch.setattr("rlcourse.grading.common.config_dict", lambda cfg: edited)
    with pytest.raises(RuntimeError, match=f"learning_rate: pinned .* now 1.0.*rlcourse pin {LAB}"):
        checks.check_training(_namespace(PINS["threshold"] + 10, PINS["threshold"]))


def test_pins_record_how_they_were_made() -> None:
    assert len(PINS["reference_seeds"]) >= 5 and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    means = [run["measured"]["randomized_mean"] for run in PINS["runs"]]
    nominal = [run["measured"]["nominal_mean"] for run in PINS["runs"]]
    # Every reference seed beats the nominal policy; the pass mark is half the lowest seed's mean.
    assert PINS["randomized_beats_nominal"] == [True] * len(means) and all(r > n for r, n in zip(means, nominal))
    assert PINS["metric"] == "randomized_mean" and PINS["threshold"] == float(round(checks.MARGIN * min(means)))
    # The worst cells are recorded (not graded), with the grids they come from.
    for run in PINS["runs"]:
        m = run["measured"]
        for name in checks.POLICIES:
            assert m[f"{name}_worst"] == pytest.approx(np.min(m[f"{name}_grid"]), abs=1e-3)
    assert PINS["agent_config"]["num_steps_per_env"] > 0
    assert "SEED = 0" in PINS["protocol"]["parameters"] and "TRAIN_RANDOMIZATION" in PINS["protocol"]["test_training"]
    assert {"torch", "mujoco", "numpy", "python", "cpu"} <= set(PINS["versions"])
