"""Hidden checks of lab 4 (domain randomization): samplers, observation noise, action latency, training.

The hidden test cells of ``solutions/lab4_domain_randomization/lab4_domain_randomization.ipynb``
call these functions. The references are the building blocks of
:mod:`rlcourse.envs.locomotion.randomization` (``sample``, ``randomize``, ``add_obs_noise``,
``draw_latency``, ``ActionLatency``). Three kinds of checks:

* **exact**, for what is pure: shapes, dtypes, bounds, ``low == high``, seeded
  reproducibility, that the given ``torch.Generator`` (and only it) is used, the
  ``scaling``/``additive`` operation, and the action-latency buffer step by step against the
  reference :class:`ActionLatency` on a fixed action sequence with resets;
* **statistical**, for the distributions: a mean (or standard deviation, or frequency) of
  :data:`SAMPLE_SIZE` draws must lie within :data:`Z_TOLERANCE` standard errors of the exact
  value of the distribution asked for. The standard error is computed from the distribution
  itself (e.g. ``(b - a) / sqrt(12 n)`` for the mean of a uniform), so a correct sampler fails a
  statistic with probability < 1e-8 whatever its random stream: implementations may draw
  differently from the reference (inverse CDF, ``torch.distributions``, ...);
* **training**: the graded cell fine-tunes the shipped walking Ant twice, without randomization
  and with the student's functions, and evaluates both over a friction x payload grid. Graded:
  the randomized policy's **mean over the grid** reaches the pinned pass mark **and** beats the
  nominal policy's mean. The worst cells are recorded, not graded (they depend on the CPU).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion.randomization import ActionLatency, randomize
from rlcourse.grading import common
from rlcourse.grading.common import check_agent_config, check_at_least, fail, load_pins, margin_pass_mark

LAB = "lab4_domain_randomization"
PIN_SEEDS = (0, 1, 2, 3, 4)
# Pass mark: round(MARGIN * the lowest reference seed's randomized mean over the grid).
MARGIN = 0.5

# Statistical checks: draws per statistic and the allowed deviation in standard errors.
SAMPLE_SIZE = 200_000
Z_TOLERANCE = 6.0
POLICIES = ("randomized", "nominal")


# --------------------------------------------------------------------------- sampler check
def sampler_cases() -> list[dict[str, Any]]:
    """(distribution, low, high) the hidden sampler test draws from, with the exact moments."""
    cases = []
    for lo, hi in [(0.5, 1.5), (-2.0, 3.0), (0.25, 2.0)]:
        cases.append({"distribution": "uniform", "low": lo, "high": hi, "mean": (lo + hi) / 2,
                      "std": (hi - lo) / math.sqrt(12), "kurtosis": 1.8})
    for lo, hi in [(0.5, 2.0), (0.1, 10.0), (0.25, 2.0)]:
        a, b = math.log(lo), math.log(hi)
        cases.append({"distribution": "loguniform", "low": lo, "high": hi, "log_mean": (a + b) / 2,
                      "log_std": (b - a) / math.sqrt(12), "kurtosis": 1.8})
    for mean, std in [(1.0, 0.3), (0.0, 0.01), (-3.0, 2.0)]:
        cases.append({"distribution": "gaussian", "low": mean, "high": std, "mean": mean, "std": std, "kurtosis": 3.0})
    return cases


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        fail(f"{what} must return a torch tensor, got {type(x).__name__}")
    return x


def _check_moments(x: torch.Tensor, mean: float, std: float, kurtosis: float, z: float, label: str,
                   what: str = "values") -> None:
    """Sample mean and standard deviation within ``z`` standard errors of the exact ones."""
    n = x.numel()
    x = x.double()
    m, s = float(x.mean()), float(x.std())
    if not math.isfinite(m) or not math.isfinite(s):
        fail(f"{label}: the {what} contain NaN or infinite numbers")
    se_mean = std / math.sqrt(n)
    # Var(s^2) ~ (mu4 - sigma^4) / n, and s = sqrt(s^2): SE(s) ~ sigma * sqrt((kurtosis - 1) / (4 n)).
    se_std = std * math.sqrt((kurtosis - 1.0) / (4.0 * n))
    if abs(m - mean) > z * se_mean + 1e-12:
        fail(f"{label}: the mean of {n} {what} is further from the distribution's mean than chance allows")
    if abs(s - std) > z * se_std + 1e-12:
        fail(f"{label}: the standard deviation of {n} {what} is further from the distribution's than chance allows")


def _label(case: dict[str, Any]) -> str:
    if case["distribution"] == "gaussian":
        return f"sample('gaussian', mean={case['low']}, std={case['high']})"
    return f"sample({case['distribution']!r}, {case['low']}, {case['high']})"


def check_sampler(sample_fn: Callable[..., Any], randomize_fn: Callable[..., Any]) -> None:
    """Shapes, dtype, bounds, reproducibility and large-sample statistics of ``sample_fn``;
    ``randomize_fn`` exactly."""
    z, n = Z_TOLERANCE, SAMPLE_SIZE
    for case in sampler_cases():
        dist, lo, hi, label = case["distribution"], case["low"], case["high"], _label(case)
        x = _as_tensor(sample_fn(dist, lo, hi, (n,), torch.Generator().manual_seed(1234)), "sample")
        if tuple(x.shape) != (n,):
            fail(f"{label}: size=({n},) gave shape {tuple(x.shape)}")
        if x.dtype != torch.float64:
            fail(f"{label}: the draws must be float64, got {x.dtype}")
        if dist != "gaussian":
            if float(x.min()) < lo or float(x.max()) > hi:
                fail(f"{label}: some draws lie outside [low, high]")
        if dist == "uniform":
            _check_moments(x, case["mean"], case["std"], case["kurtosis"], z, label)
        elif dist == "loguniform":
            if float(x.min()) <= 0:
                fail(f"{label}: loguniform draws must be positive")
            _check_moments(torch.log(x), case["log_mean"], case["log_std"], case["kurtosis"], z, label,
                           "logarithms of the draws")
            # Uniform in log: half of the draws lie below the geometric mean sqrt(low * high).
            below = float((x < math.sqrt(lo * hi)).double().mean())
            if abs(below - 0.5) > z * 0.5 / math.sqrt(n):
                fail(f"{label}: the draws are not spread uniformly in log space (check the median)")
        else:
            _check_moments(x, case["mean"], case["std"], case["kurtosis"], z, label)
        # Several dimensions: the shape is `size`, and the draws are independent across it.
        y = _as_tensor(sample_fn(dist, lo, hi, (500, 3), torch.Generator().manual_seed(7)), "sample")
        if tuple(y.shape) != (500, 3):
            fail(f"{label}: size=(500, 3) gave shape {tuple(y.shape)}")
        if torch.equal(y[:, 0], y[:, 1]) or torch.equal(y[0], y[1]):
            fail(f"{label}: with size=(500, 3) every element must be an independent draw")
    _check_reproducible(sample_fn)
    _check_degenerate(sample_fn)
    _check_randomize(randomize_fn)


def _check_reproducible(sample_fn: Callable[..., Any]) -> None:
    for dist, lo, hi in (("uniform", 0.5, 1.5), ("loguniform", 0.5, 2.0), ("gaussian", 1.0, 0.3)):
        label = f"sample({dist!r}, ...)"
        torch.manual_seed(1)
        np.random.seed(1)
        a = _as_tensor(sample_fn(dist, lo, hi, (64,), torch.Generator().manual_seed(42)), "sample").clone()
        torch.manual_seed(2)
        np.random.seed(2)
        b = _as_tensor(sample_fn(dist, lo, hi, (64,), torch.Generator().manual_seed(42)), "sample").clone()
        if not torch.equal(a, b):
            fail(f"{label}: two generators with the same seed gave different draws; draw only from `generator` "
                 "(not torch's or NumPy's global random state)")
        c = _as_tensor(sample_fn(dist, lo, hi, (64,), torch.Generator().manual_seed(43)), "sample")
        if torch.equal(a, c):
            fail(f"{label}: generators with different seeds gave the same draws; draw from `generator`")
        g = torch.Generator().manual_seed(42)
        first = _as_tensor(sample_fn(dist, lo, hi, (64,), g), "sample").clone()
        second = _as_tensor(sample_fn(dist, lo, hi, (64,), g), "sample")
        if torch.equal(first, second):
            fail(f"{label}: two calls with the same generator object gave the same draws; the generator's "
                 "state must advance")


def _check_degenerate(sample_fn: Callable[..., Any]) -> None:
    for dist, lo, hi, value in (("uniform", 0.7, 0.7, 0.7), ("loguniform", 2.0, 2.0, 2.0), ("gaussian", 1.5, 0.0, 1.5)):
        x = _as_tensor(sample_fn(dist, lo, hi, (10,), torch.Generator().manual_seed(0)), "sample")
        if tuple(x.shape) != (10,) or not torch.allclose(x.double(), torch.full((10,), value, dtype=torch.float64),
                                                         rtol=1e-12, atol=1e-12):
            what = "std = 0" if dist == "gaussian" else "low == high"
            fail(f"sample({dist!r}) with {what} must return that single value for every draw")


def _check_randomize(randomize_fn: Callable[..., Any]) -> None:
    nominal = torch.tensor([0.33, 1.2, 4.0], dtype=torch.float64)
    draws = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.8, 1.1]], dtype=torch.float64)
    for op in ("scaling", "additive"):
        want = randomize(nominal, draws, op)
        n0, d0 = nominal.clone(), draws.clone()
        out = _as_tensor(randomize_fn(n0, d0, op), "randomize")
        if not (torch.equal(n0, nominal) and torch.equal(d0, draws)):
            fail(f"randomize(..., {op!r}) modified its inputs in place; return a new tensor")
        if tuple(out.shape) != tuple(want.shape):
            fail(f"randomize(..., {op!r}): nominal (3,) with draws (2, 3) must give shape (2, 3), "
                 f"got {tuple(out.shape)}")
        if not torch.allclose(out.double(), want, rtol=1e-12, atol=1e-12):
            fail(f"randomize(..., {op!r}) does not apply the operation to the nominal value correctly")
    try:
        randomize_fn(nominal.clone(), draws.clone(), "multiply")
    except ValueError:
        pass
    else:
        fail("randomize with an unknown operation must raise ValueError (a typo would silently add)")


# --------------------------------------------------------------------------- noise and latency check
def check_noise_latency(obs_noise_fn: Callable[..., Any], draw_latency_fn: Callable[..., Any],
                        latency_cls: Callable[..., Any]) -> None:
    """Observation noise statistics, the delay draws, and the latency buffer step by step."""
    z, n = Z_TOLERANCE, SAMPLE_SIZE
    _check_obs_noise(obs_noise_fn, z, n)
    _check_draw_latency(draw_latency_fn, z, n)
    _check_latency_buffer(latency_cls)


def _check_obs_noise(obs_noise_fn: Callable[..., Any], z: float, n: int) -> None:
    rows = n // 4
    g = torch.Generator().manual_seed(99)
    obs = torch.rand(rows, 4, generator=g) * 4.0 - 2.0
    for mean, std in ((0.0, 0.05), (0.1, 0.5)):
        label = f"add_obs_noise(mean={mean}, std={std})"
        before = obs.clone()
        out = _as_tensor(obs_noise_fn(obs, mean, std, torch.Generator().manual_seed(5)), "add_obs_noise")
        if not torch.equal(obs, before):
            fail(f"{label} modified the observation in place; return a new tensor")
        if tuple(out.shape) != tuple(obs.shape):
            fail(f"{label}: the noisy observation must have the observation's shape {tuple(obs.shape)}, "
                 f"got {tuple(out.shape)}")
        if out.dtype != obs.dtype:
            fail(f"{label}: the noisy observation must keep the observation's dtype ({obs.dtype}), got {out.dtype}")
        noise = out.double() - obs.double()
        _check_moments(noise.flatten(), mean, std, 3.0, z, label, "noise values (noisy - clean)")
        # Independent across elements: no shared draw per row or per column.
        centred = (noise - noise.mean()) / max(float(noise.std()), 1e-12)
        corr_cols = float((centred[:, 0] * centred[:, 1]).mean())
        corr_rows = float((centred[:-1] * centred[1:]).mean())
        if abs(corr_cols) > z / math.sqrt(rows) or abs(corr_rows) > z / math.sqrt(centred.numel()):
            fail(f"{label}: the noise of different elements is correlated; draw an independent value per element")
    again = _as_tensor(obs_noise_fn(obs[:8], 0.0, 0.05, torch.Generator().manual_seed(5)), "add_obs_noise")
    torch.manual_seed(3)
    twice = _as_tensor(obs_noise_fn(obs[:8], 0.0, 0.05, torch.Generator().manual_seed(5)), "add_obs_noise")
    if not torch.equal(again, twice):
        fail("add_obs_noise: the same generator seed gave different noise; draw only from `generator`")
    zero = _as_tensor(obs_noise_fn(obs[:8], 0.25, 0.0, torch.Generator().manual_seed(5)), "add_obs_noise")
    if not torch.allclose(zero, obs[:8] + 0.25, atol=1e-6, rtol=0):
        fail("add_obs_noise with std = 0 must add exactly `mean`")


def _check_draw_latency(draw_latency_fn: Callable[..., Any], z: float, n: int) -> None:
    for lo, hi in ((0, 1), (0, 3), (2, 4)):
        label = f"draw_latency({lo}, {hi})"
        k = _as_tensor(draw_latency_fn(lo, hi, n, torch.Generator().manual_seed(11)), "draw_latency")
        if tuple(k.shape) != (n,):
            fail(f"{label}: n={n} gave shape {tuple(k.shape)}")
        if k.dtype != torch.int64:
            fail(f"{label}: delays are whole control steps; return an int64 (long) tensor, got {k.dtype}")
        if int(k.min()) < lo or int(k.max()) > hi:
            fail(f"{label}: some delays lie outside [low, high]")
        p = 1.0 / (hi - lo + 1)
        se = math.sqrt(p * (1 - p) / n)
        for v in range(lo, hi + 1):
            freq = float((k == v).double().mean())
            if abs(freq - p) > z * se:
                fail(f"{label}: the delays are not uniform over low .. high (both ends included); "
                     f"delay {v} comes up too {'rarely' if freq < p else 'often'}")
    a = _as_tensor(draw_latency_fn(0, 3, 32, torch.Generator().manual_seed(3)), "draw_latency")
    torch.manual_seed(4)
    b = _as_tensor(draw_latency_fn(0, 3, 32, torch.Generator().manual_seed(3)), "draw_latency")
    if not torch.equal(a, b):
        fail("draw_latency: the same generator seed gave different delays; draw only from `generator`")
    same = _as_tensor(draw_latency_fn(2, 2, 16, torch.Generator().manual_seed(3)), "draw_latency")
    if not torch.equal(same.long(), torch.full((16,), 2, dtype=torch.long)):
        fail("draw_latency(low, high) with low == high must return that delay for every env")


def latency_case() -> dict[str, Any]:
    """The action sequence, initial delays and a mid-sequence reset the buffer check replays."""
    g = torch.Generator().manual_seed(2024)
    return {
        "num_envs": 4, "num_actions": 3, "max_latency": 3,
        "delays": torch.tensor([0, 1, 2, 3]),
        "actions": torch.rand(14, 4, 3, generator=g) * 2.0 - 1.0,
        # (step before which the reset happens, env ids, their new delays)
        "resets": [(6, torch.tensor([1, 2]), torch.tensor([3, 0])), (10, torch.tensor([3]), torch.tensor([1]))],
    }


def _check_latency_buffer(latency_cls: Callable[..., Any]) -> None:
    case = latency_case()
    ids = torch.arange(case["num_envs"])
    buf = latency_cls(case["num_envs"], case["num_actions"], case["max_latency"])
    ref = ActionLatency(case["num_envs"], case["num_actions"], case["max_latency"])
    buf.reset(ids.clone(), case["delays"].clone())
    ref.reset(ids, case["delays"])
    resets = {step: (env_ids, delays) for step, env_ids, delays in case["resets"]}
    for t, actions in enumerate(case["actions"]):
        if t in resets:
            env_ids, delays = resets[t]
            buf.reset(env_ids.clone(), delays.clone())
            ref.reset(env_ids, delays)
        sent = actions.clone()
        out = _as_tensor(buf.step(sent), "ActionLatency.step")
        want = ref.step(actions)
        if not torch.equal(sent, actions):
            fail("ActionLatency.step modified the actions it was given in place")
        if tuple(out.shape) != tuple(want.shape):
            fail(f"ActionLatency.step must return (num_envs, num_actions) = {tuple(want.shape)}, got {tuple(out.shape)}")
        bad = [i for i in range(case["num_envs"]) if not torch.allclose(out[i].float(), want[i], atol=1e-7, rtol=0)]
        if bad:
            after = " after a reset" if any(t >= s for s in resets) else ""
            fail(f"ActionLatency.step: at step {t}{after}, env {bad[0]} (delay "
                 f"{int(ref.delays[bad[0]])}) received the wrong action; it must get the action from exactly "
                 "`delay` steps ago, and zeros while its history (since its last reset) is shorter than that")


# --------------------------------------------------------------------------- training
def _policy(ns: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One policy's entry of the graded cell's ``result``, checked for consistency."""
    result = ns.get("result")
    if not isinstance(result, Mapping) or not isinstance(result.get(name), Mapping) or "grid" not in result[name]:
        fail(f"the training cell must leave `result` with a {name!r} grid (the dict the cell builds)")
    entry = result[name]
    try:
        grid = np.asarray(entry["grid"], dtype=float)
    except (TypeError, ValueError):
        fail(f"the {name} grid must hold a finite return for every friction x payload cell")
    if grid.ndim != 2 or grid.size == 0 or not np.isfinite(grid).all():
        fail(f"the {name} grid must hold a finite return for every friction x payload cell")
    # The stored grid is rounded to 3 decimals, the worst cell and the mean are not.
    try:
        worst, mean = float(entry.get("worst_case_return", math.nan)), float(entry.get("mean_return", math.nan))
    except (TypeError, ValueError):
        worst = mean = math.nan
    if not abs(float(grid.min()) - worst) <= 1e-3:
        fail(f"the {name} worst_case_return is not the minimum of its grid")
    if not abs(float(grid.mean()) - mean) <= 1e-3:
        fail(f"the {name} mean_return is not the mean of its grid")
    return {"grid": grid.tolist(), "mean": float(grid.mean()), "worst": worst}


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: per policy the grid of mean returns (rows: friction scale,
    columns: payload), its mean (graded) and its worst cell (recorded), and the PPO config."""
    agent = ns.get("agent")
    if agent is None or not hasattr(agent, "cfg"):
        fail("the training cell must leave the trained `agent`")
    out: dict[str, Any] = {}
    for name in POLICIES:
        policy = _policy(ns, name)
        out[f"{name}_mean"] = policy["mean"]
        out[f"{name}_worst"] = policy["worst"]
        out[f"{name}_grid"] = policy["grid"]
    out["agent_config"] = common.config_dict(agent.cfg)
    return out


def check_training(ns: Mapping[str, Any]) -> None:
    """The graded cell's ``result``: both grids complete, and the randomized policy's mean over the
    grid reaches the pinned pass mark and is higher than the nominal policy's mean."""
    pins = load_pins(LAB)
    m = measure(ns)
    check_agent_config(LAB, m["agent_config"], pins)
    shape = np.shape(pins["runs"][0]["measured"]["randomized_grid"])
    for name in POLICIES:
        if np.shape(m[f"{name}_grid"]) != shape:
            fail(f"the {name} grid must hold a finite return for every friction x payload cell")
    check_at_least(m["randomized_mean"], pins["threshold"],
                   "the randomized policy's mean over the grid is below the pinned pass mark for this lab (see the "
                   "header); check your sampler and randomize first, then the observation noise")
    if not m["randomized_mean"] > m["nominal_mean"]:
        fail("the randomized policy's mean over the grid is not higher than the nominal policy's: randomization "
             "did not make the walker more robust; check your sampler and randomize (payload and friction), "
             "then the observation noise")


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``MARGIN`` times the lowest reference seed's randomized mean over the grid. Refuses a pass
    mark <= 0, and a run where the reference randomized policy's mean does not beat the nominal
    one's (the grade asks every student for that). The worst cells are recorded, not graded."""
    means = [run["measured"]["randomized_mean"] for run in runs]
    nominal = [run["measured"]["nominal_mean"] for run in runs]
    beats = [r > n for r, n in zip(means, nominal)]
    if not all(beats):
        raise RuntimeError(f"the reference randomized policy's means {means} do not all beat the nominal "
                           f"policy's {nominal}; the graded comparison would fail correct solutions, not pinning")
    mark = margin_pass_mark(means, "randomized_mean", margin=MARGIN)
    if mark["threshold"] <= 0:
        raise RuntimeError(f"the lowest reference mean is {min(means)}; a pass mark <= 0 means nothing")
    return {**mark, "randomized_beats_nominal": beats,
            "reference_mean_nominal": [round(v, 4) for v in nominal],
            "reference_worst_randomized": [round(run["measured"]["randomized_worst"], 4) for run in runs],
            "reference_worst_nominal": [round(run["measured"]["nominal_worst"], 4) for run in runs]}
