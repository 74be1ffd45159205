"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016, arXiv:1509.02971).

Reads top to bottom:
  1. the formulas a lab can replace: the critic's TD target and the actor loss;
  2. the hyperparameters (every field has a one-line description);
  3. the algorithm: ``act -> process_env_step -> update`` on a replay buffer.

Actions: the actor outputs ``tanh`` values in ``[-1, 1]`` for every action dimension;
the env receives them mapped linearly onto its box ``[low, high]``. The replay
buffer and the critic work with the ``[-1, 1]`` actions, so one set of
hyperparameters fits tasks with different action ranges.

Where well-known implementations disagree, the choice made here is stated in a
``CHOICE:`` comment at the place it is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlcourse import distributed
from rlcourse.algos.base import Algorithm
from rlcourse.algos.common import QCritics, action_bounds, polyak_update, scale_actions
from rlcourse.models.mlp import mlp
from rlcourse.models.normalizer import EmpiricalNormalization
from rlcourse.models.policy import InferencePolicy
from rlcourse.storage.replay import ReplayBuffer


# --------------------------------------------------------------------------- the maths
def ddpg_critic_target(
    rewards: torch.Tensor,
    next_q_target: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``y = r + gamma * (1 - done) * Q'(s', mu'(s'))``; ``next_q_target`` is ``Q'(s', mu'(s'))``, ``(B,)``.

    The max over actions of Q-learning is replaced by the target actor's action:
    with continuous actions the max cannot be enumerated, the actor approximates it.
    """
    return rewards + gamma * (1.0 - dones) * next_q_target


def ddpg_actor_loss(q_values: torch.Tensor) -> torch.Tensor:
    """``-mean Q(s, mu(s))``: minimizing it is gradient *ascent* on the critic's value of the actor's action."""
    return -q_values.mean()


# --------------------------------------------------------------------------- hyperparameters
def _h(default: Any, text: str) -> Any:
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=tuple(default): d, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass
class DDPGConfig:
    num_steps_per_env: int = _h(1, "environment steps per env between two updates")
    gradient_steps: int = _h(1, "gradient steps per update (update-to-data ratio = gradient_steps / (num_envs * num_steps_per_env))")
    buffer_size: int = _h(1_000_000, "replay buffer capacity (transitions)")
    batch_size: int = _h(256, "transitions per gradient step")
    learning_starts: int = _h(10_000, "env steps of uniformly random actions before learning starts")
    gamma: float = _h(0.99, "discount factor")
    tau: float = _h(0.005, "Polyak rate of the target networks (theta' <- (1 - tau) theta' + tau theta)")
    actor_learning_rate: float = _h(1e-3, "Adam step size of the actor")
    critic_learning_rate: float = _h(1e-3, "Adam step size of the critic")
    policy_delay: int = _h(1, "critic steps per actor (and target) step; 1 is plain DDPG, 2 is TD3's delay")
    exploration_noise: float = _h(0.1, "std of the Gaussian action noise, as a fraction of the half-range of the action box")
    normalize_observations: bool = _h(False, "running mean/std observation normalizer (saved with the policy)")
    actor_hidden: tuple = _h((256, 256), "hidden layer sizes of the actor MLP")
    critic_hidden: tuple = _h((256, 256), "hidden layer sizes of the critic MLP")
    activation: str = _h("relu", "hidden activation: elu, tanh, relu or selu")
    checkpoint_replay_buffer: bool = _h(True, "save the replay buffer in checkpoints (exact resume; large for big buffers)")

    def validate(self) -> None:
        for name in ("num_steps_per_env", "gradient_steps", "buffer_size", "batch_size", "policy_delay"):
            if getattr(self, name) < 1:
                raise ValueError(f"DDPGConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0 or self.exploration_noise < 0:
            raise ValueError("DDPGConfig.learning_starts and DDPGConfig.exploration_noise must be >= 0")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("DDPGConfig.gamma must lie in [0, 1] and DDPGConfig.tau in (0, 1]")
        if self.actor_learning_rate <= 0 or self.critic_learning_rate <= 0:
            raise ValueError("DDPGConfig learning rates must be > 0")


# --------------------------------------------------------------------------- the algorithm
class DDPG(Algorithm):
    """DDPG for continuous, bounded actions on a batched :class:`~rlcourse.envs.VecEnv`.

    Example::

        env = rlcourse.envs.make("Pendulum-v1", num_envs=1, seed=0)
        agent = DDPG(env, seed=0)         # starts from presets/ddpg.yaml for Pendulum-v1
        agent.learn(20_000)
    """

    name = "ddpg"
    Config = DDPGConfig

    def _build(self) -> None:
        cfg, spec = self.cfg, self.spec
        if spec.is_discrete:
            raise ValueError(f"DDPG needs a continuous action space; {spec.env_id!r} is discrete (use DQN)")
        self.action_low, self.action_high = action_bounds(spec, self.device)
        n_obs, n_act = spec.num_obs, spec.num_actions
        # The actor outputs pre-tanh values; tanh keeps actions inside the box by construction.
        self.actor = mlp(n_obs, cfg.actor_hidden, n_act, cfg.activation).to(self.device)
        self.critic = QCritics(n_obs, n_act, cfg.critic_hidden, cfg.activation, num_critics=1).to(self.device)
        self.actor_target = mlp(n_obs, cfg.actor_hidden, n_act, cfg.activation).to(self.device)
        self.critic_target = QCritics(n_obs, n_act, cfg.critic_hidden, cfg.activation, num_critics=1).to(self.device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        self.obs_normalizer: nn.Module = (
            EmpiricalNormalization(n_obs).to(self.device) if cfg.normalize_observations else nn.Identity()
        )
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_learning_rate, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_learning_rate, fused=True)
        self.buffer = ReplayBuffer(cfg.buffer_size, (n_obs,), (n_act,), False, self.device)
        self.num_updates = 0

    @property
    def num_steps_per_env(self) -> int:
        return self.cfg.num_steps_per_env

    # -- acting ----------------------------------------------------------------------
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        obs = obs.to(self.device, torch.float32)
        if isinstance(self.obs_normalizer, EmpiricalNormalization):
            # Every process's observations: the normalizer stays the same on all of them.
            self.obs_normalizer.update(distributed.all_gather_cat(obs))
        shape = (obs.shape[0], self.spec.num_actions)
        if self.global_step < cfg.learning_starts:
            # Uniformly random actions in [-1, 1] until the buffer holds enough data.
            actions = torch.rand(shape, generator=self.generator).to(self.device) * 2.0 - 1.0
        else:
            actions = torch.tanh(self.actor(self.obs_normalizer(obs)))
            # CHOICE: uncorrelated Gaussian noise instead of the paper's Ornstein-Uhlenbeck
            # process: it works as well (Fujimoto et al. 2018) and has no state to reset.
            noise = torch.randn(shape, generator=self.generator).to(self.device)
            # Clip after adding noise: the action stays inside the box.
            actions = (actions + cfg.exploration_noise * noise).clamp(-1.0, 1.0)
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
        critic_loss_sum = torch.zeros((), device=self.device)
        actor_loss_sum = torch.zeros((), device=self.device)
        q_sum = torch.zeros((), device=self.device)
        actor_steps = 0
        for _ in range(cfg.gradient_steps):
            batch = self.buffer.sample(cfg.batch_size, self.generator)
            obs, next_obs = self.obs_normalizer(batch.obs), self.obs_normalizer(batch.next_obs)

            # Critic: regress Q(s, a) on the target networks' one-step bootstrap.
            with torch.no_grad():
                next_actions = torch.tanh(self.actor_target(next_obs))
                target = ddpg_critic_target(
                    batch.rewards, self.critic_target(next_obs, next_actions)[0], batch.dones, cfg.gamma
                )
            q = self.critic(obs, batch.actions)[0]  # one critic: (1, B) -> (B,)
            critic_loss = F.mse_loss(q, target)
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            distributed.all_reduce_grads(self.critic_optimizer)   # mean over processes (no-op in one)
            self.critic_optimizer.step()
            self.num_updates += 1
            critic_loss_sum += critic_loss.detach()
            q_sum += q.detach().mean()

            if self.num_updates % cfg.policy_delay == 0:
                # Actor: follow the critic's gradient dQ/da through a = tanh(actor(s)).
                # The critic only passes the gradient on to the actions: freeze its parameters.
                self.critic.requires_grad_(False)
                actor_loss = ddpg_actor_loss(self.critic(obs, torch.tanh(self.actor(obs)))[0])
                self.critic.requires_grad_(True)
                self.actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward()
                distributed.all_reduce_grads(self.actor_optimizer)
                self.actor_optimizer.step()
                actor_loss_sum += actor_loss.detach()
                actor_steps += 1
                polyak_update(self.critic_target, self.critic, cfg.tau)
                polyak_update(self.actor_target, self.actor, cfg.tau)
        n = cfg.gradient_steps
        out = {"losses/critic_loss": float(critic_loss_sum) / n, "losses/q_values": float(q_sum) / n}
        if actor_steps:
            out["losses/actor_loss"] = float(actor_loss_sum) / actor_steps
        return out

    # -- export / checkpoint ---------------------------------------------------------
    def inference_policy(self) -> InferencePolicy:
        # squash=True: the exported policy applies the same tanh and [low, high] mapping.
        spec = self.spec
        return InferencePolicy(
            self.actor, self.obs_normalizer, low=spec.action_low, high=spec.action_high, squash=True
        ).eval()

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
            "critic_target": self.critic_target, "obs_normalizer": self.obs_normalizer,
        }

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"num_updates": self.num_updates}
        if self.cfg.checkpoint_replay_buffer:
            state["replay_buffer"] = self.buffer.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state.get("num_updates", 0))
        if "replay_buffer" in state:
            self.buffer.load_state_dict(state["replay_buffer"])
