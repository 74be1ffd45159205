"""Hidden checks of lab 4 (domain randomization): samplers, observation noise, action latency, training.

The hidden test cells of ``solutions/lab4_domain_randomization/lab4_domain_randomization.ipynb``
call the entry points at the end of this module. Each check is in two halves
(:mod:`rlcourse.grading.hidden`): ``call`` runs the student's functions on a case (in the grading
sandbox) and returns what they produced: the draws, the noisy observations, the delayed actions;
``judge`` computes the statistics and the reference (the building blocks of
:mod:`rlcourse.envs.locomotion.randomization`) on the same case (in the grader's process). The
cases are fixed ones plus fresh random ones drawn from a seed the grader picks per submission.
Three kinds of judgement:

* **exact**, for what is pure: shapes, dtypes, bounds, ``low == high``, seeded
  reproducibility, that the given ``torch.Generator`` (and only it) is used, the
  ``scaling``/``additive`` operation, and the action-latency buffer step by step against the
  reference :class:`ActionLatency` on an action sequence with resets;
* **statistical**, for the distributions: a mean (or standard deviation, or frequency) of
  :data:`SAMPLE_SIZE` draws must lie within :data:`Z_TOLERANCE` standard errors of the exact
  value of the distribution asked for. The standard error is computed from the distribution
  itself (e.g. ``(b - a) / sqrt(12 n)`` for the mean of a uniform), so a correct sampler fails a
  statistic with probability < 1e-8 whatever its random stream: implementations may draw
  differently from the reference (inverse CDF, ``torch.distributions``, ...);
* **training**: the graded cell fine-tunes the shipped walking Ant twice from the same start with
  the same budget, with the student's randomization (realistic ranges: friction, payload, motor
  strength, joint damping, latency in physics steps, observation noise) and without, and
  evaluates both over a grid of fixed robots (friction x payload x motor strength x latency).
  Graded, all as the grader measures them (it loads the two recorded policies, ``agents`` the
  cell leaves, into its own PPO agents and sweeps them over the same grid on a seed the sandbox
  never saw): the randomized policy's **mean over the grid** reaches the pinned pass mark, its
  mean **and** its **worst case** (the mean of the worst tenth of the grid: one cell of one
  evaluation is too noisy to grade, see :data:`WORST_FRACTION`) are higher than the nominal
  policy's, and on the **nominal
  robot** (the grid's cell without any change) it keeps at least :data:`NOMINAL_KEEP` of the
  nominal policy's return. The grids the cell printed are checked for consistency, not graded.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion import randomization as reference
from rlcourse.grading import common
from rlcourse.grading.common import check_agent_config, check_at_least, fail, load_pins, margin_pass_mark
from rlcourse.grading.hidden import FunctionCheck, TrainingCheck, entry_point, plain

LAB = "lab4_domain_randomization"
PIN_SEEDS = (0, 1, 2, 3, 4)
# Pass mark: round(MARGIN * the lowest reference seed's randomized mean over the grid).
MARGIN = 0.5
# The graded cell's sweep, which the grader repeats on the recorded policy (fresh seed): the
# corners and the middle of the training ranges (friction scale, payload on the torso in kg,
# motor strength scale, latency in 10 ms physics steps).
SWEEP = {"friction": [0.3, 1.0, 1.5], "added_mass": [0.0, 0.45], "actuator_strength": [0.8, 1.0, 1.2],
         "action_latency_physics_steps": [0, 2, 4]}
EVALUATION = {"task": "Ant", "sweep": SWEEP, "episodes": 16, "num_envs": 16, "env_kwargs": {"episode_length": 300}}
# The robot as built: the grid cell where every swept parameter has its nominal value.
NOMINAL_CONDITION = {"friction": 1.0, "added_mass": 0.0, "actuator_strength": 1.0, "action_latency_physics_steps": 0}
# On the nominal robot the randomized policy must keep this fraction of the nominal policy's return:
# the price of randomization, bounded. The reference kept 63-89 % on seeds 0-4; the bound is set at
# half, like the pass mark (MARGIN), so that another seed, sampler or evaluation seed has room.
NOMINAL_KEEP = 0.5
# The graded worst case: the mean of this fraction of the grid's cells, the worst ones (6 of 54).
# Not the single worst cell: a cell is the mean of 16 episodes, and whether a few of them fall
# differs from one evaluation seed to the next. Measured on the reference's seed-0 policies, the
# randomized policy's worst cell was 163 on the pinning seed and 121-194 on three other evaluation
# seeds (the nominal policy's 65-107), and the round trip's grader seed made it lower than the
# nominal policy's; the mean of the 6 worst cells was 206-222 against 121-153.
WORST_FRACTION = 0.1
# Reference implementations a submission may not use while it is graded (rlcourse.grading.view).
# The student writes all five. The env itself runs sample, randomize, draw_latency and ActionLatency
# (every Ant env builds an ActionLatency; every randomization term, the graded cell's nominal run and
# its sweep included, is drawn with sample and applied with randomize; the sweep's latency cells
# draw their delay with draw_latency), so those four are GUARDED: they raise when a submission
# calls them and still run for the env.
WITHHELD = {"rlcourse.envs.locomotion.randomization": ("add_obs_noise",)}
GUARDED = {"rlcourse.envs.locomotion.randomization": ("sample", "randomize", "draw_latency", "ActionLatency")}

# Statistical checks: draws per statistic and the allowed deviation in standard errors.
SAMPLE_SIZE = 200_000
Z_TOLERANCE = 6.0
POLICIES = ("randomized", "nominal")


def _tensor(x: Any, what: str) -> torch.Tensor:
    """``x`` if it is a tensor (NumPy arrays arrive as tensors); else fail naming ``what``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        # While grading, an object of another kind arrives as the string "<TypeName>".
        got = x if isinstance(x, str) and x.startswith("<") else type(x).__name__
        fail(f"{what} must return a torch tensor, got {got}")
    return x


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    """One number uniform in ``[low, high]``, rounded to 4 decimals (a readable case)."""
    return round(low + (high - low) * float(torch.rand(1, generator=g)), 4)


def _calling(call: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``call``, recording an exception of the student's code as ``{"error": ...}``: every case
    runs before any is judged while grading, so an error on a later case may not hide the
    verdict on an earlier one (the judge reports it in its turn, see :func:`_raised`)."""
    def run(case: dict[str, Any], *fns: Any) -> dict[str, Any]:
        try:
            return call(case, *fns)
        except Exception as exc:  # the student's function failed: a verdict, not a crash of the check
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    run.__name__, run.__doc__ = call.__name__, call.__doc__
    return run


def _raised(outputs: dict[str, Any], functions: str) -> None:
    """Fail if the student's code raised on this case (recorded by :func:`_calling`)."""
    if "error" in outputs:
        fail(f"{functions} raised an error on a hidden case: {str(outputs['error'])[:300]}")


# --------------------------------------------------------------------------- sampler: inputs
def sampler_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """The inputs of the sampler check, in the order it judges them:

    * ``draws``: :data:`SAMPLE_SIZE` draws of each distribution (three fixed ranges each, and
      with ``seed`` one fresh random range each), then ``(500, 3)`` draws;
    * ``reproducible``: the same / another seed, the same generator twice, the global random
      state changed in between;
    * ``degenerate``: ``low == high`` (``std = 0``);
    * ``randomize``: both operations on fixed (and with ``seed``, fresh) tensors; then an
      unknown operation, which must raise ``ValueError``.
    """
    ranges = {"uniform": [(0.5, 1.5), (-2.0, 3.0), (0.25, 2.0)],
              "loguniform": [(0.5, 2.0), (0.1, 10.0), (0.25, 2.0)],
              "gaussian": [(1.0, 0.3), (0.0, 0.01), (-3.0, 2.0)]}   # (mean, std)
    nominal = torch.tensor([0.33, 1.2, 4.0], dtype=torch.float64)
    draws = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.8, 1.1]], dtype=torch.float64)
    randomize_inputs = [(nominal, draws)]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        low = _uniform(g, -2.0, 1.0)
        ranges["uniform"].append((low, round(low + _uniform(g, 0.1, 3.0), 4)))
        low = _uniform(g, 0.05, 1.0)
        ranges["loguniform"].append((low, round(low * math.exp(_uniform(g, 0.5, 4.0)), 4)))
        ranges["gaussian"].append((_uniform(g, -3.0, 3.0), _uniform(g, 0.01, 2.0)))
        rows, cols = (int(v) for v in torch.randint(2, 6, (2,), generator=g))
        randomize_inputs.append((torch.rand(cols, generator=g, dtype=torch.float64) * 4.0 - 1.0,
                                 torch.rand(rows, cols, generator=g, dtype=torch.float64) * 2.0))
    cases: list[dict[str, Any]] = []
    for dist, pairs in ranges.items():
        cases += [{"kind": "draws", "distribution": dist, "low": lo, "high": hi, "size": SAMPLE_SIZE,
                   "seed": 1234, "seed_2d": 7} for lo, hi in pairs]
    cases += [{"kind": "reproducible", "distribution": dist, "low": lo, "high": hi}
              for dist, lo, hi in (("uniform", 0.5, 1.5), ("loguniform", 0.5, 2.0), ("gaussian", 1.0, 0.3))]
    cases += [{"kind": "degenerate", "distribution": dist, "low": lo, "high": hi}
              for dist, lo, hi in (("uniform", 0.7, 0.7), ("loguniform", 2.0, 2.0), ("gaussian", 1.5, 0.0))]
    cases += [{"kind": "randomize", "nominal": n, "draws": d, "operation": op}
              for n, d in randomize_inputs for op in ("scaling", "additive")]
    cases.append({"kind": "unknown_operation", "nominal": nominal, "draws": draws, "operation": "multiply"})
    return cases


def expected_moments(case: dict[str, Any]) -> dict[str, float]:
    """The exact moments of a ``draws`` case's distribution (of ``log x`` for a loguniform):
    ``mean``, ``std`` and ``kurtosis`` (1.8 for a uniform, 3 for a Gaussian)."""
    lo, hi = case["low"], case["high"]
    if case["distribution"] == "gaussian":
        return {"mean": lo, "std": hi, "kurtosis": 3.0}
    if case["distribution"] == "loguniform":
        lo, hi = math.log(lo), math.log(hi)
    return {"mean": (lo + hi) / 2, "std": (hi - lo) / math.sqrt(12), "kurtosis": 1.8}


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


# --------------------------------------------------------------------------- sampler: the two halves
@_calling
def call_sampler(case: dict[str, Any], sample_fn: Callable[..., Any],
                 randomize_fn: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's ``sample`` / ``randomize`` on one case. Each result is
    copied (``plain``) at once, so a function that reuses a buffer cannot change an earlier one."""
    kind = case.get("kind")
    if kind in ("randomize", "unknown_operation"):
        nominal, draws = case["nominal"].clone(), case["draws"].clone()
        if kind == "unknown_operation":
            try:
                randomize_fn(nominal, draws, case["operation"])
            except ValueError:
                return {"raised_value_error": True}
            return {"raised_value_error": False}
        out = plain(randomize_fn(nominal, draws, case["operation"]))
        modified = not (torch.equal(nominal, case["nominal"]) and torch.equal(draws, case["draws"]))
        return {"out": out, "modified": modified}
    dist, lo, hi = case["distribution"], case["low"], case["high"]
    if kind == "draws":
        return {"x": plain(sample_fn(dist, lo, hi, (case["size"],), torch.Generator().manual_seed(case["seed"]))),
                "y": plain(sample_fn(dist, lo, hi, (500, 3), torch.Generator().manual_seed(case["seed_2d"])))}
    if kind == "reproducible":
        out: dict[str, Any] = {}
        # The global random states change between two draws with the same generator seed: the
        # draws may not depend on them.
        for key, global_seed in (("a", 1), ("b", 2)):
            torch.manual_seed(global_seed)
            np.random.seed(global_seed)
            out[key] = plain(sample_fn(dist, lo, hi, (64,), torch.Generator().manual_seed(42)))
        out["c"] = plain(sample_fn(dist, lo, hi, (64,), torch.Generator().manual_seed(43)))
        g = torch.Generator().manual_seed(42)
        out["first"] = plain(sample_fn(dist, lo, hi, (64,), g))
        out["second"] = plain(sample_fn(dist, lo, hi, (64,), g))
        return out
    return {"x": plain(sample_fn(dist, lo, hi, (10,), torch.Generator().manual_seed(0)))}   # degenerate


def judge_sampler(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the statistics, exact properties and the reference ``randomize``."""
    _raised(outputs, "sample or randomize")
    kind = case["kind"]
    if kind == "draws":
        _judge_draws(case, outputs)
    elif kind == "reproducible":
        _judge_reproducible(case, outputs)
    elif kind == "degenerate":
        _judge_degenerate(case, outputs)
    elif kind == "randomize":
        _judge_randomize(case, outputs)
    elif outputs.get("raised_value_error") is not True:
        fail("randomize with an unknown operation must raise ValueError (a typo would silently add)")


def _judge_draws(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    z, n = Z_TOLERANCE, case["size"]
    dist, lo, hi, label = case["distribution"], case["low"], case["high"], _label(case)
    exact = expected_moments(case)
    x = _tensor(outputs.get("x"), "sample")
    if tuple(x.shape) != (n,):
        fail(f"{label}: size=({n},) gave shape {tuple(x.shape)}")
    if x.dtype != torch.float64:
        fail(f"{label}: the draws must be float64, got {x.dtype}")
    if dist != "gaussian" and (float(x.min()) < lo or float(x.max()) > hi):
        fail(f"{label}: some draws lie outside [low, high]")
    if dist == "loguniform":
        if float(x.min()) <= 0:
            fail(f"{label}: loguniform draws must be positive")
        _check_moments(torch.log(x), exact["mean"], exact["std"], exact["kurtosis"], z, label,
                       "logarithms of the draws")
        # Uniform in log: half of the draws lie below the geometric mean sqrt(low * high).
        below = float((x < math.sqrt(lo * hi)).double().mean())
        if abs(below - 0.5) > z * 0.5 / math.sqrt(n):
            fail(f"{label}: the draws are not spread uniformly in log space (check the median)")
    else:
        _check_moments(x, exact["mean"], exact["std"], exact["kurtosis"], z, label)
    # Several dimensions: the shape is `size`, and the draws are independent across it.
    y = _tensor(outputs.get("y"), "sample")
    if tuple(y.shape) != (500, 3):
        fail(f"{label}: size=(500, 3) gave shape {tuple(y.shape)}")
    if torch.equal(y[:, 0], y[:, 1]) or torch.equal(y[0], y[1]):
        fail(f"{label}: with size=(500, 3) every element must be an independent draw")


def _judge_reproducible(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    label = f"sample({case['distribution']!r}, ...)"
    a, b, c, first, second = (_tensor(outputs.get(k), "sample") for k in ("a", "b", "c", "first", "second"))
    if not torch.equal(a, b):
        fail(f"{label}: two generators with the same seed gave different draws; draw only from `generator` "
             "(not torch's or NumPy's global random state)")
    if torch.equal(a, c):
        fail(f"{label}: generators with different seeds gave the same draws; draw from `generator`")
    if torch.equal(first, second):
        fail(f"{label}: two calls with the same generator object gave the same draws; the generator's "
             "state must advance")


def _judge_degenerate(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    x = _tensor(outputs.get("x"), "sample")
    value = torch.full((10,), case["low"], dtype=torch.float64)   # low == high, or the mean when std = 0
    if tuple(x.shape) != (10,) or x.is_complex() or not torch.allclose(x.double(), value, rtol=1e-12, atol=1e-12):
        what = "std = 0" if case["distribution"] == "gaussian" else "low == high"
        fail(f"sample({case['distribution']!r}) with {what} must return that single value for every draw")


def _judge_randomize(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    op, nominal, draws = case["operation"], case["nominal"], case["draws"]
    want = reference.randomize(nominal, draws, op)
    if outputs.get("modified"):
        fail(f"randomize(..., {op!r}) modified its inputs in place; return a new tensor")
    out = _tensor(outputs.get("out"), "randomize")
    if tuple(out.shape) != tuple(want.shape):
        fail(f"randomize(..., {op!r}): nominal {tuple(nominal.shape)} with draws {tuple(draws.shape)} must give "
             f"shape {tuple(want.shape)}, got {tuple(out.shape)}")
    if out.is_complex() or not torch.allclose(out.double(), want, rtol=1e-12, atol=1e-12):
        fail(f"randomize(..., {op!r}) does not apply the operation to the nominal value correctly")


# --------------------------------------------------------------------------- noise and latency: inputs
def noise_latency_cases(seed: int | None = None) -> list[dict[str, Any]]:
    """The inputs of the noise / latency check, in the order it judges them:

    * ``noise``: :data:`SAMPLE_SIZE` noisy elements for two fixed (mean, std) (and with ``seed``
      a fresh one), then ``noise_repro`` (the same seed twice, ``std = 0``);
    * ``latency``: :data:`SAMPLE_SIZE` delays for three fixed ranges (and a fresh one), then
      ``latency_repro`` (the same seed twice, ``low == high``);
    * ``buffer``: :func:`latency_case`, and with ``seed`` a fresh random sequence.
    """
    g = torch.Generator().manual_seed(99)
    obs = torch.rand(SAMPLE_SIZE // 4, 4, generator=g) * 4.0 - 2.0
    noise_params = [(0.0, 0.05), (0.1, 0.5)]
    latency_ranges = [(0, 1), (0, 3), (2, 4)]
    buffers = [latency_case()]
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        noise_params.append((_uniform(g, -0.5, 0.5), _uniform(g, 0.01, 1.0)))
        low = int(torch.randint(0, 3, (1,), generator=g))
        latency_ranges.append((low, low + int(torch.randint(1, 5, (1,), generator=g))))
        buffers.append(latency_case(g))
    cases: list[dict[str, Any]] = [{"kind": "noise", "obs": obs, "mean": mean, "std": std, "seed": 5}
                                   for mean, std in noise_params]
    cases.append({"kind": "noise_repro", "obs": obs[:8].clone()})
    cases += [{"kind": "latency", "low": lo, "high": hi, "n": SAMPLE_SIZE, "seed": 11} for lo, hi in latency_ranges]
    cases.append({"kind": "latency_repro"})
    cases += buffers
    return cases


def latency_case(generator: torch.Generator | None = None) -> dict[str, Any]:
    """An action sequence, initial delays and resets the buffer check replays (a ``buffer``
    case). Without ``generator``: the fixed case, 4 envs with delays 0 to 3 and two resets;
    with it, a random one."""
    if generator is None:
        g = torch.Generator().manual_seed(2024)
        return {"kind": "buffer", "num_envs": 4, "num_actions": 3, "max_latency": 3,
                "delays": torch.tensor([0, 1, 2, 3]),
                "actions": torch.rand(14, 4, 3, generator=g) * 2.0 - 1.0,
                # before step `step`, the envs `env_ids` start a new episode with `delays`
                "resets": [{"step": 6, "env_ids": torch.tensor([1, 2]), "delays": torch.tensor([3, 0])},
                           {"step": 10, "env_ids": torch.tensor([3]), "delays": torch.tensor([1])}]}
    g = generator
    num_envs, num_actions, max_latency = (int(torch.randint(lo, hi, (1,), generator=g))
                                          for lo, hi in ((3, 7), (1, 5), (1, 5)))
    steps = int(torch.randint(10, 21, (1,), generator=g))
    resets = []
    for step in sorted(int(s) for s in torch.randperm(steps - 2, generator=g)[:2] + 1):
        env_ids = torch.randperm(num_envs, generator=g)[: int(torch.randint(1, num_envs + 1, (1,), generator=g))]
        resets.append({"step": step, "env_ids": env_ids.sort().values,
                       "delays": torch.randint(0, max_latency + 1, (len(env_ids),), generator=g)})
    return {"kind": "buffer", "num_envs": num_envs, "num_actions": num_actions, "max_latency": max_latency,
            "delays": torch.randint(0, max_latency + 1, (num_envs,), generator=g),
            "actions": torch.rand(steps, num_envs, num_actions, generator=g) * 2.0 - 1.0, "resets": resets}


# --------------------------------------------------------------------------- noise and latency: the two halves
@_calling
def call_noise_latency(case: dict[str, Any], obs_noise_fn: Callable[..., Any], draw_latency_fn: Callable[..., Any],
                       latency_cls: Callable[..., Any]) -> dict[str, Any]:
    """Runs in the sandbox: the student's ``add_obs_noise``, ``draw_latency`` or ``ActionLatency``
    on one case; the results, copied at once."""
    kind = case.get("kind")
    if kind == "noise":
        obs = case["obs"].clone()
        out = plain(obs_noise_fn(obs, case["mean"], case["std"], torch.Generator().manual_seed(case["seed"])))
        return {"out": out, "modified": not torch.equal(obs, case["obs"])}
    if kind == "noise_repro":
        obs = case["obs"]
        again = plain(obs_noise_fn(obs.clone(), 0.0, 0.05, torch.Generator().manual_seed(5)))
        torch.manual_seed(3)   # the global random state may not matter
        twice = plain(obs_noise_fn(obs.clone(), 0.0, 0.05, torch.Generator().manual_seed(5)))
        zero = plain(obs_noise_fn(obs.clone(), 0.25, 0.0, torch.Generator().manual_seed(5)))
        return {"again": again, "twice": twice, "zero": zero}
    if kind == "latency":
        return {"k": plain(draw_latency_fn(case["low"], case["high"], case["n"],
                                           torch.Generator().manual_seed(case["seed"])))}
    if kind == "latency_repro":
        a = plain(draw_latency_fn(0, 3, 32, torch.Generator().manual_seed(3)))
        torch.manual_seed(4)
        b = plain(draw_latency_fn(0, 3, 32, torch.Generator().manual_seed(3)))
        same = plain(draw_latency_fn(2, 2, 16, torch.Generator().manual_seed(3)))
        return {"a": a, "b": b, "same": same}
    # buffer: replay the sequence through the student's class, with the resets.
    buf = latency_cls(case["num_envs"], case["num_actions"], case["max_latency"])
    buf.reset(torch.arange(case["num_envs"]), case["delays"].clone())
    resets = {r["step"]: r for r in case["resets"]}
    steps, modified = [], []
    for t, actions in enumerate(case["actions"]):
        if t in resets:
            buf.reset(resets[t]["env_ids"].clone(), resets[t]["delays"].clone())
        sent = actions.clone()
        steps.append(plain(buf.step(sent)))
        modified.append(not torch.equal(sent, actions))
    return {"steps": steps, "modified": modified}


def judge_noise_latency(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Runs in the grader: the statistics, exact properties and the reference ``ActionLatency``."""
    _raised(outputs, "add_obs_noise, draw_latency or ActionLatency")
    kind = case["kind"]
    if kind == "noise":
        _judge_noise(case, outputs)
    elif kind == "noise_repro":
        _judge_noise_repro(case, outputs)
    elif kind == "latency":
        _judge_latency(case, outputs)
    elif kind == "latency_repro":
        _judge_latency_repro(outputs)
    else:
        _judge_buffer(case, outputs)


def _judge_noise(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    z, obs, mean, std = Z_TOLERANCE, case["obs"], case["mean"], case["std"]
    label = f"add_obs_noise(mean={mean}, std={std})"
    if outputs.get("modified"):
        fail(f"{label} modified the observation in place; return a new tensor")
    out = _tensor(outputs.get("out"), "add_obs_noise")
    if tuple(out.shape) != tuple(obs.shape):
        fail(f"{label}: the noisy observation must have the observation's shape {tuple(obs.shape)}, "
             f"got {tuple(out.shape)}")
    if out.dtype != obs.dtype:
        fail(f"{label}: the noisy observation must keep the observation's dtype ({obs.dtype}), got {out.dtype}")
    noise = out.double() - obs.double()
    _check_moments(noise.flatten(), mean, std, 3.0, z, label, "noise values (noisy - clean)")
    # Independent across elements: no shared draw per row or per column.
    rows = obs.shape[0]
    centred = (noise - noise.mean()) / max(float(noise.std()), 1e-12)
    corr_cols = float((centred[:, 0] * centred[:, 1]).mean())
    corr_rows = float((centred[:-1] * centred[1:]).mean())
    if abs(corr_cols) > z / math.sqrt(rows) or abs(corr_rows) > z / math.sqrt(centred.numel()):
        fail(f"{label}: the noise of different elements is correlated; draw an independent value per element")


def _judge_noise_repro(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    again, twice, zero = (_tensor(outputs.get(k), "add_obs_noise") for k in ("again", "twice", "zero"))
    if not torch.equal(again, twice):
        fail("add_obs_noise: the same generator seed gave different noise; draw only from `generator`")
    want = case["obs"] + 0.25
    if zero.shape != want.shape or zero.is_complex() or not torch.allclose(zero.float(), want, atol=1e-6, rtol=0):
        fail("add_obs_noise with std = 0 must add exactly `mean`")


def _judge_latency(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    z, lo, hi, n = Z_TOLERANCE, case["low"], case["high"], case["n"]
    label = f"draw_latency({lo}, {hi})"
    k = _tensor(outputs.get("k"), "draw_latency")
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


def _judge_latency_repro(outputs: dict[str, Any]) -> None:
    a, b, same = (_tensor(outputs.get(k), "draw_latency") for k in ("a", "b", "same"))
    if not torch.equal(a, b):
        fail("draw_latency: the same generator seed gave different delays; draw only from `generator`")
    if same.shape != (16,) or same.is_complex() or not torch.equal(same.long(), torch.full((16,), 2, dtype=torch.long)):
        fail("draw_latency(low, high) with low == high must return that delay for every env")


def _judge_buffer(case: dict[str, Any], outputs: dict[str, Any]) -> None:
    steps, modified, actions = outputs.get("steps"), outputs.get("modified"), case["actions"]
    if not (isinstance(steps, list) and isinstance(modified, list) and len(steps) == len(modified) == len(actions)):
        fail("ActionLatency.step must return the delayed actions at every step")
    num_envs = case["num_envs"]
    ref = reference.ActionLatency(num_envs, case["num_actions"], case["max_latency"])
    ref.reset(torch.arange(num_envs), case["delays"])
    resets = {r["step"]: r for r in case["resets"]}
    for t, sent in enumerate(actions):
        if t in resets:
            ref.reset(resets[t]["env_ids"], resets[t]["delays"])
        want = ref.step(sent)
        if modified[t]:
            fail("ActionLatency.step modified the actions it was given in place")
        out = _tensor(steps[t], "ActionLatency.step")
        if tuple(out.shape) != tuple(want.shape):
            fail(f"ActionLatency.step must return (num_envs, num_actions) = {tuple(want.shape)}, "
                 f"got {tuple(out.shape)}")
        bad = [i for i in range(num_envs)
               if out.is_complex() or not torch.allclose(out[i].float(), want[i], atol=1e-7, rtol=0)]
        if bad:
            after = " after a reset" if any(t >= s for s in resets) else ""
            fail(f"ActionLatency.step: at step {t}{after}, env {bad[0]} (delay "
                 f"{int(ref.delays[bad[0]])}) received the wrong action; it must get the action from exactly "
                 "`delay` steps ago, and zeros while its history (since its last reset) is shorter than that")


# --------------------------------------------------------------------------- training
GRID_CELLS = "cell of the friction x payload x strength x latency grid"


def summary(grid: np.ndarray, sweep: Mapping[str, Any]) -> dict[str, float]:
    """One policy's grid over ``sweep``: its mean, its worst cell (``worst``, printed, not graded),
    its worst case (``tail``: the mean of its :data:`WORST_FRACTION` worst cells) and its cell of
    the nominal robot (:data:`NOMINAL_CONDITION`)."""
    nominal = tuple(list(values).index(NOMINAL_CONDITION[key]) for key, values in sweep.items())
    cells = np.sort(np.asarray(grid, dtype=float).ravel())
    tail = cells[: max(1, math.ceil(WORST_FRACTION * cells.size))]
    return {"mean": float(np.asarray(grid, dtype=float).mean()), "worst": float(cells[0]), "tail": float(tail.mean()),
            "nominal": float(grid[nominal])}


def _policy(ns: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One policy's entry of the graded cell's ``result``, checked for consistency."""
    result = ns.get("result")
    if not isinstance(result, Mapping) or not isinstance(result.get(name), Mapping) or "grid" not in result[name]:
        fail(f"the training cell must leave `result` with a {name!r} grid (the dict the cell builds)")
    entry = result[name]
    shape = tuple(len(v) for v in SWEEP.values())
    try:
        grid = np.asarray(entry["grid"], dtype=float)
    except (TypeError, ValueError):
        fail(f"the {name} grid must hold a finite return for every {GRID_CELLS}")
    if grid.shape != shape or not np.isfinite(grid).all():
        fail(f"the {name} grid must hold a finite return for every {GRID_CELLS}")
    # The stored grid is rounded to 3 decimals, the worst cell, the mean and the nominal cell are not.
    got = {}
    for key in ("worst_case_return", "mean_return", "nominal_return"):
        try:
            got[key] = float(entry.get(key, math.nan))
        except (TypeError, ValueError):
            got[key] = math.nan
    want = summary(grid, SWEEP)
    if not abs(want["worst"] - got["worst_case_return"]) <= 1e-3:
        fail(f"the {name} worst_case_return is not the minimum of its grid")
    if not abs(want["mean"] - got["mean_return"]) <= 1e-3:
        fail(f"the {name} mean_return is not the mean of its grid")
    if not abs(want["nominal"] - got["nominal_return"]) <= 1e-3:
        fail(f"the {name} nominal_return is not its grid's cell of the nominal robot")
    return {"grid": grid.tolist(), **want}


def measure(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell measured: per policy the grid of mean returns (axes: friction scale,
    payload, motor strength, latency), its mean, its worst cell and its nominal-robot cell, and
    the PPO config."""
    agent = ns.get("agent")
    if agent is None or not hasattr(agent, "cfg"):
        fail("the training cell must leave the trained `agent`")
    out: dict[str, Any] = {}
    for name in POLICIES:
        policy = _policy(ns, name)
        for key in ("mean", "worst", "nominal", "grid"):
            out[f"{name}_{key}"] = policy[key]
    out["agent_config"] = common.config_dict(agent.cfg)
    return out


def record_training(ns: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox: what the graded cell measured (:func:`measure`) and the networks of
    both trained policies, ``agents["randomized"]`` and ``agents["nominal"]`` (state dicts only)."""
    measured = measure(ns)
    agents = ns.get("agents")
    if not isinstance(agents, Mapping) or set(POLICIES) - set(agents):
        fail("the training cell must leave `agents`, both trained policies ('randomized' and 'nominal')")
    states = {}
    for name in POLICIES:
        modules = getattr(agents[name], "_modules", None)
        if not callable(modules):
            fail(f"the training cell's agents[{name!r}] must be a trained rlcourse PPO agent")
        states[name] = {str(k): m.state_dict() for k, m in modules().items()}
    return {"measured": measured, "algo": str(getattr(ns["agent"], "name", "")),
            "modules": states["nominal"], "randomized_modules": states["randomized"]}


def _recorded(measured: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> None:
    """One policy's grid as recorded: complete, of the pinned shape, and its mean (which the cell
    stores next to the grid, rounded to 3 decimals) consistent with it."""
    try:
        grid = np.asarray(measured.get(f"{name}_grid"), dtype=float)
        mean = float(measured.get(f"{name}_mean"))
    except (TypeError, ValueError):
        fail(f"the {name} grid must hold a finite return for every {GRID_CELLS}")
    if grid.shape != shape or not np.isfinite(grid).all():
        fail(f"the {name} grid must hold a finite return for every {GRID_CELLS}")
    if not abs(float(grid.mean()) - mean) <= 1e-3:
        fail(f"the {name} mean_return is not the mean of its grid")


def evaluate_policy(record: Mapping[str, Any], name: str, seed: int | None) -> dict[str, float]:
    """The recorded ``name`` policy ("randomized" or "nominal"), loaded into the grader's own PPO
    agent (pinned hyperparameters) and swept like the graded cell does (:data:`EVALUATION`) on
    envs seeded with ``seed`` (``None``: :data:`~rlcourse.grading.common.EVAL_SEED`); returns
    its :func:`summary`: mean over the grid, worst cell, worst case, nominal-robot cell."""
    import rlcourse

    eval_seed = common.EVAL_SEED if seed is None else seed
    networks = record.get("modules" if name == "nominal" else "randomized_modules")
    env = rlcourse.envs.make(EVALUATION["task"], num_envs=EVALUATION["num_envs"], seed=eval_seed)
    try:
        agent = common.load_policy(LAB, {**record, "modules": networks}, "ppo", env)
    finally:
        env.close()   # the sweep builds its own envs; the agent only needed this one's spaces
    result = summary(rlcourse.evaluate_robustness(agent, seed=eval_seed, **EVALUATION).grid(), EVALUATION["sweep"])
    if not all(math.isfinite(v) for v in result.values()):
        fail(f"the {name} policy outputs NaN or inf actions: the training diverged")
    return result


def claim_holds(randomized: Mapping[str, float], nominal: Mapping[str, float]) -> dict[str, bool]:
    """The lab's claim, part by part, on two :func:`summary` results: randomization raised the mean
    over the grid and the worst case (``tail``), and kept :data:`NOMINAL_KEEP` of the return on the
    nominal robot."""
    return {"mean": randomized["mean"] > nominal["mean"], "worst": randomized["tail"] > nominal["tail"],
            "nominal": randomized["nominal"] >= NOMINAL_KEEP * nominal["nominal"]}


def judge_training(record: dict[str, Any], seed: int | None) -> None:
    """Runs in the grader: both grids complete and consistent, the pinned hyperparameters, and,
    from the grader's own sweep of both recorded policies, the randomized policy's mean over the
    grid at or above the pinned pass mark and :func:`claim_holds` (mean and worst case above the
    nominal policy's, at least :data:`NOMINAL_KEEP` of its return on the nominal robot)."""
    pins = load_pins(LAB)
    measured = record.get("measured")
    if not isinstance(measured, Mapping) or not isinstance(measured.get("agent_config"), Mapping):
        fail("the training cell must leave `result` (the dict the cell builds) and the trained `agent`")
    check_agent_config(LAB, measured["agent_config"], pins)
    shape = np.shape(pins["runs"][0]["measured"]["randomized_grid"])
    for name in POLICIES:
        _recorded(measured, name, shape)
    randomized = evaluate_policy(record, "randomized", seed)
    check_at_least(randomized["mean"], pins["threshold"],
                   "the randomized policy's mean over the grid (evaluated anew by the grader) is below the pinned "
                   "pass mark for this lab (see the header); check your sampler and randomize first, then the "
                   "latency and the observation noise")
    claim = claim_holds(randomized, evaluate_policy(record, "nominal", seed))
    if not claim["mean"]:
        fail("the randomized policy's mean over the grid is not higher than the nominal policy's (both evaluated "
             "anew by the grader): randomization did not make the walker more robust; check your sampler and "
             "randomize, then draw_latency, ActionLatency and the observation noise")
    if not claim["worst"]:
        fail("the randomized policy's worst case (the mean of the worst tenth of the grid's robots) is not "
             "higher than the nominal policy's (both evaluated anew by the grader); check your sampler and randomize, then draw_latency and ActionLatency")
    if not claim["nominal"]:
        fail(f"on the nominal robot the randomized policy keeps less than {NOMINAL_KEEP:.0%} of the nominal "
             "policy's return (both evaluated anew by the grader); check the ranges your sampler draws from")


SAMPLER = FunctionCheck("sampler", sampler_cases, call_sampler, judge_sampler)
NOISE_LATENCY = FunctionCheck("noise_latency", noise_latency_cases, call_noise_latency, judge_noise_latency)
TRAINING = TrainingCheck("training", record_training, judge_training)

# The hidden test cells' calls.
check_sampler = entry_point(SAMPLER, "Check ``sample`` (shapes, dtype, bounds, reproducibility, large-sample "
                                     "statistics) and ``randomize`` (exactly).")
check_noise_latency = entry_point(NOISE_LATENCY, "Check ``add_obs_noise`` and ``draw_latency`` (statistics, "
                                                 "reproducibility) and ``ActionLatency`` step by step.")
check_training = entry_point(TRAINING, "Check the graded run: the randomized policy's mean over the grid reaches "
                                       "the pass mark and beats the nominal policy's, re-evaluated by the grader.")


def pass_mark(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``MARGIN`` times the lowest reference seed's randomized mean over the grid. Refuses a pass
    mark <= 0, and a run where the lab's claim (:func:`claim_holds`) fails on a reference seed:
    the grade asks every student for it."""
    summaries = {name: [summary(np.asarray(run["measured"][f"{name}_grid"]), SWEEP) for run in runs]
                 for name in POLICIES}
    claims = [claim_holds(r, n) for r, n in zip(summaries["randomized"], summaries["nominal"])]
    failed = [(run["seed"], [k for k, ok in c.items() if not ok]) for run, c in zip(runs, claims) if not all(c.values())]
    if failed:
        raise RuntimeError(f"the lab's claim fails on reference seeds (seed, parts): {failed}; the graded "
                           f"comparison would fail correct solutions, not pinning. Measured: {summaries}")
    means = [s["mean"] for s in summaries["randomized"]]
    mark = margin_pass_mark(means, "randomized_mean", margin=MARGIN)
    if mark["threshold"] <= 0:
        raise RuntimeError(f"the lowest reference mean is {min(means)}; a pass mark <= 0 means nothing")
    rounded = {f"reference_{k}_{name}": [round(s[k], 4) for s in summaries[name]]
               for name in POLICIES for k in ("mean", "worst", "tail", "nominal") if (name, k) != ("randomized", "mean")}
    return {**mark, "claim_holds": [all(c.values()) for c in claims], "nominal_keep": NOMINAL_KEEP, **rounded}
