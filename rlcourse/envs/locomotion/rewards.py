"""Reward terms as data, the legged_gym / Isaac Lab ``RewardTermCfg(func, weight, params)`` pattern.

A task's reward is a weighted sum of named terms::

    reward = sum_i weight_i * func_i(env, **params_i)

Each ``func`` is a vectorized torch function of the batched env state that returns a
``(num_envs,)`` tensor. Keeping terms as data (instead of one long ``compute_reward``)
lets students switch a term off (weight 0 drops it, as in Isaac Lab's
``RewardManager``), re-weight it, swap its function or add their own, without
touching the environment code::

    from rlcourse.envs.locomotion import RewardTerm
    def lateral_drift(env):                       # penalize sideways speed
        return env.root_lin_vel_w[:, 1].abs()
    env = rlcourse.envs.make("Ant", num_envs=64, rewards={
        "energy": 0.0,                            # drop a default term
        "heading": 1.0,                           # new weight, same function
        "drift": RewardTerm(lateral_drift, weight=-0.5),   # add a term
    })

Per-term episode sums (of the *weighted* values, so they add up to the episode
return) are reported in ``extras["episode"]["rew_<term>"]``.

CHOICE: unlike Isaac Lab's manager we do not multiply the terms by the step ``dt``:
the IsaacGymEnvs Ant/Humanoid rewards we reproduce do not either, and it keeps the
weights equal to the published ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import torch


@dataclasses.dataclass
class RewardTerm:
    """One reward term: ``weight * func(env, **params)``.

    Args:
        func: ``func(env, **params) -> Tensor (num_envs,)``, vectorized over envs.
        weight: multiplier; ``0`` removes the term (it is not even computed).
        params: extra keyword arguments for ``func``.
    """

    func: Callable[..., torch.Tensor]
    weight: float = 1.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


RewardSpec = Mapping[str, "RewardTerm | float | int | None"]


def merge_reward_terms(defaults: Mapping[str, RewardTerm], overrides: RewardSpec | None) -> dict[str, RewardTerm]:
    """Apply user overrides to a task's default terms.

    ``overrides[name]`` may be a :class:`RewardTerm` (add it, or replace the default of
    that name), a number (new weight for a default term) or ``None`` (remove it). Terms
    whose final weight is 0 are dropped.

    Raises:
        ValueError: a number for a term the task does not define, a non-finite weight,
            a ``func`` that is not callable, or ``params`` that is not a dict.
    """
    terms = {name: dataclasses.replace(t, params=dict(t.params)) for name, t in defaults.items()}
    for name, value in (overrides or {}).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"rewards: term names must be identifiers, got {name!r}")
        if value is None:
            terms.pop(name, None)
            continue
        if isinstance(value, RewardTerm):
            terms[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if name not in terms:
                raise ValueError(
                    f"rewards[{name!r}]: no default term of that name to re-weight "
                    f"(defaults: {sorted(defaults)}); pass a RewardTerm(func, weight) to add one"
                )
            terms[name] = dataclasses.replace(terms[name], weight=float(value))
        else:
            raise ValueError(
                f"rewards[{name!r}] must be a RewardTerm, a weight or None, got {type(value).__name__}"
            )
    for name, term in terms.items():
        if not callable(term.func):
            raise ValueError(f"rewards[{name!r}].func must be callable, got {term.func!r}")
        if not isinstance(term.weight, (int, float)) or isinstance(term.weight, bool) or not math.isfinite(term.weight):
            raise ValueError(f"rewards[{name!r}].weight must be a finite number, got {term.weight!r}")
        if not isinstance(term.params, dict):
            raise ValueError(f"rewards[{name!r}].params must be a dict, got {type(term.params).__name__}")
    return {name: t for name, t in terms.items() if t.weight != 0.0}


class RewardManager:
    """Computes the weighted sum of the active terms and keeps per-term episode sums."""

    def __init__(self, terms: Mapping[str, RewardTerm], num_envs: int, device: torch.device) -> None:
        self.terms = dict(terms)
        self.names = list(self.terms)
        self.num_envs = num_envs
        self.device = device
        self.weights = torch.tensor([t.weight for t in self.terms.values()], dtype=torch.float32, device=device)
        self.episode_sums = torch.zeros(num_envs, len(self.terms), device=device)
        """``(num_envs, num_terms)`` running sums of the weighted terms in the current episodes."""
        self.last_weighted = torch.zeros(num_envs, len(self.terms), device=device)
        """``(num_envs, num_terms)`` weighted term values of the last step; rows sum to the reward."""

    def compute(self, env: Any, invalid: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_i weight_i * func_i(env, **params_i)``, shape ``(num_envs,)``.

        ``invalid`` (bool, ``(num_envs,)``) marks envs whose simulation diverged: their
        terms are set to 0 instead of NaN.
        """
        if not self.terms:
            return torch.zeros(self.num_envs, device=self.device)
        values = []
        for name, term in self.terms.items():
            value = term.func(env, **term.params)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (self.num_envs,):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"reward term {name!r} must return a tensor of shape ({self.num_envs},), got {shape}")
            values.append(value)
        # One (num_envs, num_terms) matrix: a handful of torch calls instead of three per term.
        stacked = torch.stack(values, dim=1)
        if stacked.dtype != torch.float32 or stacked.device != self.device:   # a call fewer in the usual case
            stacked = stacked.to(self.device, torch.float32)
        self.last_weighted = stacked * self.weights
        if invalid is not None:
            self.last_weighted[invalid] = 0.0
        self.episode_sums += self.last_weighted
        return self.last_weighted.sum(dim=1)

    def last_values(self) -> dict[str, torch.Tensor]:
        """``{term: weighted value in the last step}``; they add up to the last reward."""
        return {name: self.last_weighted[:, i] for i, name in enumerate(self.names)}

    def pop_episode_sums(self, env_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"rew_<term>": sums}`` for the finished envs, which are then zeroed."""
        sums = self.episode_sums[env_ids]
        self.episode_sums[env_ids] = 0.0
        return {f"rew_{name}": sums[:, i] for i, name in enumerate(self.names)}

    def describe(self) -> str:
        """One line per active term: name, weight, function (for printing in notebooks)."""
        rows = [f"{name:<16} {t.weight:+.4g}  {getattr(t.func, '__name__', repr(t.func))}"
                + (f" {t.params}" if t.params else "") for name, t in self.terms.items()]
        return "\n".join(rows)
