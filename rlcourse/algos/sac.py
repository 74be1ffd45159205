"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv:1801.01290 and arXiv:1812.05905).

Reads top to bottom:
  1. the formulas lab 5 replaces: the soft Bellman target, the log-probability of
     a tanh-squashed Gaussian, and the temperature loss (and ``polyak_update`` from
     :mod:`rlcourse.algos.common`);
  2. the hyperparameters (every field has a one-line description);
  3. the algorithm: ``act -> process_env_step -> update`` on a replay buffer.

SAC maximizes return *plus* policy entropy, ``sum_t r_t + alpha * H(pi(.|s_t))``.
The temperature ``alpha`` is learned so that the policy's entropy stays near a
target (``-|A|``): exploration is automatic and no noise scale needs tuning.

Actions: the policy samples ``u ~ N(mu(s), sigma(s))`` and outputs ``a = tanh(u)``
in ``[-1, 1]``; the env receives ``a`` mapped linearly onto its box. The replay
buffer, the critics and the entropy all live in the ``[-1, 1]`` space.

Where well-known implementations disagree, the choice made here is stated in a
``CHOICE:`` comment at the place it is made.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from rlcourse import distributed
from rlcourse.algos.base import Algorithm
from rlcourse.algos.common import QCritics, action_bounds, polyak_update, scale_actions
from rlcourse.models.mlp import ACTIVATIONS, mlp
from rlcourse.models.normalizer import EmpiricalNormalization
from rlcourse.models.policy import InferencePolicy
from rlcourse.storage.replay import ReplayBuffer

LOG_2 = math.log(2.0)


# --------------------------------------------------------------------------- the maths
def sac_critic_target(
    rewards: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_log_prob: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """Soft Bellman target ``y = r + gamma * (1 - done) * (min(Q1', Q2')(s', a') - alpha * log pi(a'|s'))``.

    Args:
        rewards, dones: ``(B,)``; ``done`` is 1 only for terminal states (not time-outs).
        next_q1, next_q2: ``(B,)`` target critics at ``(s', a')`` with ``a' ~ pi(.|s')``.
        next_log_prob: ``(B,)`` ``log pi(a'|s')``.
        gamma: discount factor.
        alpha: entropy temperature.

    The minimum of two critics counters the overestimation that maximizing a learned
    Q-function causes (clipped double-Q, Fujimoto et al. 2018); ``-alpha * log pi``
    is the entropy bonus of the next state's action.
    """
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return rewards + gamma * (1.0 - dones) * soft_value


def squashed_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log pi(a|s)`` of ``a = tanh(u)``, ``u ~ N(mean, exp(log_std))``, summed over action dimensions.

    Change of variables: ``log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2)``. Written
    naively, ``1 - tanh(u)^2`` rounds to 0 for ``|u|`` above ~9 and the log is ``-inf``;
    the identity ``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))`` is exact and
    finite for every ``u``.

    Args:
        pre_tanh: ``(B, A)`` the Gaussian sample ``u`` (before tanh).
        mean, log_std: ``(B, A)`` parameters of the Gaussian.

    Returns:
        ``(B,)`` log-probabilities of ``tanh(u)``.
    """
    var = torch.exp(2.0 * log_std)
    gaussian = -((pre_tanh - mean) ** 2) / (2.0 * var) - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det_jacobian = 2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_det_jacobian).sum(dim=-1)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``-mean(log_alpha * (log pi(a|s) + H_target))``, with ``log pi`` treated as a constant.

    When the entropy ``-log pi`` is below the target, ``log pi + H_target > 0`` and
    descending this loss *raises* ``alpha`` (more weight on entropy); above the target
    it lowers ``alpha``.

    CHOICE: the loss multiplies ``log_alpha`` (SB3, the authors' code) rather than
    ``alpha`` (CleanRL); both have the same fixed point, this one takes steps of the
    same size whatever the scale of alpha.
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


# --------------------------------------------------------------------------- networks
class SquashedGaussianActor(nn.Module):
    """``s -> (mean, log_std)`` of the pre-tanh Gaussian, with a shared hidden trunk.

    ``trunk`` followed by ``mean`` is the deterministic policy that is exported.
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, num_obs: int, num_actions: int, hidden: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.trunk = nn.Sequential(mlp(num_obs, hidden[:-1], hidden[-1], activation), ACTIVATIONS[activation]())
        self.mean = nn.Linear(hidden[-1], num_actions)
        self.log_std = nn.Linear(hidden[-1], num_actions)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        # CHOICE: a hard clamp of log_std to [-20, 2] (SB3, the authors' code); CleanRL
        # rescales a tanh into [-5, 2] instead.
        return self.mean(h), self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)

    def sample(
        self,
        obs: torch.Tensor,
        generator: torch.Generator | None = None,
        log_prob_fn: Callable[..., torch.Tensor] = squashed_gaussian_log_prob,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized sample ``a = tanh(mean + std * eps)`` in ``[-1, 1]`` and its ``log pi(a|s)``.

        ``log_prob_fn`` computes the log-probability (default :func:`squashed_gaussian_log_prob`).
        """
        mean, log_std = self(obs)
        # Reparameterization trick: the randomness eps is an input, so gradients flow
        # through mean and std into the actor (the policy loss differentiates through a).
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device).to(mean.device)
        pre_tanh = mean + log_std.exp() * eps
        return torch.tanh(pre_tanh), log_prob_fn(pre_tanh, mean, log_std)


# --------------------------------------------------------------------------- hyperparameters
def _h(default: Any, text: str) -> Any:
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=tuple(default): d, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass
class SACConfig:
    num_steps_per_env: int = _h(1, "environment steps per env between two updates")
    gradient_steps: int = _h(1, "gradient steps per update (update-to-data ratio = gradient_steps / (num_envs * num_steps_per_env))")
    buffer_size: int = _h(1_000_000, "replay buffer capacity (transitions)")
    batch_size: int = _h(256, "transitions per gradient step")
    learning_starts: int = _h(5_000, "env steps of uniformly random actions before learning starts")
    gamma: float = _h(0.99, "discount factor")
    tau: float = _h(0.005, "Polyak rate of the target critics (theta' <- (1 - tau) theta' + tau theta)")
    actor_learning_rate: float = _h(3e-4, "Adam step size of the actor")
    critic_learning_rate: float = _h(3e-4, "Adam step size of the two critics")
    alpha_learning_rate: float = _h(3e-4, "Adam step size of log(alpha)")
    autotune_alpha: bool = _h(True, "learn the temperature alpha towards target_entropy (else keep init_alpha)")
    init_alpha: float = _h(1.0, "initial (or fixed) entropy temperature alpha")
    target_entropy: Any = _h(None, "entropy target for the autotuned alpha; null means -num_actions")
    normalize_observations: bool = _h(False, "running mean/std observation normalizer (saved with the policy)")
    actor_hidden: tuple = _h((256, 256), "hidden layer sizes of the actor MLP")
    critic_hidden: tuple = _h((256, 256), "hidden layer sizes of each critic MLP")
    activation: str = _h("relu", "hidden activation: elu, tanh, relu or selu")
    checkpoint_replay_buffer: bool = _h(True, "save the replay buffer in checkpoints (exact resume; large for big buffers)")

    def validate(self) -> None:
        for name in ("num_steps_per_env", "gradient_steps", "buffer_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0:
            raise ValueError(f"SACConfig.learning_starts must be >= 0, got {self.learning_starts}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("SACConfig.gamma must lie in [0, 1] and SACConfig.tau in (0, 1]")
        if min(self.actor_learning_rate, self.critic_learning_rate, self.alpha_learning_rate, self.init_alpha) <= 0:
            raise ValueError("SACConfig learning rates and init_alpha must be > 0")
        if self.target_entropy is not None and not isinstance(self.target_entropy, (int, float)):
            raise ValueError(f"SACConfig.target_entropy must be a number or null, got {self.target_entropy!r}")
        if not self.actor_hidden:
            raise ValueError("SACConfig.actor_hidden needs at least one hidden layer")


# --------------------------------------------------------------------------- the algorithm
class SAC(Algorithm):
    """SAC for continuous, bounded actions on a batched :class:`~rlcourse.envs.VecEnv`.

    Example::

        env = rlcourse.envs.make("Pendulum-v1", num_envs=1, seed=0)
        agent = SAC(env, seed=0)          # starts from presets/sac.yaml for Pendulum-v1
        agent.learn(20_000)

    Lab hooks (lab 5), each a student's function with the signature of the one it replaces:
    ``target_fn`` replaces :func:`sac_critic_target`, ``log_prob_fn``
    :func:`squashed_gaussian_log_prob`, ``temperature_loss_fn`` :func:`temperature_loss`
    and ``polyak_fn`` :func:`~rlcourse.algos.common.polyak_update`.
    """

    name = "sac"
    Config = SACConfig

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        device: str | torch.device | None = None,
        preset: str | None = "auto",
        target_fn: Callable[..., torch.Tensor] = sac_critic_target,
        log_prob_fn: Callable[..., torch.Tensor] = squashed_gaussian_log_prob,
        temperature_loss_fn: Callable[..., torch.Tensor] = temperature_loss,
        polyak_fn: Callable[..., None] = polyak_update,
        **hyperparameters: Any,
    ) -> None:
        self.target_fn = target_fn
        self.log_prob_fn = log_prob_fn
        self.temperature_loss_fn = temperature_loss_fn
        self.polyak_fn = polyak_fn
        super().__init__(env, seed=seed, device=device, preset=preset, **hyperparameters)

    def _build(self) -> None:
        cfg, spec = self.cfg, self.spec
        if spec.is_discrete:
            raise ValueError(f"SAC here needs a continuous action space; {spec.env_id!r} is discrete (use DQN)")
        self.action_low, self.action_high = action_bounds(spec, self.device)
        n_obs, n_act = spec.num_obs, spec.num_actions
        self.actor = SquashedGaussianActor(n_obs, n_act, cfg.actor_hidden, cfg.activation).to(self.device)
        # Twin critics and their slowly moving targets (clipped double-Q); both critics
        # are evaluated in one batched pass and return (2, B).
        self.critics = QCritics(n_obs, n_act, cfg.critic_hidden, cfg.activation, num_critics=2).to(self.device)
        self.critic_targets = QCritics(n_obs, n_act, cfg.critic_hidden, cfg.activation, num_critics=2).to(self.device)
        self.critic_targets.load_state_dict(self.critics.state_dict())
        self.critic_targets.requires_grad_(False)
        self.obs_normalizer: nn.Module = (
            EmpiricalNormalization(n_obs).to(self.device) if cfg.normalize_observations else nn.Identity()
        )
        # Learn log(alpha), not alpha: it stays positive without a constraint.
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(n_act) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.critic_optimizer = torch.optim.Adam(self.critics.parameters(), lr=cfg.critic_learning_rate, fused=True)
        # The actor and log(alpha) share one Adam with a parameter group each (own step sizes):
        # their losses touch disjoint parameters, so one backward of their sum and one step
        # equal two separate updates, at half the per-call cost.
        self.actor_optimizer = torch.optim.Adam(
            [{"params": list(self.actor.parameters()), "lr": cfg.actor_learning_rate},
             {"params": [self.log_alpha], "lr": cfg.alpha_learning_rate}],
            fused=True,
        )
        self.buffer = ReplayBuffer(cfg.buffer_size, (n_obs,), (n_act,), False, self.device)
        self.num_updates = 0

    @property
    def num_steps_per_env(self) -> int:
        return self.cfg.num_steps_per_env

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # -- acting ----------------------------------------------------------------------
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        obs = obs.to(self.device, torch.float32)
        if isinstance(self.obs_normalizer, EmpiricalNormalization):
            # Every process's observations: the normalizer stays the same on all of them.
            self.obs_normalizer.update(distributed.all_gather_cat(obs))
        if self.global_step < cfg.learning_starts:
            # Uniformly random actions in [-1, 1] until the buffer holds enough data.
            shape = (obs.shape[0], self.spec.num_actions)
            actions = torch.rand(shape, generator=self.generator).to(self.device) * 2.0 - 1.0
        else:
            # Exploration is the policy's own noise: sample, no extra action noise.
            mean, log_std = self.actor(self.obs_normalizer(obs))
            eps = torch.randn(mean.shape, generator=self.generator).to(self.device)
            actions = torch.tanh(mean + log_std.exp() * eps)
        self._obs, self._actions = obs, actions
        return scale_actions(actions, self.action_low, self.action_high)

    def process_env_step(
        self,
        obs: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        extras: dict[str, Any],
    ) -> None:
        # Stores s, a in [-1, 1], r, s' (final_obs for finished episodes), done = terminated.
        self.buffer.add(
            self._obs, self._actions, rewards.to(self.device), obs.to(self.device, torch.float32),
            terminated.to(self.device), extras.get("time_outs", truncated).to(self.device),
            extras.get("final_obs"),
        )
        self.global_step += self.spec.num_envs * self.world_size   # all processes' envs

    def compute_returns(self, last_obs: torch.Tensor) -> None:
        """Nothing to do: targets are computed per sampled minibatch in :meth:`update`."""

    # -- learning --------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        cfg = self.cfg
        self.iteration += 1
        if self.global_step < cfg.learning_starts or len(self.buffer) < cfg.batch_size:
            return {}
        stats = []   # per gradient step: critic loss, actor loss, alpha loss, entropy, mean Q (one tensor)
        for _ in range(cfg.gradient_steps):
            batch = self.buffer.sample(cfg.batch_size, self.generator)
            obs, next_obs = self.obs_normalizer(batch.obs), self.obs_normalizer(batch.next_obs)
            alpha = self.log_alpha.detach().exp()

            # One pass of the actor samples a' ~ pi(.|s') for the critics' target and a ~ pi(.|s)
            # for the actor's loss: the actor changes only after the critics, so both samples
            # come from the same policy either way, and on a CPU one pass on 2B rows costs about
            # half of two passes on B rows (small networks are per-operation overhead).
            b = obs.shape[0]
            both_actions, both_log_prob = self.actor.sample(torch.cat([next_obs, obs]), self.generator, self.log_prob_fn)

            # Critics: regress both Q(s, a) on the soft Bellman target.
            with torch.no_grad():
                next_q = self.critic_targets(next_obs, both_actions[:b])
                target = self.target_fn(
                    batch.rewards, next_q[0], next_q[1], both_log_prob[:b], batch.dones, cfg.gamma, alpha
                )
            q = self.critics(obs, batch.actions)
            critic_loss = F.mse_loss(q[0], target) + F.mse_loss(q[1], target)
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            distributed.all_reduce_grads(self.critic_optimizer)   # mean over processes (no-op in one)
            self.critic_optimizer.step()

            # Actor: maximize min-Q (of the critics just updated) of the reparameterized action
            # plus its entropy.
            actions, log_prob = both_actions[b:], both_log_prob[b:]
            # The critics only pass the gradient on to the actions here: freezing their
            # parameters skips computing gradients that would be thrown away.
            self.critics.requires_grad_(False)
            q_pi = self.critics(obs, actions).min(dim=0).values
            self.critics.requires_grad_(True)
            actor_loss = (alpha * log_prob - q_pi).mean()
            loss = actor_loss

            # Temperature: move the policy's entropy towards the target. Its loss sees log pi as
            # a constant and the actor's loss sees alpha as one, so one backward of the sum gives
            # each parameter exactly its own loss's gradient.
            if cfg.autotune_alpha:
                alpha_loss = self.temperature_loss_fn(self.log_alpha, log_prob, self.target_entropy)
                loss = loss + alpha_loss
            else:
                alpha_loss = torch.zeros((), device=self.device)
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(self.actor_optimizer)
            self.actor_optimizer.step()

            # CHOICE: target critics follow every gradient step (SB3, CleanRL's default).
            self.polyak_fn(self.critic_targets, self.critics, cfg.tau)
            self.num_updates += 1
            # Stacked into one tensor and read once at the end: every torch call costs time here.
            stats.append(torch.stack([critic_loss, actor_loss, alpha_loss, -log_prob.mean(), q.mean()]).detach())
        critic_loss_mean, actor_loss_mean, alpha_loss_mean, entropy, q_mean = torch.stack(stats).mean(0).tolist()
        out = {
            "losses/critic_loss": critic_loss_mean,
            "losses/actor_loss": actor_loss_mean,
            "losses/q_values": q_mean,
            "charts/entropy": entropy,
            "charts/alpha": self.alpha,
        }
        if cfg.autotune_alpha:
            out["losses/alpha_loss"] = alpha_loss_mean
        return out

    # -- export / checkpoint ---------------------------------------------------------
    def inference_policy(self) -> InferencePolicy:
        # The deterministic policy is tanh(mean): squash=True applies the tanh and the box mapping.
        spec = self.spec
        return InferencePolicy(
            nn.Sequential(self.actor.trunk, self.actor.mean), self.obs_normalizer, low=spec.action_low, high=spec.action_high, squash=True
        ).eval()

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor, "critics": self.critics, "critic_targets": self.critic_targets,
            "obs_normalizer": self.obs_normalizer,
        }

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_and_alpha": self.actor_optimizer, "critic": self.critic_optimizer}

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"num_updates": self.num_updates, "log_alpha": self.log_alpha.detach().cpu().clone()}
        if self.cfg.checkpoint_replay_buffer:
            state["replay_buffer"] = self.buffer.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state.get("num_updates", 0))
        if "log_alpha" in state:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"].to(self.device))
        if "replay_buffer" in state:
            self.buffer.load_state_dict(state["replay_buffer"])
