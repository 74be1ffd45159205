"""Lab 4 (domain randomization) hidden checks and the env's override hook.

The sampler, noise, latency and training checks of ``rlcourse.grading.lab4`` and the
``DomainRandomization.override`` hook, tested against the reference functions and realistic
wrong implementations. ``test_grading_lab4.py`` adds what needs the released lab and its pins.
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
from grading_helpers import shows_number  # noqa: I001 (tests/ is on sys.path)
from rlcourse.grading import lab4


REPO = Path(__file__).resolve().parents[1]
LAB = lab4.LAB
NOTEBOOK = f"{LAB}.ipynb"
CELLS = ("test_sampler", "test_noise_latency", "test_training")
MAX_POINTS = {"test_sampler": 4, "test_noise_latency": 3, "test_training": 3}


def _pins() -> dict[str, Any] | None:
    """The lab's pinned entry; the function checks fall back to the module defaults without one."""
    return json.loads((REPO / "autograder" / "pinned_metrics.json").read_text()).get(LAB)


def _training_pins() -> dict[str, Any]:
    pins = _pins()
    assert pins is not None, f"autograder/pinned_metrics.json has no {LAB} entry: run `rlcourse pin {LAB}`"
    return pins


# --------------------------------------------------------------------------- wrong samplers
def loguniform_as_uniform(distribution, low, high, size, generator):
    if distribution == "loguniform":
        distribution = "uniform"   # forgot the log: most draws above the geometric mean
    return lab4.sample(distribution, low, high, size, generator)


def loguniform_log10(distribution, low, high, size, generator):
    if distribution == "loguniform":
        a, b = math.log10(low), math.log10(high)
        return torch.exp(a + (b - a) * torch.rand(size, generator=generator, dtype=torch.float64))
    return lab4.sample(distribution, low, high, size, generator)


def gaussian_variance(distribution, low, high, size, generator):
    if distribution == "gaussian":
        return low + high**2 * torch.randn(size, generator=generator, dtype=torch.float64)   # std read as variance
    return lab4.sample(distribution, low, high, size, generator)


def float32_draws(distribution, low, high, size, generator):
    return lab4.sample(distribution, low, high, size, generator).float()


def global_rng(distribution, low, high, size, generator):
    return lab4.sample(distribution, low, high, size, None)   # torch's global generator


def uniform_ignores_low(distribution, low, high, size, generator):
    if distribution == "uniform":
        return high * torch.rand(size, generator=generator, dtype=torch.float64)
    return lab4.sample(distribution, low, high, size, generator)


def one_draw_per_row(distribution, low, high, size, generator):
    x = lab4.sample(distribution, low, high, tuple(size[:1]) + (1,) * (len(size) - 1), generator)
    return x.expand(size).clone()


def randomize_swapped(nominal, draws, operation):
    return nominal + draws if operation == "scaling" else nominal * draws


def randomize_no_error(nominal, draws, operation):
    return nominal * draws if operation == "scaling" else nominal + draws


def randomize_in_place(nominal, draws, operation):
    if operation == "scaling":
        return draws.mul_(nominal)
    return lab4.randomize(nominal, draws, operation)


# --------------------------------------------------------------------------- wrong noise / latency
def noise_variance(obs, mean, std, generator):
    return lab4.add_obs_noise(obs, mean, std**2, generator)


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


class LatencyOffByOne(lab4.ActionLatency):
    def step(self, actions):
        self.history[:, 0] = actions                 # written before the roll: one step too late
        self.history = torch.roll(self.history, shifts=1, dims=1)
        return self.history[torch.arange(self.history.shape[0]), self.delays]


class LatencyKeepsHistory(lab4.ActionLatency):
    def reset(self, env_ids, delays):
        self.delays[env_ids] = delays                # forgets to clear the history


class LatencyIgnoresDelays(lab4.ActionLatency):
    def step(self, actions):
        super().step(actions)
        return self.history[:, 1]                    # always one step, whatever the env's delay


# --------------------------------------------------------------------------- sampler check
def test_sampler_check_accepts_the_reference() -> None:
    lab4.check_sampler(lab4.sample, lab4.randomize, _pins())


def test_sampler_check_accepts_a_different_correct_sampler() -> None:
    """Statistics, not equality with the reference stream: inverse-CDF / torch.distributions pass."""

    def other(distribution, low, high, size, generator):
        u = 1.0 - torch.rand(size, generator=generator, dtype=torch.float64)     # (0, 1]
        if distribution == "uniform":
            return high - (high - low) * u
        if distribution == "loguniform":
            return high * torch.pow(low / high, 1.0 - u) if low != high else torch.full(size, float(low), dtype=torch.float64)
        z = torch.sqrt(-2.0 * torch.log(u)) * torch.cos(2 * math.pi * torch.rand(size, generator=generator, dtype=torch.float64))
        return low + high * z

    lab4.check_sampler(other, lab4.randomize, _pins())


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
        lab4.check_sampler(wrong, lab4.randomize, _pins())
    _no_expected_numbers(str(info.value))


@pytest.mark.parametrize(
    "wrong, message",
    [(randomize_swapped, "does not apply"), (randomize_no_error, "ValueError"), (randomize_in_place, "in place")],
)
def test_sampler_check_rejects_wrong_randomize(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab4.check_sampler(lab4.sample, wrong, _pins())


def _no_expected_numbers(message: str) -> None:
    """Failure messages end up in the feedback: no exact moments of the hidden cases in them."""
    for case in lab4.sampler_cases():
        for key in ("mean", "std", "log_mean", "log_std"):
            if key in case and case[key] not in (0.0, 1.0):
                assert f"{case[key]:.4f}" not in message and f"{case[key]:.3f}" not in message, message


def test_statistical_tolerance_is_tight_enough_to_see_small_errors() -> None:
    """6 standard errors of 200,000 draws: a 5 % error of a uniform's width is far outside."""
    n = lab4.SAMPLE_SIZE
    se_mean = (1.5 - 0.5) / math.sqrt(12 * n)
    assert lab4.Z_TOLERANCE * se_mean < 0.05 * 0.1

    def slightly_narrow(distribution, low, high, size, generator):
        if distribution == "uniform":
            return lab4.sample(distribution, low, high - 0.05 * (high - low), size, generator)
        return lab4.sample(distribution, low, high, size, generator)

    with pytest.raises(AssertionError, match="further from"):
        lab4.check_sampler(slightly_narrow, lab4.randomize, _pins())


# --------------------------------------------------------------------------- noise / latency check
def test_noise_latency_check_accepts_the_reference() -> None:
    lab4.check_noise_latency(lab4.add_obs_noise, lab4.draw_latency, lab4.ActionLatency, _pins())


@pytest.mark.parametrize(
    "noise, draw, cls, message",
    [
        (noise_variance, lab4.draw_latency, lab4.ActionLatency, "standard deviation"),
        (noise_in_place, lab4.draw_latency, lab4.ActionLatency, "in place"),
        (noise_per_row, lab4.draw_latency, lab4.ActionLatency, "correlated"),
        (noise_float64, lab4.draw_latency, lab4.ActionLatency, "dtype"),
        (noise_uniform, lab4.draw_latency, lab4.ActionLatency, "noise values"),
        (lab4.add_obs_noise, latency_excludes_high, lab4.ActionLatency, "both ends included"),
        (lab4.add_obs_noise, latency_float, lab4.ActionLatency, "int64"),
        (lab4.add_obs_noise, lab4.draw_latency, LatencyOffByOne, "wrong action"),
        (lab4.add_obs_noise, lab4.draw_latency, LatencyKeepsHistory, "after a reset"),
        (lab4.add_obs_noise, lab4.draw_latency, LatencyIgnoresDelays, "wrong action"),
    ],
)
def test_noise_latency_check_rejects_wrong_implementations(noise, draw, cls, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        lab4.check_noise_latency(noise, draw, cls, _pins())


# --------------------------------------------------------------------------- the env hook
def _rollout(override: dict[str, Any] | None, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = {**lab4.TRAIN_RANDOMIZATION, "action_latency": {"range": [0, 3]},
           "joint_damping": {"range": [0.5, 2.0], "distribution": "loguniform"}}
    env = rlcourse.envs.make("Ant", num_envs=4, seed=3, randomization=cfg, episode_length=15, nthread=1)
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
    """The hook is transparent: the reference functions reproduce the built-in draws bit for bit."""
    ref = dict(sample=lab4.sample, randomize=lab4.randomize, obs_noise=lab4.add_obs_noise,
               draw_latency=lab4.draw_latency, latency_buffer=lab4.ActionLatency)
    a, ma = _rollout(None)
    b, mb = _rollout(ref)
    assert torch.equal(a, b) and torch.equal(ma, mb)


def test_override_uses_the_given_functions() -> None:
    calls: dict[str, int] = {"sample": 0, "randomize": 0, "noise": 0, "latency": 0}

    def sample(*args):
        calls["sample"] += 1
        return lab4.sample(*args)

    def randomize(*args):
        calls["randomize"] += 1
        return lab4.randomize(*args)

    def noise(*args):
        calls["noise"] += 1
        return lab4.add_obs_noise(*args)

    def latency(*args):
        calls["latency"] += 1
        return lab4.draw_latency(*args)

    _rollout(dict(sample=sample, randomize=randomize, obs_noise=noise, draw_latency=latency,
                  latency_buffer=lab4.ActionLatency), steps=20)
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
def _result(randomized: float, nominal: float) -> dict[str, Any]:
    """Both policies' results with the given means over the grid (and a worst cell 40 below)."""
    shape = [len(v) for v in lab4.SWEEP.values()]
    out = {}
    for name, mean in (("randomized", randomized), ("nominal", nominal)):
        grid = torch.full(shape, mean, dtype=torch.float64)
        grid[0, 0] = mean - 40.0
        grid[0, 1] = mean + 40.0
        out[name] = {"grid": grid.tolist(), "worst_case_return": mean - 40.0, "mean_return": float(grid.mean())}
    return out


def _synthetic_pins(threshold: float = 50.0) -> dict[str, Any]:
    """The shape of a pinned entry (the check's logic does not depend on the measured numbers)."""
    return {"training": {"protocol": json.loads(json.dumps(lab4.protocol())), "threshold": threshold}}


def test_training_check_needs_the_pass_mark_and_both_grids() -> None:
    pins = _synthetic_pins()
    t = pins["training"]["threshold"]
    lab4.check_training(_result(t, t - 1), pins)
    lab4.check_training(_result(t + 50, t + 49), pins)
    with pytest.raises(AssertionError, match="below the pinned pass mark") as info:
        lab4.check_training(_result(t - 1, t - 10), pins)
    assert not shows_number(str(info.value), t)
    # Above the pass mark is not enough: the randomized mean must beat the nominal one.
    for nominal in (t + 80, t + 5):
        with pytest.raises(AssertionError, match="not higher than the nominal") as info:
            lab4.check_training(_result(t + 5, nominal), pins)
        assert not shows_number(str(info.value), t)
    with pytest.raises(AssertionError, match="minimum of its grid"):
        bad = _result(t + 5, t)
        bad["randomized"]["worst_case_return"] = t + 100
        lab4.check_training(bad, pins)
    with pytest.raises(AssertionError, match="mean of its grid"):
        bad = _result(t + 5, t)
        bad["nominal"]["mean_return"] = t - 100
        lab4.check_training(bad, pins)
    # Graded is the mean, not the worst cell: a lower worst cell than the nominal one passes.
    low_worst = _result(t + 50, t)
    low_worst["randomized"]["grid"][2][2] = low_worst["nominal"]["worst_case_return"] - 1.0
    low_worst["randomized"]["worst_case_return"] = low_worst["nominal"]["worst_case_return"] - 1.0
    low_worst["randomized"]["mean_return"] = float(np.mean(low_worst["randomized"]["grid"]))
    lab4.check_training(low_worst, pins)
    no_nominal = _result(t + 5, t)
    del no_nominal["nominal"]
    with pytest.raises(AssertionError, match="no 'nominal' grid"):
        lab4.check_training(no_nominal, pins)
    short = _result(t + 5, t)
    short["nominal"]["grid"] = short["nominal"]["grid"][:-1]
    with pytest.raises(AssertionError, match="nominal grid must hold"):
        lab4.check_training(short, pins)


