"""Multi-layer perceptrons and the actor-critic used by PPO."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Normal

ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU}


def mlp(
    in_dim: int,
    hidden: list[int] | tuple[int, ...],
    out_dim: int,
    activation: str = "elu",
    out_gain: float = 1.0,
) -> nn.Sequential:
    """An MLP with orthogonal initialization (hidden gain sqrt(2), biases 0).

    ``out_gain`` scales the last layer: 0.01 for a policy head so initial actions are
    near-uniform / near-zero, 1.0 for a value head (Andrychowicz et al. 2021, "What
    matters in on-policy RL", Sec. 3.2).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        linear = nn.Linear(a, b)
        nn.init.orthogonal_(linear.weight, math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATIONS[activation]()]
    head = nn.Linear(dims[-1], out_dim)
    nn.init.orthogonal_(head.weight, out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (no shared trunk: "37 PPO details", continuous item 4).

    Discrete actions use a categorical over logits. Continuous actions use a diagonal
    Gaussian whose log-std is a learned, *state-independent* parameter vector: the
    common choice for locomotion (rsl_rl, CleanRL), more stable than a state-dependent
    head when rewards are noisy.
    """

    def __init__(
        self,
        num_obs: int,
        num_actions: int,
        discrete: bool,
        actor_hidden: tuple[int, ...] = (64, 64),
        critic_hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = mlp(num_obs, actor_hidden, num_actions, activation, out_gain=0.01)
        self.critic = mlp(num_obs, critic_hidden, 1, activation, out_gain=1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((num_actions,), float(init_log_std)))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)

    def log_prob(self, dist: torch.distributions.Distribution, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability of a batch of actions; continuous dimensions are independent, so sum them."""
        lp = dist.log_prob(actions)
        return lp if self.discrete else lp.sum(-1)

    def entropy(self, dist: torch.distributions.Distribution) -> torch.Tensor:
        ent = dist.entropy()
        return ent if self.discrete else ent.sum(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)
