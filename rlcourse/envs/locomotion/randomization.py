"""Domain randomization read like IsaacGymEnvs ``randomization_params`` / Isaac Lab event terms.

The config is a dict ``{parameter: term}``; every term is a dict::

    randomization = {
        "mass":      {"range": [0.8, 1.2], "operation": "scaling", "bodies": ["torso"]},
        "friction":  {"range": [0.5, 1.25], "mode": "reset"},
        "actuator_strength": {"range": [0.9, 1.1]},
        "joint_damping":     {"range": [0.5, 2.0], "distribution": "loguniform"},
        "gravity":   {"range": [0.0, 0.4], "distribution": "gaussian", "axes": "xy"},
        "obs_noise":    {"range": [0.0, 0.01]},          # gaussian [mean, std], every step
        "action_noise": {"range": [0.0, 0.02]},
        "action_latency": {"range": [0, 2]},             # whole control steps, per env
        # or in physics steps: 0-40 ms on a 10 ms physics step, per env
        # "action_latency": {"range": [0, 4], "unit": "physics_steps"},
        "push": {"interval": [100, 200], "velocity_range": {"x": [-0.5, 0.5], "y": [-0.5, 0.5]}},
    }

Keys of a term (all optional except ``range``):

``range``
    ``[low, high]`` for ``uniform`` and ``loguniform``; ``[mean, std]`` for ``gaussian``
    (IsaacGymEnvs' convention).
``distribution``
    ``uniform`` (default), ``gaussian`` (default for the noise terms) or ``loguniform``.
``operation``
    ``scaling`` (multiply the nominal value; default for physical parameters) or
    ``additive`` (add to it; default for gravity and the noise terms). Always applied to
    the *nominal* value, never on top of an earlier sample (both IGE and Isaac Lab do this).
``mode``
    when a new value is drawn: ``startup`` (once, when the env is built; IGE
    ``setup_only``; default for physical parameters), ``reset`` (for each env when it
    resets; default for ``action_latency``) or ``interval`` (every ``interval`` control
    steps per env; the only mode of ``push``). Noise terms are drawn every step.
``interval``
    control steps between draws for ``mode: interval``; an int or ``[low, high]`` drawn
    per env (Isaac Lab ``interval_range_s``, in steps).
``schedule``, ``schedule_steps``
    ``linear``: the deviation from "no change" (1 for scaling, 0 for additive) grows
    linearly from 0 to full over ``schedule_steps`` env steps (IGE ``schedule: linear``).
``bodies`` / ``geoms``
    names of the bodies (``mass``) or geoms (``friction``) to randomize; default: all.
``axes``
    for ``gravity``: which components to randomize (default ``"xyz"``).
``unit``
    for ``action_latency``: ``control_steps`` (default) or ``physics_steps`` (see below).

What each parameter changes in the per-env ``MjModel``:

=====================  ==========================================================
``mass``               ``body_mass`` (one draw per env and body); ``body_inertia``
                       scaled by the same mass ratio (Isaac Lab ``recompute_inertia``).
                       A gaussian draw that would make a mass <= 0 is clamped to 0.1 %
                       of the nominal mass
``friction``           sliding friction ``geom_friction[:, 0]`` (one draw per env,
                       shared by the selected geoms: MuJoCo takes the max of the two
                       geoms in contact, so randomizing one side alone would do little)
``actuator_strength``  ``actuator_gainprm[:, 0]`` and ``actuator_biasprm[:, 1:3]``: the
                       whole actuator force is scaled (motor torque, or kp and kd of a
                       position servo), one draw per env and actuator
``actuator_kp``        position servos: ``kp`` only (``gainprm[0]``, ``biasprm[1]``)
``actuator_kd``        position servos: ``kd`` only (``biasprm[2]``, which holds ``-kd``)
``joint_damping``      ``dof_damping`` of the actuated joints (one draw per env and dof)
``gravity``            ``opt.gravity`` (one draw per env and axis)
``obs_noise``          added to the observation every step (one draw per element)
``action_noise``       added to the policy action before clipping, every step
``action_latency``     the physics receives the action from ``k`` control steps ago,
                       ``k`` an integer in ``[low, high]`` drawn per env. With
                       ``unit: physics_steps``, ``k`` counts physics steps (``decimation``
                       of them per control step): a command reaches the actuators ``k``
                       physics steps after the policy sent it, so with ``k = q *
                       decimation + r`` the first ``r`` physics steps of a control step
                       still apply the action from ``q + 1`` control steps ago and the
                       rest the one from ``q`` steps ago (a latency shorter than one
                       control step, e.g. 0-40 ms on the Ant's 50 ms step)
``push``               adds a random velocity to the root (``velocity_range`` keys
                       ``x y z`` in the world frame, ``roll pitch yaw`` in the body
                       frame, MuJoCo's free-joint convention)
=====================  ==========================================================

Invalid configs raise :class:`ValueError` naming the field, e.g.
``randomization['mass'].range: low 1.5 > high 0.5``.

Every value is drawn and applied by the module-level building blocks :func:`sample`,
:func:`randomize`, :func:`draw_latency` and :class:`ActionLatency` (and :func:`add_obs_noise`
describes the observation noise). Lab 4 has students write them; the hidden checks compare
theirs with these, and :meth:`DomainRandomization.override` plugs theirs into the env.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Mapping

import mujoco
import numpy as np
import torch

from rlcourse.envs.locomotion.backend import MujocoBatch

PHYSICS_PARAMS = ("mass", "friction", "actuator_strength", "actuator_kp", "actuator_kd", "joint_damping", "gravity")
NOISE_PARAMS = ("obs_noise", "action_noise")
PARAMS = PHYSICS_PARAMS + NOISE_PARAMS + ("action_latency", "push")
DISTRIBUTIONS = ("uniform", "gaussian", "loguniform")
OPERATIONS = ("scaling", "additive")
MODES = ("startup", "reset", "interval")
PUSH_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
_KEYS = {"range", "distribution", "operation", "mode", "interval", "schedule", "schedule_steps",
         "bodies", "geoms", "axes", "velocity_range", "unit"}
LATENCY_UNITS = ("control_steps", "physics_steps")


# --------------------------------------------------------------------------- building blocks
def sample(distribution: str, low: float, high: float, size: tuple[int, ...],
           generator: torch.Generator | None) -> torch.Tensor:
    """``size`` float64 draws from ``generator`` (and nothing else).

    ``uniform`` and ``loguniform`` draw from ``[low, high]`` (``loguniform``: ``log x`` uniform
    on ``[log low, log high]``); ``gaussian`` reads ``low, high`` as ``mean, std`` (IsaacGymEnvs'
    convention). ``low == high`` (or ``std = 0``) gives exactly that value.
    """
    if distribution == "uniform":
        return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)
    if distribution == "loguniform":
        a, b = math.log(low), math.log(high)
        return torch.exp(a + (b - a) * torch.rand(size, generator=generator, dtype=torch.float64))
    if distribution == "gaussian":
        return low + high * torch.randn(size, generator=generator, dtype=torch.float64)
    raise ValueError(f"unknown distribution {distribution!r}; use one of {DISTRIBUTIONS}")


def randomize(nominal: torch.Tensor, draws: torch.Tensor, operation: str) -> torch.Tensor:
    """The randomized value (a new tensor, broadcast): ``scaling`` multiplies the *nominal* value
    by the draws, ``additive`` adds them."""
    if operation == "scaling":
        return nominal * draws
    if operation == "additive":
        return nominal + draws
    raise ValueError(f"unknown operation {operation!r}; use one of {OPERATIONS}")


def add_obs_noise(obs: torch.Tensor, mean: float, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """``obs`` plus independent ``N(mean, std^2)`` noise on every element, drawn in float64 and
    added in ``obs.dtype`` (a new tensor)."""
    return obs + sample("gaussian", mean, std, tuple(obs.shape), generator).to(obs.dtype)


def draw_latency(low: int, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` delays (int64), uniform over the integers ``low .. high`` (both included)."""
    return torch.randint(int(low), int(high) + 1, (n,), generator=generator)


class ActionLatency:
    """Per-env action latency: env ``i`` receives the action from ``delays[i]`` control steps ago
    (zeros while its history since its last :meth:`reset` is shorter than that)."""

    def __init__(self, num_envs: int, num_actions: int, max_latency: int,
                 device: torch.device | str | None = None) -> None:
        self.history = torch.zeros(num_envs, max_latency + 1, num_actions, device=device)  # [:, j]: j steps ago
        self.delays = torch.zeros(num_envs, dtype=torch.long, device=device)

    def reset(self, env_ids: torch.Tensor, delays: torch.Tensor) -> None:
        """The envs ``env_ids`` start an episode with ``delays``; their history is cleared."""
        self.history[env_ids] = 0.0
        self.delays[env_ids] = delays

    def step(self, actions: torch.Tensor) -> torch.Tensor:
        """Record ``actions`` (num_envs, num_actions); returns what each env's actuators get now."""
        self.history = torch.roll(self.history, shifts=1, dims=1)
        self.history[:, 0] = actions
        return self.history[torch.arange(self.history.shape[0], device=self.history.device), self.delays]


# --------------------------------------------------------------------------- config
@dataclasses.dataclass
class Term:
    """One validated randomization term (see the module docstring for the fields)."""

    name: str
    range: tuple[float, float] = (0.0, 0.0)
    distribution: str = "uniform"
    operation: str = "scaling"
    mode: str = "startup"
    interval: tuple[int, int] | None = None
    schedule: str = "constant"
    schedule_steps: int = 0
    targets: np.ndarray | None = None
    unit: str = "control_steps"
    velocity_range: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def noop(self) -> float:
        return 1.0 if self.operation == "scaling" else 0.0


def _err(name: str, field: str, msg: str) -> ValueError:
    where = f"randomization[{name!r}]" + (f".{field}" if field else "")
    return ValueError(f"{where}: {msg}")


def _pair(name: str, field: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _err(name, field, f"must be a pair [low, high], got {value!r}")
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise _err(name, field, f"must hold two numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _err(name, field, f"must be finite, got {value!r}")
    return lo, hi


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) or "" for i in range(count)]


def parse_config(cfg: Mapping[str, Any] | None, model: mujoco.MjModel) -> dict[str, Term]:
    """Validate a randomization config against a model; returns ``{param: Term}``.

    Raises:
        ValueError: naming the offending field: unknown parameter or key, a bad range
            (``low > high``, negative std, non-positive loguniform bound), an unknown
            body/geom, a mass that could become negative, a bad mode or schedule.
    """
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"randomization must be a dict of {{parameter: term}}, got {type(cfg).__name__}")
    terms: dict[str, Term] = {}
    for name, raw in cfg.items():
        if name not in PARAMS:
            close = difflib.get_close_matches(str(name), PARAMS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"randomization: unknown parameter {name!r}{hint}; known: {', '.join(PARAMS)}")
        if raw is None or raw is False:
            continue
        if not isinstance(raw, Mapping):
            raise _err(name, "", f"must be a dict, got {type(raw).__name__}")
        for key in raw:
            if key not in _KEYS:
                close = difflib.get_close_matches(str(key), _KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _err(name, str(key), f"unknown key{hint}")
        terms[name] = _parse_term(name, raw, model)
    return terms


def _parse_term(name: str, raw: Mapping[str, Any], model: mujoco.MjModel) -> Term:
    is_noise = name in NOISE_PARAMS
    additive_default = is_noise or name == "gravity"
    t = Term(
        name=name,
        distribution=raw.get("distribution", "gaussian" if is_noise else "uniform"),
        operation=raw.get("operation", "additive" if additive_default else "scaling"),
        mode=raw.get("mode", "interval" if name == "push" else "reset" if name == "action_latency" else "startup"),
        schedule=raw.get("schedule", "constant"),
    )
    if t.distribution not in DISTRIBUTIONS:
        raise _err(name, "distribution", f"must be one of {DISTRIBUTIONS}, got {t.distribution!r}")
    if t.operation not in OPERATIONS:
        raise _err(name, "operation", f"must be one of {OPERATIONS}, got {t.operation!r}")
    if t.mode not in MODES:
        raise _err(name, "mode", f"must be one of {MODES}, got {t.mode!r}")
    if is_noise and "mode" in raw:
        raise _err(name, "mode", "noise is drawn every step; remove 'mode'")
    if name == "push" and t.mode != "interval":
        raise _err(name, "mode", "pushes are applied at an interval; use mode 'interval'")
    if t.schedule not in ("constant", "linear"):
        raise _err(name, "schedule", f"must be 'constant' or 'linear', got {t.schedule!r}")
    if t.schedule == "linear":
        steps = raw.get("schedule_steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise _err(name, "schedule_steps", f"a linear schedule needs a positive integer, got {steps!r}")
        t.schedule_steps = steps
        if t.mode == "startup" and not is_noise:
            # The one startup draw happens at step 0, where a linear schedule is still at 0.
            raise _err(name, "schedule", "a linear schedule needs values drawn again as training goes on: "
                                         "use mode 'reset' or 'interval' (mode is 'startup')")
    if name in ("action_latency", "push") and "schedule" in raw:
        raise _err(name, "schedule", f"not supported for {name!r}")

    if t.mode == "interval":
        if "interval" not in raw:
            raise _err(name, "interval", "mode 'interval' needs 'interval' (control steps, int or [low, high])")
        iv = raw["interval"]
        lo, hi = (iv, iv) if isinstance(iv, int) and not isinstance(iv, bool) else _pair(name, "interval", iv)
        if lo != int(lo) or hi != int(hi) or lo < 1 or lo > hi:
            raise _err(name, "interval", f"must be positive integers with low <= high, got {iv!r}")
        t.interval = (int(lo), int(hi))
    elif "interval" in raw:
        raise _err(name, "interval", f"only used with mode 'interval' (mode is {t.mode!r})")

    if name == "push":
        for key in ("range", "operation"):
            if key in raw:
                raise _err(name, key, "pushes are set by 'velocity_range' (and 'interval'); remove it")
        vr = raw.get("velocity_range")
        if not isinstance(vr, Mapping) or not vr:
            raise _err(name, "velocity_range", "needs a dict like {'x': [-0.5, 0.5], 'y': [-0.5, 0.5]}")
        for axis, pair in vr.items():
            if axis not in PUSH_AXES:
                raise _err(name, f"velocity_range.{axis}", f"unknown axis; use {PUSH_AXES}")
            lo, hi = _pair(name, f"velocity_range.{axis}", pair)
            if lo > hi:
                raise _err(name, f"velocity_range.{axis}", f"low {lo} > high {hi}")
            t.velocity_range[axis] = (lo, hi)
        if t.distribution != "uniform":
            raise _err(name, "distribution", "pushes are drawn uniformly from velocity_range")
        return t

    if "range" not in raw:
        raise _err(name, "range", "is required")
    lo, hi = _pair(name, "range", raw["range"])
    if t.distribution == "gaussian":
        if hi < 0:
            raise _err(name, "range", f"gaussian range is [mean, std]; std {hi} < 0")
    else:
        if lo > hi:
            raise _err(name, "range", f"low {lo} > high {hi}")
        if t.distribution == "loguniform" and lo <= 0:
            raise _err(name, "range", f"loguniform needs low > 0, got {lo}")
    t.range = (lo, hi)

    if "unit" in raw and name != "action_latency":
        raise _err(name, "unit", "only valid for 'action_latency'")
    if name == "action_latency":
        t.unit = raw.get("unit", "control_steps")
        if t.unit not in LATENCY_UNITS:
            raise _err(name, "unit", f"must be one of {LATENCY_UNITS}, got {t.unit!r}")
        if t.distribution != "uniform" or lo != int(lo) or hi != int(hi) or lo < 0:
            raise _err(name, "range", f"latency is a uniform integer number of {t.unit.replace('_', ' ')} >= 0, "
                                      f"got {raw['range']!r}")
        if t.mode == "interval":
            raise _err(name, "mode", "latency is drawn at 'startup' or 'reset'")
        return t

    if is_noise and t.operation != "additive":
        raise _err(name, "operation", "noise is additive")
    if t.operation == "scaling" and t.distribution != "gaussian":
        if name == "mass" and lo <= 0:
            raise _err(name, "range", f"a mass scale must be > 0 (a mass cannot be negative or zero), got low {lo}")
        if lo < 0:
            raise _err(name, "range", f"a scale must be >= 0, got low {lo}")

    if name == "mass":
        bodies = _names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)
        ids = _select(name, "bodies", raw.get("bodies"), bodies, default=list(range(1, model.nbody)))
        t.targets = ids
        if t.operation == "additive" and t.distribution != "gaussian":
            for b in ids:
                if model.body_mass[b] + lo <= 0:
                    raise _err(name, "range", f"adding {lo} would make body {bodies[b]!r} mass "
                               f"{model.body_mass[b] + lo:.4g} <= 0 (a mass cannot be negative)")
    elif name == "friction":
        geoms = _names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom)
        t.targets = _select(name, "geoms", raw.get("geoms"), geoms, default=list(range(model.ngeom)))
    for key, allowed in (("bodies", "mass"), ("geoms", "friction"), ("axes", "gravity")):
        if key in raw and name != allowed:
            raise _err(name, key, f"only valid for {allowed!r}")
    servo = _position_servos(model.actuator_biasprm)
    if name in ("actuator_kp", "actuator_kd") and not servo.any():
        raise _err(name, "", "the model has no position actuators (use 'actuator_strength' for motors)")
    if name == "actuator_strength" and t.operation == "additive" and servo.any():
        # Adding x to kp and to kd (different units) is not "stronger by x".
        raise _err(name, "operation", "position actuators are scaled, not shifted: use 'scaling' "
                                      "(or 'actuator_kp' / 'actuator_kd' to add to a gain)")
    if name == "gravity":
        axes = raw.get("axes", "xyz")
        if not isinstance(axes, str) or not axes or any(a not in "xyz" for a in axes) or len(set(axes)) != len(axes):
            raise _err(name, "axes", f"must be a string of distinct letters from 'xyz', got {axes!r}")
        t.targets = np.array(["xyz".index(a) for a in axes])
    return t


def _position_servos(biasprm: np.ndarray) -> np.ndarray:
    """Which actuators are position servos: MuJoCo keeps their -kp and -kd in biasprm[1:3]."""
    return (biasprm[:, 1] != 0) | (biasprm[:, 2] != 0)


def _select(name: str, field: str, wanted: Any, known: list[str], default: list[int]) -> np.ndarray:
    if wanted is None:
        return np.asarray(default, dtype=np.int64)
    if isinstance(wanted, str) or not isinstance(wanted, (list, tuple)) or not wanted:
        raise _err(name, field, f"must be a non-empty list of names, got {wanted!r}")
    ids = []
    for item in wanted:
        if item not in known or not item:
            close = difflib.get_close_matches(str(item), [k for k in known if k], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _err(name, field, f"unknown name {item!r}{hint}")
        ids.append(known.index(item))
    return np.asarray(ids, dtype=np.int64)


# override()'s parameters are named like the building blocks they replace.
_default_sample, _default_randomize, _default_draw_latency = sample, randomize, draw_latency


class DomainRandomization:
    """Applies a parsed config to a :class:`MujocoBatch` and to the env's action/observation streams.

    The env calls :meth:`startup` once, :meth:`on_reset` for the envs it resets,
    :meth:`on_step` once per control step (interval terms, pushes), and passes its
    actions through :meth:`perturb_actions` / :meth:`delay_actions` and observations
    through :meth:`observation_noise`. ``values[param]`` holds the current per-env draws.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | None,
        sim: MujocoBatch,
        num_actions: int,
        generator: torch.Generator,
        device: torch.device,
        joint_dofs: np.ndarray,
        decimation: int = 1,
    ) -> None:
        self.sim = sim
        self.terms = parse_config(cfg, sim.model)
        self.num_envs = sim.num_envs
        self.num_actions = num_actions
        self.generator = generator
        self.device = device
        self.joint_dofs = np.asarray(joint_dofs, dtype=np.int64)
        self.step_count = 0
        """Control steps since the env was built (drives schedules)."""
        m = sim.model
        self._nominal = {
            "body_mass": m.body_mass.copy(), "body_inertia": m.body_inertia.copy(),
            "geom_friction": m.geom_friction.copy(), "actuator_gainprm": m.actuator_gainprm.copy(),
            "actuator_biasprm": m.actuator_biasprm.copy(), "dof_damping": m.dof_damping.copy(),
            "gravity": m.opt.gravity.copy(),
        }
        self.values: dict[str, np.ndarray] = {}
        n = self.num_envs
        self._next_draw = {k: np.zeros(n, dtype=np.int64) for k, t in self.terms.items() if t.mode == "interval"}
        lat = self.terms.get("action_latency")
        self.decimation = int(decimation)
        # A latency of k physics steps is q = k // decimation whole control steps plus r = k %
        # decimation physics steps: the actuators hold the action from q + 1 steps ago for the
        # first r physics steps of a control step, then get the one from q steps ago. Two
        # buffers of control-step delays (q and q + 1) give both; the second one exists only
        # for latencies in physics steps. max_latency is in control steps (the buffers' depth).
        self.substep_latency = lat is not None and lat.unit == "physics_steps"
        if lat is None:
            self.max_latency = 0
        elif self.substep_latency:
            self.max_latency = int(lat.range[1]) // self.decimation + 1
        else:
            self.max_latency = int(lat.range[1])
        self.latency = torch.zeros(n, dtype=torch.long, device=device)
        """Each env's latency, in the term's unit (control or physics steps)."""
        # The building blocks in use; override() replaces them with a user's (lab 4).
        self._sample_fn: Callable[..., Any] = sample
        self._randomize_fn: Callable[..., Any] = randomize
        self._obs_noise_fn: Callable[..., Any] | None = None   # None: gaussian noise drawn by _sample_fn
        self._draw_latency_fn: Callable[..., Any] = draw_latency
        self._latency_buffer: Any = ActionLatency(n, num_actions, self.max_latency, device=device)
        self._held_buffer: Any = ActionLatency(n, num_actions, self.max_latency, device=device) \
            if self.substep_latency else None
        self._held: torch.Tensor | None = None      # the actions still held at the start of this step

    @property
    def enabled(self) -> bool:
        return bool(self.terms)

    def override(
        self,
        sample: Callable[..., Any] | None = None,
        randomize: Callable[..., Any] | None = None,
        obs_noise: Callable[..., Any] | None = None,
        draw_latency: Callable[..., Any] | None = None,
        latency_buffer: Callable[..., Any] | None = None,
    ) -> None:
        """Replace parts of the built-in implementation with your own functions (lab 4).

        Args:
            sample: ``sample(distribution, low, high, size, generator) -> tensor`` draws the
                raw values of a term (``low, high`` = ``mean, std`` for ``gaussian``).
            randomize: ``randomize(nominal, draws, operation) -> tensor`` applies them to the
                nominal value (``scaling`` multiplies, ``additive`` adds).
            obs_noise: ``obs_noise(obs, mean, std, generator) -> noisy obs`` for a gaussian
                ``obs_noise`` term; the env adds the noise this function adds to an all-zero
                observation (the same noise goes into ``extras["final_obs"]``).
            draw_latency: ``draw_latency(low, high, n, generator) -> LongTensor`` of per-env delays.
            latency_buffer: a class ``latency_buffer(num_envs, num_actions, max_latency)`` with
                ``reset(env_ids, delays)`` and ``step(actions) -> delayed actions`` (a latency in
                physics steps uses two of them: delays ``q`` and ``q + 1`` control steps).

        Every value drawn so far is drawn again with the new functions (as at construction).
        A function left out (``None``) is the module's own.
        """
        self._sample_fn = _default_sample if sample is None else sample
        self._randomize_fn = _default_randomize if randomize is None else randomize
        self._obs_noise_fn = obs_noise
        self._draw_latency_fn = _default_draw_latency if draw_latency is None else draw_latency
        make_buffer = latency_buffer or (lambda n, a, k: ActionLatency(n, a, k, device=self.device))
        self._latency_buffer = make_buffer(self.num_envs, self.num_actions, self.max_latency)
        if self.substep_latency:
            self._held_buffer = make_buffer(self.num_envs, self.num_actions, self.max_latency)
        self.startup()

    # ------------------------------------------------------------------ sampling
    def _schedule(self, t: Term) -> float:
        if t.schedule == "linear":
            return min(1.0, self.step_count / t.schedule_steps)
        return 1.0

    def sample(self, t: Term, shape: tuple[int, ...]) -> np.ndarray:
        """Draw values for term ``t`` (schedule applied), as float64 NumPy."""
        lo, hi = t.range
        x = torch.as_tensor(self._sample_fn(t.distribution, lo, hi, tuple(shape), self.generator), dtype=torch.float64)
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"the sample function returned shape {tuple(x.shape)} for size {tuple(shape)}")
        s = self._schedule(t)
        if s < 1.0:
            x = t.noop + s * (x - t.noop)
        return x.numpy()

    def _apply(self, x: np.ndarray, nominal: np.ndarray, t: Term) -> np.ndarray:
        out = self._randomize_fn(torch.as_tensor(nominal, dtype=torch.float64),
                                 torch.as_tensor(x, dtype=torch.float64), t.operation)
        return torch.as_tensor(out, dtype=torch.float64).numpy()

    # ------------------------------------------------------------------ physics
    def _randomize_physics(self, name: str, env_ids: np.ndarray) -> None:
        t, nom, sim = self.terms[name], self._nominal, self.sim
        if name not in self.values:
            self.values[name] = np.full((self.num_envs, self._width(name)), t.noop)
        k = len(env_ids)
        if k == 0:
            return
        if name == "friction":
            x = self.sample(t, (k, 1))
        else:
            x = self.sample(t, (k, self._width(name)))
        self.values[name][env_ids] = x
        for row, i in enumerate(env_ids):
            m = sim.models[i]
            xi = x[row]
            if name == "mass":
                b = t.targets
                new = np.maximum(self._apply(xi, nom["body_mass"][b], t), 1e-3 * nom["body_mass"][b])
                m.body_mass[b] = new
                ratio = new / np.maximum(nom["body_mass"][b], 1e-12)
                m.body_inertia[b] = nom["body_inertia"][b] * ratio[:, None]
                sim.set_const(i)
            elif name == "friction":
                g = t.targets
                m.geom_friction[g, 0] = np.maximum(self._apply(xi[0], nom["geom_friction"][g, 0], t), 0.0)
            elif name == "actuator_strength":
                m.actuator_gainprm[:, 0] = self._apply(xi, nom["actuator_gainprm"][:, 0], t)
                m.actuator_biasprm[:, 1] = self._apply(xi, nom["actuator_biasprm"][:, 1], t)
                m.actuator_biasprm[:, 2] = self._apply(xi, nom["actuator_biasprm"][:, 2], t)
            elif name == "actuator_kp":
                kp = np.maximum(self._apply(xi, nom["actuator_gainprm"][:, 0], t), 0.0)
                m.actuator_gainprm[:, 0] = kp
                m.actuator_biasprm[:, 1] = np.where(nom["actuator_biasprm"][:, 1] != 0, -kp, 0.0)
            elif name == "actuator_kd":
                # MuJoCo stores -kd in biasprm[2]: randomize kd itself, so +x means more damping.
                kd = np.maximum(self._apply(xi, -nom["actuator_biasprm"][:, 2], t), 0.0)
                m.actuator_biasprm[:, 2] = np.where(_position_servos(nom["actuator_biasprm"]), -kd, 0.0)
            elif name == "joint_damping":
                d = self.joint_dofs
                m.dof_damping[d] = np.maximum(self._apply(xi, nom["dof_damping"][d], t), 0.0)
                sim.set_const(i)
            elif name == "gravity":
                a = t.targets
                gvec = nom["gravity"].copy()
                gvec[a] = self._apply(xi, nom["gravity"][a], t)
                m.opt.gravity[:] = gvec

    def _width(self, name: str) -> int:
        t = self.terms[name]
        if name in ("mass", "gravity"):
            return len(t.targets)
        if name == "friction":
            return 1
        if name == "joint_damping":
            return len(self.joint_dofs)
        return self.sim.nu

    def _draw_interval(self, name: str, env_ids: np.ndarray) -> None:
        lo, hi = self.terms[name].interval
        steps = torch.randint(lo, hi + 1, (len(env_ids),), generator=self.generator).numpy()
        self._next_draw[name][env_ids] = self.step_count + steps

    # ------------------------------------------------------------------ hooks
    def startup(self) -> None:
        """Draw every physical parameter once for all envs (whatever its mode)."""
        all_ids = np.arange(self.num_envs)
        for name in self.terms:
            if name in PHYSICS_PARAMS:
                self._randomize_physics(name, all_ids)
            if self.terms[name].mode == "interval":
                self._draw_interval(name, all_ids)
        if "action_latency" in self.terms:
            self._draw_latency(all_ids)
        self._reset_buffers(torch.arange(self.num_envs, device=self.device))

    def on_reset(self, env_ids: np.ndarray) -> None:
        """Re-draw the ``mode: reset`` terms for the envs being reset; clear their action history."""
        for name, t in self.terms.items():
            if t.mode == "reset" and name in PHYSICS_PARAMS:
                self._randomize_physics(name, env_ids)
        if "action_latency" in self.terms and self.terms["action_latency"].mode == "reset":
            self._draw_latency(env_ids)
        if self.max_latency > 0:     # without latency the buffer is never read (delay_actions)
            self._reset_buffers(torch.as_tensor(env_ids, device=self.device))

    def _reset_buffers(self, ids: torch.Tensor) -> None:
        """Clear the action history of the envs ``ids`` and set their delays (in control steps)."""
        if not self.substep_latency:
            self._latency_buffer.reset(ids, self.latency[ids].clone())
            return
        whole = torch.div(self.latency[ids], self.decimation, rounding_mode="floor")
        self._latency_buffer.reset(ids, whole.clone())
        self._held_buffer.reset(ids, whole + 1)

    def on_step(self) -> bool:
        """Advance the step counter; apply due interval terms. Returns True if a push changed the state."""
        self.step_count += 1
        pushed = False
        for name, due_at in self._next_draw.items():
            due = np.nonzero(due_at <= self.step_count)[0]
            if len(due) == 0:
                continue
            if name == "push":
                self._push(due)
                pushed = True
            else:
                self._randomize_physics(name, due)
            self._draw_interval(name, due)
        return pushed

    def _push(self, env_ids: np.ndarray) -> None:
        t = self.terms["push"]
        dv = np.zeros((len(env_ids), 6))
        for axis, (lo, hi) in t.velocity_range.items():
            col = PUSH_AXES.index(axis)
            dv[:, col] = (lo + (hi - lo) * torch.rand(len(env_ids), generator=self.generator, dtype=torch.float64)).numpy()
        dv = self._schedule(t) * dv
        self.sim.qvel[env_ids, :6] += dv
        self.values.setdefault("push", np.zeros((self.num_envs, 6)))[env_ids] = dv   # last push per env

    def _draw_latency(self, env_ids: np.ndarray) -> None:
        lo, hi = (int(v) for v in self.terms["action_latency"].range)
        k = torch.as_tensor(self._draw_latency_fn(lo, hi, len(env_ids), self.generator), dtype=torch.long)
        if k.shape != (len(env_ids),) or bool(((k < 0) | (k > hi)).any()):
            raise ValueError(f"draw_latency must return {len(env_ids)} integers in [0, {hi}]")
        self.latency[torch.as_tensor(env_ids, device=self.device)] = k.to(self.device)
        self.values["action_latency"] = self.latency.cpu().numpy()

    # ------------------------------------------------------------------ streams
    def perturb_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Action noise (before clipping, as in IsaacGymEnvs ``VecTask.step``)."""
        t = self.terms.get("action_noise")
        if t is None:
            return actions
        return actions + torch.from_numpy(self.sample(t, tuple(actions.shape))).to(actions.device, actions.dtype)

    def delay_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """The action each env's actuators receive this step: the one from ``latency[i]`` steps ago
        (latency in control steps), or, for a latency in physics steps, the one they receive once
        the first ``latency[i] % decimation`` physics steps are over (see :meth:`substep_ctrl`)."""
        if self.max_latency == 0:
            return actions
        if self.substep_latency:
            held = self._held_buffer.step(actions)
            self._held = torch.as_tensor(held, dtype=actions.dtype, device=actions.device)
        return torch.as_tensor(self._latency_buffer.step(actions), dtype=actions.dtype, device=actions.device)

    def substep_ctrl(self, ctrl: np.ndarray, action_to_ctrl: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
        """The controls of this control step's physics steps: ``ctrl`` ``(N, nu)`` (from
        :meth:`delay_actions`' action) unchanged without a latency in physics steps; else
        ``(N, decimation, nu)``, where env ``i``'s first ``latency[i] % decimation`` physics steps
        still get the control of the action from one control step earlier (``action_to_ctrl``
        maps it to controls)."""
        if not self.substep_latency or self._held is None:
            return ctrl
        held = action_to_ctrl(self._held)
        rest = (self.latency % self.decimation).cpu().numpy()
        late = np.arange(self.decimation)[None, :] < rest[:, None]            # (N, decimation)
        return np.where(late[:, :, None], np.asarray(held)[:, None, :], np.asarray(ctrl)[:, None, :])

    def observation_noise(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """Additive observation noise for this step, or ``None`` when disabled."""
        t = self.terms.get("obs_noise")
        if t is None:
            return None
        if self._obs_noise_fn is not None and t.distribution == "gaussian":
            s = self._schedule(t)
            zeros = torch.zeros(shape, dtype=torch.float32, device=self.device)
            noise = torch.as_tensor(self._obs_noise_fn(zeros, s * t.range[0], s * t.range[1], self.generator))
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"the observation-noise function returned shape {tuple(noise.shape)} for {tuple(shape)}")
            return noise.to(self.device, torch.float32)
        return torch.from_numpy(self.sample(t, shape)).to(self.device, torch.float32)
