"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv:1801.01290 and arXiv:1812.05905).

Reads top to bottom:
  1. what lab 5 replaces: the critics' loss of a minibatch (built on the soft Bellman
     target), the log-probability of a tanh-squashed Gaussian, the actor's and the
     temperature's losses (and ``polyak_update`` from :mod:`rlcourse.algos.common`);
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
from rlcourse.storage.replay import ReplayBatch, ReplayBuffer

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


def sac_critic_loss(
    batch: ReplayBatch,
    next_actions: torch.Tensor,
    next_log_prob: torch.Tensor,
    critics: nn.Module,
    critic_targets: nn.Module,
    gamma: float,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """The twin critics' loss of one minibatch: both ``Q_e(s, a)`` regressed on one soft Bellman target.

    * The target :func:`sac_critic_target` is computed without gradient from the *target*
      critics at ``(s', a')``, ``a' ~ pi(.|s')`` sampled by the current policy: it is a
      regression label (a gradient into it would chase the label, and train the target critics).
    * Only ``batch.dones`` (the episode *terminated*) stops the bootstrap; ``batch.time_outs``
      rows were cut by the time limit and bootstrap from ``next_obs`` like any other row.
    * Both critics regress on the same target: the loss is the *sum* of their mean squared
      errors, so each critic gets the gradient of its own error.

    Args:
        batch: ``(B,)`` transitions (:class:`~rlcourse.storage.replay.ReplayBatch`), observations
            already normalized.
        next_actions: ``(B, A)`` actions ``a' ~ pi(.|s')`` in ``[-1, 1]``.
        next_log_prob: ``(B,)`` their ``log pi(a'|s')``.
        critics, critic_targets: :class:`~rlcourse.algos.common.QCritics`, ``(s, a) -> (2, B)``.
        gamma: discount factor.
        alpha: entropy temperature (a float or a 0-dim tensor).

    Returns:
        A 0-dim tensor, differentiable with respect to ``critics`` only.
    """
    return _critic_loss_and_q(batch, next_actions, next_log_prob, critics, critic_targets, gamma, alpha)[0]


def _critic_loss_and_q(
    batch: ReplayBatch, next_actions: torch.Tensor, next_log_prob: torch.Tensor, critics: nn.Module,
    critic_targets: nn.Module, gamma: float, alpha: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sac_critic_loss` and the ``(2, B)`` ``Q_e(s, a)`` it regressed (SAC logs their mean)."""
    with torch.no_grad():
        next_q = critic_targets(batch.next_obs, next_actions)
        target = sac_critic_target(batch.rewards, next_q[0], next_q[1], next_log_prob, batch.dones, gamma, alpha)
    q = critics(batch.obs, batch.actions)
    return F.mse_loss(q[0], target) + F.mse_loss(q[1], target), q


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


def sac_actor_and_temperature_loss(
    obs: torch.Tensor,
    actions: torch.Tensor,
    log_prob: torch.Tensor,
    critics: nn.Module,
    log_alpha: torch.Tensor,
    target_entropy: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor's loss ``mean(alpha * log pi(a|s) - min(Q1, Q2)(s, a))`` and :func:`temperature_loss`.

    ``actions`` are reparameterized samples ``a ~ pi(.|s)`` with their ``log_prob``, both still
    attached to the actor's graph: the actor's gradient flows through ``log pi`` (the entropy)
    and through ``a`` into the critics (the value). SAC adds the two losses and takes one
    backward pass, so each must leave the other's parameter alone: the actor's loss treats
    ``alpha`` as a constant (``log_alpha`` detached), the temperature's loss treats ``log pi``
    as one.

    Args:
        obs: ``(B, num_obs)`` observations (normalized).
        actions: ``(B, A)`` fresh actions in ``[-1, 1]``; ``log_prob``: ``(B,)``.
        critics: :class:`~rlcourse.algos.common.QCritics`, ``(s, a) -> (2, B)``.
        log_alpha: 0-dim ``log(alpha)`` (requires grad).
        target_entropy: the entropy target.

    Returns:
        ``(actor_loss, temperature_loss)``, two 0-dim tensors.
    """
    alpha = log_alpha.detach().exp()
    q_pi = critics(obs, actions).min(dim=0).values
    actor_loss = (alpha * log_prob - q_pi).mean()
    return actor_loss, temperature_loss(log_alpha, log_prob, target_entropy)


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
    ``critic_loss_fn`` replaces :func:`sac_critic_loss`, ``log_prob_fn``
    :func:`squashed_gaussian_log_prob`, ``actor_loss_fn`` :func:`sac_actor_and_temperature_loss`
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
        critic_loss_fn: Callable[..., torch.Tensor] = sac_critic_loss,
        log_prob_fn: Callable[..., torch.Tensor] = squashed_gaussian_log_prob,
        actor_loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = sac_actor_and_temperature_loss,
        polyak_fn: Callable[..., None] = polyak_update,
        **hyperparameters: Any,
    ) -> None:
        self.critic_loss_fn = critic_loss_fn
        self.log_prob_fn = log_prob_fn
        self.actor_loss_fn = actor_loss_fn
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
            batch = dataclasses.replace(batch, obs=obs, next_obs=next_obs)
            alpha = self.log_alpha.detach().exp()

            # One pass of the actor samples a' ~ pi(.|s') for the critics' target and a ~ pi(.|s)
            # for the actor's loss: the actor changes only after the critics, so both samples
            # come from the same policy either way, and on a CPU one pass on 2B rows costs about
            # half of two passes on B rows (small networks are per-operation overhead).
            b = obs.shape[0]
            both_actions, both_log_prob = self.actor.sample(torch.cat([next_obs, obs]), self.generator, self.log_prob_fn)

            # Critics: regress both Q(s, a) on the soft Bellman target. The next actions are a
            # label's input: detached, so nothing the critics' loss does can reach the actor.
            args = (batch, both_actions[:b].detach(), both_log_prob[:b].detach(), self.critics,
                    self.critic_targets, cfg.gamma, alpha)
            if self.critic_loss_fn is sac_critic_loss:
                critic_loss, q = _critic_loss_and_q(*args)   # the reference also hands back Q(s, a) for the log
            else:
                critic_loss = self.critic_loss_fn(*args)
                if not (isinstance(critic_loss, torch.Tensor) and critic_loss.dim() == 0
                        and critic_loss.grad_fn is not None):   # computed from the critics, not a fresh leaf
                    raise ValueError("critic_loss_fn must return a 0-dim tensor that is differentiable with respect "
                                     "to the critics' parameters")
                with torch.no_grad():  # Q(s, a) for the log: one more forward pass
                    q = self.critics(obs, batch.actions)
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            distributed.all_reduce_grads(self.critic_optimizer)   # mean over processes (no-op in one)
            self.critic_optimizer.step()

            # Actor: maximize min-Q (of the critics just updated) of the reparameterized action
            # plus its entropy. Temperature: move the policy's entropy towards the target.
            actions, log_prob = both_actions[b:], both_log_prob[b:]
            # The critics only pass the gradient on to the actions here: freezing their
            # parameters skips computing gradients that would be thrown away.
            self.critics.requires_grad_(False)
            try:
                losses = self.actor_loss_fn(obs, actions, log_prob, self.critics, self.log_alpha, self.target_entropy)
            finally:
                self.critics.requires_grad_(True)
            if not (isinstance(losses, (tuple, list)) and len(losses) == 2
                    and all(isinstance(x, torch.Tensor) and x.dim() == 0 for x in losses)):
                raise ValueError("actor_loss_fn must return (actor_loss, temperature_loss), two 0-dim tensors")
            actor_loss, alpha_loss = losses
            # The temperature's loss sees log pi as a constant and the actor's loss sees alpha as
            # one, so one backward of the sum gives each parameter exactly its own loss's gradient.
            if cfg.autotune_alpha:
                loss = actor_loss + alpha_loss
            else:
                loss = actor_loss
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
