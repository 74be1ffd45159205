"""What every rlcourse algorithm shares: hyperparameter configs, the runner protocol,
save/load and prediction.

An algorithm implements the four calls the :class:`~rlcourse.runner.Runner` makes
each iteration (the rsl_rl protocol)::

    actions = algo.act(obs)                                    # num_steps_per_env times
    algo.process_env_step(obs, rewards, terminated, truncated, extras)
    algo.compute_returns(last_obs)                             # once per iteration
    losses = algo.update()                                     # -> {"losses/...": float}

and :meth:`inference_policy` for evaluation and export.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml

from rlcourse import distributed
from rlcourse.models.policy import InferencePolicy
from rlcourse.runner import Runner, atomic_save
from rlcourse.seeding import seed_everything

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


# --------------------------------------------------------------------------- configs
def config_help(cfg_cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, one-line description)`` for every hyperparameter of a config dataclass."""
    rows = []
    for f in dataclasses.fields(cfg_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, default, f.metadata.get("help", "")))
    return rows


def build_config(cfg_cls: type, values: dict[str, Any], source: str = "hyperparameters") -> Any:
    """Create ``cfg_cls(**values)``; an unknown or mistyped field raises a ``ValueError`` naming it."""
    names = {f.name: f for f in dataclasses.fields(cfg_cls)}
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {cfg_cls.__name__} field {key!r} in {source}{hint}")
    cfg = cfg_cls(**values)
    for name, f in names.items():
        value = getattr(cfg, name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(default, int) and not isinstance(value, int):
                ok = float(value).is_integer()
                if ok:
                    setattr(cfg, name, int(value))
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (tuple, list))
            if ok:
                setattr(cfg, name, tuple(value))
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"{cfg_cls.__name__}.{name} in {source} must be {type(default).__name__}, got {value!r}"
            )
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def load_preset(algo: str, env_id: str | None) -> dict[str, Any]:
    """The preset for ``algo`` on ``env_id`` from ``presets/<algo>.yaml``.

    Returns ``{"num_envs": ..., "total_steps": ..., "hyperparameters": {...}}``: the
    file's ``default`` entry updated by the env's entry (empty dicts if none).
    """
    path = PRESET_DIR / f"{algo}.yaml"
    if not path.exists():
        return {"hyperparameters": {}}
    data = yaml.safe_load(path.read_text()) or {}
    merged: dict[str, Any] = {"hyperparameters": {}}
    for key in ("default", env_id):
        entry = data.get(key) or {}
        for k, v in entry.items():
            if k == "hyperparameters":
                merged["hyperparameters"].update(v or {})
            else:
                merged[k] = v
    return merged


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML run config (same layout as a preset entry)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a YAML mapping")
    allowed = {"env", "num_envs", "total_steps", "seed", "eval_every", "eval_episodes", "hyperparameters"}
    for key in data:
        if key not in allowed:
            raise ValueError(f"{path}: unknown config key {key!r}; allowed: {sorted(allowed)}")
    return data


@dataclasses.dataclass
class EnvSpec:
    """The parts of an environment an algorithm needs to rebuild its networks (saved in checkpoints)."""

    env_id: str
    num_obs: int
    num_actions: int
    is_discrete: bool
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    num_envs: int = 1
    device: Any = "cpu"

    @classmethod
    def of(cls, env: Any) -> "EnvSpec":
        low = high = None
        if not env.is_discrete:
            low = np.asarray(env.single_action_space.low, dtype=np.float64).reshape(-1).tolist()
            high = np.asarray(env.single_action_space.high, dtype=np.float64).reshape(-1).tolist()
        return cls(env.env_id, int(env.num_obs), int(env.num_actions), bool(env.is_discrete), low, high,
                   int(env.num_envs), env.device)


# --------------------------------------------------------------------------- algorithm
class Algorithm:
    """Base class: seeding, config, save/load, predict, learn (via the shared runner)."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type]

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        device: str | torch.device | None = None,
        preset: str | None = "auto",
        **hyperparameters: Any,
    ) -> None:
        """
        Args:
            env: a :class:`~rlcourse.envs.VecEnv` (or an :class:`EnvSpec` to rebuild a saved agent).
            seed: seeds Python, NumPy, torch and the minibatch shuffling.
            device: where the networks live; defaults to ``env.device``.
            preset: ``"auto"`` starts from the YAML preset for ``env.env_id`` (if any),
                a preset name picks another entry, ``None`` uses the dataclass defaults.
            **hyperparameters: fields of ``Config`` overriding the preset.
        """
        self.spec = env if isinstance(env, EnvSpec) else EnvSpec.of(env)
        self.env = None if isinstance(env, EnvSpec) else env
        values: dict[str, Any] = {}
        if preset is not None:
            key = self.spec.env_id if preset == "auto" else preset
            values.update(load_preset(self.name, key)["hyperparameters"])
        values.update(hyperparameters)
        self.cfg = build_config(self.Config, values)
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else torch.device(self.spec.device)
        seed_everything(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.global_step = 0
        self.iteration = 0
        self.total_steps = 0
        self._build()

    # -- to implement ------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    @property
    def num_steps_per_env(self) -> int:
        """Environment steps per env collected in one runner iteration."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def process_env_step(
        self,
        obs: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        extras: dict[str, Any],
    ) -> None:
        raise NotImplementedError

    def compute_returns(self, last_obs: torch.Tensor) -> None:
        """On-policy methods compute advantages here; off-policy ones need nothing."""

    def update(self) -> dict[str, float]:
        raise NotImplementedError

    def inference_policy(self) -> InferencePolicy:
        """The deterministic policy (normalizer included) used for evaluation and export."""
        raise NotImplementedError

    def _modules(self) -> dict[str, torch.nn.Module]:
        """Networks saved in a checkpoint."""
        raise NotImplementedError

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- shared ------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        """Processes training this agent together (1 without ``torch.distributed``, see
        :mod:`rlcourse.distributed`): ``global_step`` counts the env steps of all of them."""
        return distributed.world_size()

    def set_env(self, env: Any) -> None:
        """Attach a (new) environment, e.g. after :meth:`load`. Its spaces must match."""
        spec = EnvSpec.of(env)
        if (spec.num_obs, spec.num_actions, spec.is_discrete) != (
            self.spec.num_obs, self.spec.num_actions, self.spec.is_discrete
        ):
            raise ValueError(
                f"env {spec.env_id!r} (obs {spec.num_obs}, actions {spec.num_actions}) does not match the agent's "
                f"{self.spec.env_id!r} (obs {self.spec.num_obs}, actions {self.spec.num_actions})"
            )
        if spec.num_envs != self.spec.num_envs:
            self.spec = spec
            self.env = env
            self._on_num_envs_changed()
        self.env = env
        self.spec = spec

    def _on_num_envs_changed(self) -> None:
        """Rebuild per-env buffers when the number of environments changes."""

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for a batch of observations (deterministic by default).

        ``deterministic=False`` gives the behaviour policy's actions, as in training (a sample,
        exploration noise or epsilon-greedy; uniform actions before ``learning_starts``). It
        draws random numbers like training does, but leaves the agent as it was: ``act`` also
        updates the observation normalizer and remembers the step for ``process_env_step``,
        and both are put back.
        """
        if deterministic:
            return self.inference_policy()(obs.to(self.device, torch.float32))
        normalizer = copy.deepcopy(self.obs_normalizer.state_dict())
        attributes = dict(vars(self))
        try:
            return self.act(obs)
        finally:
            self.obs_normalizer.load_state_dict(normalizer)
            for key in set(vars(self)) - set(attributes):
                delattr(self, key)
            vars(self).update(attributes)

    def learn(
        self,
        total_steps: int,
        run_dir: str | os.PathLike | None = None,
        **runner_kwargs: Any,
    ) -> "Algorithm":
        """Train until ``global_step >= total_steps`` (env steps summed over all envs).

        ``run_dir`` enables TensorBoard events, ``progress.csv``, checkpoints and export;
        see :class:`~rlcourse.runner.Runner` for the other keyword arguments.
        """
        if self.env is None:
            raise RuntimeError("this agent has no environment; call agent.set_env(env) before learn()")
        Runner(self, self.env, run_dir=run_dir, **runner_kwargs).learn(total_steps)
        return self

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume training exactly: networks, optimizers, counters, RNG."""
        return {
            "algo": self.name,
            "config": dataclasses.asdict(self.cfg),
            "seed": self.seed,
            "env_spec": dataclasses.asdict(dataclasses.replace(self.spec, device=str(self.spec.device))),
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "global_step": self.global_step,
            "iteration": self.iteration,
            "total_steps": self.total_steps,
            "torch_rng": torch.get_rng_state(),
            # On a GPU, sampling (PPO's dist.sample) draws from the CUDA generator.
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "generator": self.generator.get_state(),
            "extra": self._extra_state(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically (temporary file + rename)."""
        atomic_save(self.checkpoint(), path)

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        if state.get("algo") != self.name:
            raise ValueError(f"checkpoint is for {state.get('algo')!r}, not {self.name!r}")
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.global_step = int(state["global_step"])
        self.iteration = int(state["iteration"])
        self.total_steps = int(state.get("total_steps", 0))
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.generator.set_state(state["generator"])
        self._load_extra_state(state.get("extra", {}))

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str | torch.device | None = None) -> "Algorithm":
        """Rebuild a saved agent. Without ``env`` it can predict; pass one to keep training."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("algo") != cls.name:
            raise ValueError(f"{path} holds a {state.get('algo')!r} checkpoint, not {cls.name!r}")
        spec_dict = dict(state["env_spec"])
        target: Any = EnvSpec(**spec_dict) if env is None else env
        if env is not None:
            saved = EnvSpec(**spec_dict)
            got = EnvSpec.of(env)
            if (got.num_obs, got.num_actions, got.is_discrete) != (saved.num_obs, saved.num_actions, saved.is_discrete):
                raise ValueError(f"{path} was trained on {saved.env_id!r}; env {got.env_id!r} has other spaces")
        agent = cls(target, seed=state["seed"], device=device, preset=None, **state["config"])
        agent.load_checkpoint(state)
        return agent
