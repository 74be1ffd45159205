"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347).

Reads top to bottom:
  1. the three pieces students implement in lab 2: time-out bootstrapping, GAE and the
     clipped surrogate;
  2. the hyperparameters (every field has a one-line description);
  3. the algorithm: ``act -> process_env_step -> compute_returns -> update``.

Where well-known implementations disagree, the choice made here is stated in a
``CHOICE:`` comment at the place it is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from rlcourse import distributed
from rlcourse.algos.base import Algorithm
from rlcourse.models.mlp import ActorCritic
from rlcourse.models.normalizer import EmpiricalNormalization
from rlcourse.models.policy import InferencePolicy
from rlcourse.storage.rollout import RolloutStorage


# --------------------------------------------------------------------------- the maths
def bootstrap_time_outs(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    time_outs: torch.Tensor,
    next_obs: torch.Tensor,
    final_obs: torch.Tensor,
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One env step's rewards and episode ends as GAE needs them, with time-outs bootstrapped.

    The envs reset in the same step (:mod:`rlcourse.envs.base`): where an episode ended,
    ``next_obs`` is already the *next* episode's first observation and the observation the
    episode ended in is ``final_obs``. An episode cut by the time limit is not over for the
    task, so its return goes on past the cut: ``r_t + gamma * V(final_obs)``. A terminated
    episode has no future and keeps ``r_t``. Both kinds of ending are then done for GAE.

    Args:
        rewards: ``(N,)`` rewards of the step.
        terminated: ``(N,)`` bool, the episode reached a terminal state.
        time_outs: ``(N,)`` bool, the episode was cut by the time limit.
        next_obs: ``(N, num_obs)`` observations the step returned (after the same-step reset).
        final_obs: ``(N, num_obs)`` the observations the episodes ended in (rows of envs that go
            on equal ``next_obs``).
        value_fn: the critic, ``(M, num_obs)`` observations to ``(M,)`` values.
        gamma: discount factor.

    Returns:
        ``(rewards, dones)``: new ``(N,)`` tensors, ``dones`` 1.0 where an episode ended.
    """
    rewards = rewards.clone()
    if time_outs.any():
        # Only the cut envs: the critic is evaluated on their final observations alone.
        rewards[time_outs] += gamma * value_fn(final_obs[time_outs])
    dones = (terminated | time_outs).float()
    return rewards, dones


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

    Args:
        rewards: ``(T, N)`` rewards ``r_t`` (time-outs already bootstrapped, see PPO).
        values: ``(T, N)`` critic values ``V(s_t)``.
        dones: ``(T, N)`` 1 where the episode ended after step ``t`` (terminated or truncated).
        last_values: ``(N,)`` ``V(s_T)`` of the observation after the last step.
        gamma: discount factor.
        lam: GAE lambda (0: one-step TD error, 1: Monte-Carlo return minus baseline).

    Returns:
        ``(advantages, returns)``, both ``(T, N)``, with ``returns = advantages + values``
        (the critic's regression target, TD(lambda)).
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    gae = torch.zeros_like(last_values)
    not_done = 1.0 - dones.float()
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        # TD error; the next state's value counts only if the episode goes on.
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        # A_t = delta_t + gamma * lambda * A_{t+1}, cut at episode boundaries.
        gae = delta + gamma * lam * not_done[t] * gae
        advantages[t] = gae
    return advantages, advantages + values


def clipped_surrogate_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
) -> torch.Tensor:
    """PPO's clipped surrogate objective, negated so it can be minimized (eq. 7 of the paper).

    ``ratio = pi_new(a|s) / pi_old(a|s)``; the loss is
    ``-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))``. Taking the minimum makes
    it a pessimistic bound: the update gains nothing from pushing the ratio beyond the
    clip range in the direction the advantage favours.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.min(unclipped, clipped).mean()


# --------------------------------------------------------------------------- hyperparameters
def _h(default: Any, text: str) -> Any:
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=tuple(default): d, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass
class PPOConfig:
    num_steps_per_env: int = _h(24, "environment steps per env in one rollout (rollout length T)")
    num_learning_epochs: int = _h(5, "passes over each rollout in the update")
    num_mini_batches: int = _h(4, "minibatches the rollout is split into per epoch")
    gamma: float = _h(0.99, "discount factor")
    lam: float = _h(0.95, "GAE lambda: bias/variance trade-off of the advantage estimate")
    clip_param: float = _h(0.2, "clip range epsilon of the surrogate objective")
    value_loss_coef: float = _h(1.0, "weight of the value loss in the total loss")
    entropy_coef: float = _h(0.0, "weight of the entropy bonus (exploration)")
    learning_rate: float = _h(1e-3, "Adam step size (initial value for the schedules)")
    schedule: str = _h("adaptive", "learning-rate schedule: constant, linear (anneal to 0) or adaptive (KL-based)")
    desired_kl: float = _h(0.01, "target KL divergence per update for the adaptive schedule")
    max_grad_norm: float = _h(1.0, "global gradient-norm clip")
    normalize_advantage: bool = _h(True, "standardize advantages over the rollout before the update")
    clip_value_loss: bool = _h(False, "clip value updates to +-clip_param around the old values")
    normalize_observations: bool = _h(True, "running mean/std observation normalizer (saved with the policy)")
    reward_scale: float = _h(1.0, "multiply rewards by this before learning (keeps value targets O(1))")
    actor_hidden: tuple = _h((256, 128, 64), "hidden layer sizes of the actor MLP")
    critic_hidden: tuple = _h((256, 128, 64), "hidden layer sizes of the critic MLP")
    activation: str = _h("elu", "hidden activation: elu, tanh, relu or selu")
    init_log_std: float = _h(0.0, "initial log standard deviation of the Gaussian policy (continuous actions)")

    def validate(self) -> None:
        if self.schedule not in ("constant", "linear", "adaptive"):
            raise ValueError(f"PPOConfig.schedule must be constant, linear or adaptive, got {self.schedule!r}")
        for name in ("num_steps_per_env", "num_learning_epochs", "num_mini_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError("PPOConfig.gamma and PPOConfig.lam must lie in [0, 1]")
        if self.clip_param <= 0 or self.learning_rate <= 0:
            raise ValueError("PPOConfig.clip_param and PPOConfig.learning_rate must be > 0")


# --------------------------------------------------------------------------- the algorithm
class PPO(Algorithm):
    """PPO for discrete and continuous actions on a batched :class:`~rlcourse.envs.VecEnv`.

    Example::

        env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=0)
        agent = PPO(env, seed=0)          # starts from presets/ppo.yaml for CartPole-v1
        agent.learn(100_000)
        agent.save("ppo_cartpole.pt")

    Lab hooks: ``bootstrap_fn``, ``gae_fn`` and ``surrogate_fn`` replace
    :func:`bootstrap_time_outs`, :func:`compute_gae` and :func:`clipped_surrogate_loss`
    (same signatures), so a student's functions train the real agent.
    """

    name = "ppo"
    Config = PPOConfig

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        device: str | torch.device | None = None,
        preset: str | None = "auto",
        gae_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = compute_gae,
        surrogate_fn: Callable[..., torch.Tensor] = clipped_surrogate_loss,
        bootstrap_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = bootstrap_time_outs,
        **hyperparameters: Any,
    ) -> None:
        self.bootstrap_fn = bootstrap_fn
        self.gae_fn = gae_fn
        self.surrogate_fn = surrogate_fn
        super().__init__(env, seed=seed, device=device, preset=preset, **hyperparameters)

    def _build(self) -> None:
        cfg, spec = self.cfg, self.spec
        self.actor_critic = ActorCritic(
            spec.num_obs, spec.num_actions, spec.is_discrete,
            cfg.actor_hidden, cfg.critic_hidden, cfg.activation, cfg.init_log_std,
        ).to(self.device)
        self.obs_normalizer: nn.Module = (
            EmpiricalNormalization(spec.num_obs).to(self.device) if cfg.normalize_observations else nn.Identity()
        )
        # Adam eps 1e-5 instead of 1e-8 ("37 PPO details", item 3): steadier early updates.
        self._parameters = list(self.actor_critic.parameters())   # for the optimizer and gradient clipping
        self.optimizer = torch.optim.Adam(self._parameters, lr=cfg.learning_rate, eps=1e-5, fused=True)
        self.learning_rate = cfg.learning_rate
        self._make_storage()

    def _make_storage(self) -> None:
        action_shape = () if self.spec.is_discrete else (self.spec.num_actions,)
        self.storage = RolloutStorage(
            self.cfg.num_steps_per_env, self.spec.num_envs, (self.spec.num_obs,), action_shape,
            self.spec.is_discrete, self.device,
        )

    def _on_num_envs_changed(self) -> None:
        self._make_storage()

    @property
    def num_steps_per_env(self) -> int:
        return self.cfg.num_steps_per_env

    # -- rollout ---------------------------------------------------------------------
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        if isinstance(self.obs_normalizer, EmpiricalNormalization):
            # Every process's observations: the normalizer stays the same on all of them.
            self.obs_normalizer.update(distributed.all_gather_cat(obs))
        obs_n = self.obs_normalizer(obs)
        dist = self.actor_critic.distribution(obs_n)
        actions = dist.sample()
        # Remember what the update needs; the normalized obs is stored so the update
        # evaluates the policy on exactly the inputs that produced these actions.
        self._obs, self._obs_n = obs, obs_n
        self._actions = actions
        self._log_probs = self.actor_critic.log_prob(dist, actions)
        self._values = self.actor_critic.value(obs_n)
        # CHOICE: the *unclipped* Gaussian sample is stored and returned; the env clips it
        # to the action bounds. Log-probs stay those of the sampled action.
        return actions

    def process_env_step(
        self,
        obs: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        extras: dict[str, Any],
    ) -> None:
        rewards = rewards.to(self.device, torch.float32) * self.cfg.reward_scale
        time_outs = extras.get("time_outs", truncated).to(self.device)
        # CHOICE (truncation bootstrapping, bootstrap_fn): a time-out is not a terminal state,
        # so the return continues past it: r_t += gamma * V(s_T), with s_T the final
        # observation of the cut episode (extras["final_obs"]). GAE then treats the step as
        # done. Like SB3 and rsl_rl; CleanRL's PPO skips this. Without final_obs (Isaac Lab
        # envs) we fall back to rsl_rl's approximation V(s_t): the observation before the step.
        final_obs = extras.get("final_obs")
        final_obs = self._obs if final_obs is None else final_obs.to(self.device, torch.float32)
        rewards, dones = self.bootstrap_fn(
            rewards, terminated.to(self.device), time_outs, obs.to(self.device, torch.float32), final_obs,
            self.value, self.cfg.gamma,
        )
        if tuple(rewards.shape) != (self.spec.num_envs,) or tuple(dones.shape) != (self.spec.num_envs,):
            raise ValueError(
                f"bootstrap_fn must return (rewards, dones) of shape ({self.spec.num_envs},), "
                f"got {tuple(rewards.shape)} and {tuple(dones.shape)}"
            )
        dones = dones.float()
        self.storage.add(self._obs_n, self._actions, rewards, dones, self._values, self._log_probs)
        self.global_step += self.spec.num_envs * self.world_size   # all processes' envs

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic's values ``(M,)`` of raw observations ``(M, num_obs)``: normalized as in
        :meth:`act`, without updating the normalizer. The ``value_fn`` that ``bootstrap_fn`` gets."""
        return self.actor_critic.value(self.obs_normalizer(obs.to(self.device, torch.float32)))

    def compute_returns(self, last_obs: torch.Tensor) -> None:
        last_values = self.actor_critic.value(self.obs_normalizer(last_obs.to(self.device, torch.float32)))
        st = self.storage
        advantages, returns = self.gae_fn(st.rewards, st.values, st.dones, last_values, self.cfg.gamma, self.cfg.lam)
        if tuple(advantages.shape) != tuple(st.rewards.shape) or tuple(returns.shape) != tuple(st.rewards.shape):
            raise ValueError(
                f"gae_fn must return (advantages, returns) of shape {tuple(st.rewards.shape)}, "
                f"got {tuple(advantages.shape)} and {tuple(returns.shape)}"
            )
        st.returns.copy_(returns)
        # CHOICE: advantages are standardized once over the whole rollout (rsl_rl's
        # default), not per minibatch (CleanRL, SB3): with small minibatches the
        # per-minibatch statistics are noisy.
        # With several processes, the mean and std are those of all their rollouts together.
        if self.cfg.normalize_advantage:
            mean, std = distributed.mean_std(advantages)
            advantages = (advantages - mean) / (std + 1e-8)
        st.advantages.copy_(advantages)

    # -- update ----------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        cfg = self.cfg
        if cfg.schedule == "linear" and self.total_steps > 0:
            # CHOICE: the linear schedule anneals to 0 at total_steps (CleanRL); constant
            # is the SB3 default; adaptive follows rsl_rl / legged_gym.
            self.learning_rate = cfg.learning_rate * max(1.0 - self.global_step / self.total_steps, 0.0)
            self._set_lr(self.learning_rate)
        stats = []   # per minibatch: policy loss, value loss, entropy, approx KL, clip fraction (one tensor)
        for mb in self.storage.mini_batches(cfg.num_mini_batches, cfg.num_learning_epochs, self.generator):
            dist = self.actor_critic.distribution(mb.obs)
            log_probs = self.actor_critic.log_prob(dist, mb.actions)
            # Without an entropy bonus (entropy_coef 0) the entropy is only logged: computed
            # outside the graph, backward does not differentiate it just to multiply by 0.
            with torch.set_grad_enabled(cfg.entropy_coef != 0.0):
                entropy = self.actor_critic.entropy(dist).mean()
            values = self.actor_critic.value(mb.obs)

            with torch.no_grad():
                log_ratio = log_probs - mb.log_probs
                ratio = log_ratio.exp()
                # Low-variance KL(pi_old || pi_new) estimator k3 = (r - 1) - log r
                # (Schulman, "Approximating KL divergence", 2020).
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clip_fraction = ((ratio - 1.0).abs() > cfg.clip_param).float().mean()
            if cfg.schedule == "adaptive":
                # rsl_rl's rule: shrink the step when the policy moved too far, grow it when too little.
                # The KL of all processes' minibatches: every process takes the same step size.
                approx_kl = distributed.all_reduce_mean(approx_kl)
                if approx_kl > 2.0 * cfg.desired_kl:
                    self.learning_rate = max(1e-5, self.learning_rate / 1.5)
                elif 0.0 < approx_kl < 0.5 * cfg.desired_kl:
                    self.learning_rate = min(1e-2, self.learning_rate * 1.5)
                self._set_lr(self.learning_rate)

            policy_loss = self.surrogate_fn(log_probs, mb.log_probs, mb.advantages, cfg.clip_param)
            # CHOICE: no value clipping by default (SB3's default). Andrychowicz et al. 2021
            # found it does not help and can hurt; clip_value_loss=True gives the
            # CleanRL/rsl_rl variant.
            if cfg.clip_value_loss:
                v_clipped = mb.values + (values - mb.values).clamp(-cfg.clip_param, cfg.clip_param)
                value_loss = torch.max((values - mb.returns).pow(2), (v_clipped - mb.returns).pow(2)).mean()
            else:
                value_loss = (values - mb.returns).pow(2).mean()
            loss = policy_loss + cfg.value_loss_coef * value_loss
            if cfg.entropy_coef != 0.0:
                loss = loss - cfg.entropy_coef * entropy

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(self.optimizer)   # mean over processes (no-op in one)
            # Global gradient clipping ("37 PPO details", item 11).
            nn.utils.clip_grad_norm_(self._parameters, cfg.max_grad_norm, foreach=True)
            self.optimizer.step()
            # Stacked into one tensor and read once after the loop: each .item() costs time here.
            stats.append(torch.stack([policy_loss, value_loss, entropy, approx_kl, clip_fraction]).detach())

        st = self.storage
        var_returns = st.returns.var()
        explained_var = 1.0 - (st.returns - st.values).var() / var_returns if var_returns > 0 else torch.tensor(0.0)
        st.clear()
        self.iteration += 1
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        # Logged losses: the mean over all processes' minibatches.
        means = distributed.all_reduce_mean(torch.stack(stats).double().mean(0)).tolist() if stats else [0.0] * len(names)
        out = {f"losses/{k}": v for k, v in zip(names, means)}
        out["losses/explained_variance"] = float(explained_var)
        out["charts/learning_rate"] = self.learning_rate
        if not self.spec.is_discrete:
            out["charts/action_std"] = float(self.actor_critic.log_std.detach().exp().mean())
        return out

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- export / checkpoint ---------------------------------------------------------
    def inference_policy(self) -> InferencePolicy:
        spec = self.spec
        return InferencePolicy(
            self.actor_critic.actor, self.obs_normalizer, discrete=spec.is_discrete,
            low=spec.action_low, high=spec.action_high,
        ).eval()

    def _modules(self) -> dict[str, nn.Module]:
        return {"actor_critic": self.actor_critic, "obs_normalizer": self.obs_normalizer}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def _extra_state(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.learning_rate = state.get("learning_rate", self.cfg.learning_rate)
        self._set_lr(self.learning_rate)
