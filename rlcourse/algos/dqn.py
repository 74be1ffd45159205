"""Deep Q-Network (Mnih et al. 2015, Nature 518) with the Double-DQN target (van Hasselt et al. 2016).

Reads top to bottom:
  1. the maths: the TD targets, the Huber loss, the TD loss of a minibatch that puts them
     together (lab 1 replaces it), epsilon-greedy (lab 1 too) and its schedule;
  2. the hyperparameters (every field has a one-line description);
  3. the algorithm: ``act -> process_env_step -> update`` on a replay buffer.

Where well-known implementations disagree, the choice made here is stated in a
``CHOICE:`` comment at the place it is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from rlcourse import distributed
from rlcourse.algos.base import Algorithm
from rlcourse.algos.common import polyak_update
from rlcourse.models.mlp import mlp
from rlcourse.models.normalizer import EmpiricalNormalization
from rlcourse.models.policy import InferencePolicy
from rlcourse.storage.replay import ReplayBatch, ReplayBuffer


# --------------------------------------------------------------------------- the maths
def dqn_target(
    rewards: torch.Tensor,
    next_q_target: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The Q-learning target ``y = r + gamma * (1 - done) * max_a' Q_target(s', a')``.

    Args:
        rewards: ``(B,)`` rewards.
        next_q_target: ``(B, num_actions)`` target-network Q-values of the next states.
        dones: ``(B,)`` 1 where ``s'`` is terminal (a time-out is *not* terminal).
        gamma: discount factor.

    Returns:
        ``(B,)`` regression targets for ``Q(s, a)``.
    """
    return rewards + gamma * (1.0 - dones) * next_q_target.max(dim=1).values


def double_dqn_target(
    rewards: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Double-DQN target ``y = r + gamma * (1 - done) * Q_target(s', argmax_a' Q_online(s', a'))``.

    The max in :func:`dqn_target` both *picks* and *evaluates* the best action with the
    same noisy estimate, so it is biased upwards. Picking with the online network and
    evaluating with the target network decorrelates the two errors.
    """
    best = next_q_online.argmax(dim=1, keepdim=True)
    return rewards + gamma * (1.0 - dones) * next_q_target.gather(1, best).squeeze(1)


def huber_loss(predictions: torch.Tensor, targets: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Mean Huber loss of the TD errors ``x = predictions - targets``.

    Per element: ``0.5 * x^2`` where ``|x| <= delta``, else ``delta * (|x| - 0.5 * delta)``. The
    two branches meet with the same value and slope at ``|x| = delta``, so the gradient is the
    TD error itself for small errors and is capped at ``delta`` in magnitude for large ones: a
    single surprising transition cannot produce a huge update (Mnih et al. 2015). With
    ``delta = 1`` this is PyTorch's ``smooth_l1_loss``.

    Args:
        predictions: ``(B,)`` ``Q(s, a)`` of the sampled transitions.
        targets: ``(B,)`` TD targets (no gradient flows into them).
        delta: where the loss turns from quadratic to linear.

    Returns:
        A 0-dim tensor, the mean over the batch.
    """
    return F.huber_loss(predictions, targets, reduction="mean", delta=delta)


def td_loss(
    batch: ReplayBatch,
    q_network: nn.Module,
    target_network: nn.Module,
    gamma: float,
    delta: float = 1.0,
    double: bool = True,
) -> torch.Tensor:
    """The (double-)DQN loss of one minibatch: Huber loss of ``Q(s, a)`` against the TD target.

    * ``Q(s, a)``: the online network's value of the action taken in each transition (one
      entry per row of ``q_network(batch.obs)``, picked by ``batch.actions``); the gradient
      flows through it.
    * The target is computed without gradient: it is a regression label, not something to
      move (a gradient into it would chase the label too, and train the target network).
      With ``double`` the online network picks the next action and the target network
      evaluates it (:func:`double_dqn_target`), else the target network does both
      (:func:`dqn_target`).
    * Only ``batch.dones`` (the episode *terminated*) stops the bootstrap; ``batch.time_outs``
      rows were cut by the time limit and bootstrap from ``next_obs`` like any other row.

    Args:
        batch: ``(B,)`` transitions (:class:`~rlcourse.storage.replay.ReplayBatch`), observations
            already normalized.
        q_network: the online network, ``(M, num_obs) -> (M, num_actions)``.
        target_network: the target network, same shapes.
        gamma: discount factor.
        delta: where the Huber loss turns from quadratic to linear.
        double: the double-DQN target (else the plain DQN one).

    Returns:
        A 0-dim tensor, the mean Huber loss over the batch, differentiable w.r.t. ``q_network``.
    """
    return _td_loss_and_q(batch, q_network, target_network, gamma, delta, double)[0]


def _td_loss_and_q(
    batch: ReplayBatch, q_network: nn.Module, target_network: nn.Module, gamma: float, delta: float, double: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`td_loss` and the ``(B,)`` ``Q(s, a)`` it regressed (DQN logs their mean)."""
    with torch.no_grad():
        next_q_target = target_network(batch.next_obs)
        if double:
            target = double_dqn_target(batch.rewards, q_network(batch.next_obs), next_q_target, batch.dones, gamma)
        else:
            target = dqn_target(batch.rewards, next_q_target, batch.dones, gamma)
    q = q_network(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    # Huber loss: quadratic for small TD errors, linear for large ones, so a single
    # surprising transition cannot produce a huge gradient (Mnih et al. 2015).
    return huber_loss(q, target, delta), q


def epsilon_greedy(q_values: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``epsilon`` a uniformly random action, otherwise ``argmax_a Q(s, a)``, per row.

    Args:
        q_values: ``(N, num_actions)``.
        epsilon: exploration probability in ``[0, 1]``.
        generator: the source of randomness (seeded: same seed, same actions).

    Returns:
        ``(N,)`` int64 actions on ``q_values.device``.
    """
    n, num_actions = q_values.shape
    greedy = q_values.argmax(dim=1)
    explore = torch.rand(n, generator=generator, device=generator.device) < epsilon
    random_actions = torch.randint(0, num_actions, (n,), generator=generator, device=generator.device)
    return torch.where(explore.to(greedy.device), random_actions.to(greedy.device), greedy)


def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Interpolate from ``start`` (at ``t = 0``) to ``end`` (at ``t >= duration``), then stay at ``end``."""
    if duration <= 0:
        return end
    fraction = min(max(t / duration, 0.0), 1.0)
    return start + fraction * (end - start)


# --------------------------------------------------------------------------- hyperparameters
def _h(default: Any, text: str) -> Any:
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=tuple(default): d, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass
class DQNConfig:
    num_steps_per_env: int = _h(1, "environment steps per env between two updates")
    gradient_steps: int = _h(1, "gradient steps per update (update-to-data ratio = gradient_steps / (num_envs * num_steps_per_env))")
    buffer_size: int = _h(100_000, "replay buffer capacity (transitions)")
    batch_size: int = _h(128, "transitions per gradient step")
    learning_starts: int = _h(1_000, "env steps of uniformly random actions before learning starts")
    gamma: float = _h(0.99, "discount factor")
    learning_rate: float = _h(2.5e-4, "Adam step size")
    lr_schedule: str = _h("constant", "learning-rate schedule: constant or linear (anneal to 0 at total_steps)")
    max_grad_norm: float = _h(10.0, "global gradient-norm clip")
    target_update_interval: int = _h(500, "gradient steps between target-network updates")
    tau: float = _h(1.0, "target update rate: 1.0 copies the online network (hard update), < 1 is Polyak averaging")
    double_dqn: bool = _h(True, "pick the next action with the online network, evaluate it with the target network")
    exploration_initial_eps: float = _h(1.0, "epsilon at the start of training")
    exploration_final_eps: float = _h(0.05, "epsilon after the schedule")
    exploration_fraction: float = _h(0.1, "fraction of total_steps over which epsilon decays linearly")
    normalize_observations: bool = _h(False, "running mean/std observation normalizer (saved with the policy)")
    huber_delta: float = _h(1.0, "TD error at which the Huber loss turns from quadratic to linear")
    hidden: tuple = _h((256, 256), "hidden layer sizes of the Q-network")
    activation: str = _h("relu", "hidden activation: elu, tanh, relu or selu")
    checkpoint_replay_buffer: bool = _h(True, "save the replay buffer in checkpoints (exact resume; large for big buffers)")

    def validate(self) -> None:
        for name in ("num_steps_per_env", "gradient_steps", "buffer_size", "batch_size", "target_update_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"DQNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0:
            raise ValueError(f"DQNConfig.learning_starts must be >= 0, got {self.learning_starts}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("DQNConfig.gamma must lie in [0, 1] and DQNConfig.tau in (0, 1]")
        for name in ("exploration_initial_eps", "exploration_final_eps", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DQNConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"DQNConfig.lr_schedule must be constant or linear, got {self.lr_schedule!r}")
        if self.learning_rate <= 0:
            raise ValueError("DQNConfig.learning_rate must be > 0")
        if self.huber_delta <= 0:
            raise ValueError(f"DQNConfig.huber_delta must be > 0, got {self.huber_delta}")


# --------------------------------------------------------------------------- the algorithm
class DQN(Algorithm):
    """DQN for discrete actions on a batched :class:`~rlcourse.envs.VecEnv`.

    Example::

        env = rlcourse.envs.make("CartPole-v1", num_envs=4, seed=0)
        agent = DQN(env, seed=0)          # starts from presets/dqn.yaml for CartPole-v1
        agent.learn(100_000)
        agent.save("dqn_cartpole.pt")

    Lab hooks (lab 1), each a student's function with the signature of the one it replaces:
    ``epsilon_fn`` replaces :func:`epsilon_greedy` and ``td_loss_fn`` replaces :func:`td_loss`
    (called with ``double=cfg.double_dqn`` and ``delta=cfg.huber_delta``).
    """

    name = "dqn"
    Config = DQNConfig

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        device: str | torch.device | None = None,
        preset: str | None = "auto",
        epsilon_fn: Callable[..., torch.Tensor] = epsilon_greedy,
        td_loss_fn: Callable[..., torch.Tensor] = td_loss,
        **hyperparameters: Any,
    ) -> None:
        self.epsilon_fn = epsilon_fn
        self.td_loss_fn = td_loss_fn
        super().__init__(env, seed=seed, device=device, preset=preset, **hyperparameters)

    def _build(self) -> None:
        cfg, spec = self.cfg, self.spec
        if not spec.is_discrete:
            raise ValueError(f"DQN needs a discrete action space; {spec.env_id!r} is continuous (use SAC or DDPG)")
        # CHOICE: a plain MLP with PyTorch-style orthogonal init (gain 1 on the head), no
        # dueling head: enough for the course tasks and the simplest to read.
        self.q_network = mlp(spec.num_obs, cfg.hidden, spec.num_actions, cfg.activation).to(self.device)
        self.q_target = mlp(spec.num_obs, cfg.hidden, spec.num_actions, cfg.activation).to(self.device)
        self.q_target.load_state_dict(self.q_network.state_dict())
        self.q_target.requires_grad_(False)
        self.obs_normalizer: nn.Module = (
            EmpiricalNormalization(spec.num_obs).to(self.device) if cfg.normalize_observations else nn.Identity()
        )
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=cfg.learning_rate, fused=True)
        self.learning_rate = cfg.learning_rate
        self.buffer = ReplayBuffer(cfg.buffer_size, (spec.num_obs,), (), True, self.device)
        self.num_updates = 0  # gradient steps taken, drives the target-network updates
        self.epsilon = cfg.exploration_initial_eps

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
        self._obs = obs
        # CHOICE: epsilon decays over a fraction of the whole run (SB3, CleanRL), so the
        # schedule stretches with total_steps; outside learn() it sits at its final value.
        self.epsilon = linear_schedule(
            cfg.exploration_initial_eps, cfg.exploration_final_eps,
            cfg.exploration_fraction * self.total_steps, self.global_step,
        )
        if self.global_step < cfg.learning_starts:
            # Fill the buffer with uniformly random behaviour first: the Q-network is untrained.
            actions = torch.randint(0, self.spec.num_actions, (obs.shape[0],), generator=self.generator)
            actions = actions.to(self.device)
        else:
            q_values = self.q_network(self.obs_normalizer(obs))
            actions = self.epsilon_fn(q_values, self.epsilon, self.generator)
            if actions.shape != (obs.shape[0],):
                raise ValueError(f"epsilon_fn must return one action per env, shape ({obs.shape[0]},); "
                                 f"got {tuple(actions.shape)}")
            actions = actions.to(self.device, torch.int64)
        self._actions = actions
        return actions

    def process_env_step(
        self,
        obs: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        extras: dict[str, Any],
    ) -> None:
        # The buffer stores raw observations; the normalizer (if any) is applied when sampling.
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
            return {"charts/epsilon": self.epsilon}
        if cfg.lr_schedule == "linear" and self.total_steps > 0:
            self.learning_rate = cfg.learning_rate * max(1.0 - self.global_step / self.total_steps, 0.0)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate
        td_loss_sum = torch.zeros((), device=self.device)
        q_mean = torch.zeros((), device=self.device)
        for _ in range(cfg.gradient_steps):
            batch = self.buffer.sample(cfg.batch_size, self.generator)
            batch = dataclasses.replace(batch, obs=self.obs_normalizer(batch.obs),
                                        next_obs=self.obs_normalizer(batch.next_obs))
            args = (batch, self.q_network, self.q_target, cfg.gamma, cfg.huber_delta, cfg.double_dqn)
            if self.td_loss_fn is td_loss:
                loss, q = _td_loss_and_q(*args)   # the reference also hands back Q(s, a) for the log
            else:
                loss = self.td_loss_fn(*args)
                if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
                    raise ValueError("td_loss_fn must return a 0-dim tensor that is differentiable with respect "
                                     "to the online network's parameters")
                with torch.no_grad():  # Q(s, a) for the log: one more forward pass
                    q = self.q_network(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(self.optimizer)   # mean over processes (no-op in one)
            nn.utils.clip_grad_norm_(self.q_network.parameters(), cfg.max_grad_norm, foreach=True)
            self.optimizer.step()

            self.num_updates += 1
            # CHOICE: the target interval counts gradient steps (not env steps as in SB3 and
            # CleanRL), so it does not change meaning when num_envs or gradient_steps change.
            if self.num_updates % cfg.target_update_interval == 0:
                polyak_update(self.q_target, self.q_network, cfg.tau)
            td_loss_sum += loss.detach()
            q_mean += q.detach().mean()
        n = cfg.gradient_steps
        return {
            "losses/td_loss": float(td_loss_sum) / n,
            "losses/q_values": float(q_mean) / n,
            "charts/epsilon": self.epsilon,
            "charts/learning_rate": self.learning_rate,
        }

    # -- export / checkpoint ---------------------------------------------------------
    def inference_policy(self) -> InferencePolicy:
        # The greedy policy: argmax over Q-values (no exploration).
        return InferencePolicy(self.q_network, self.obs_normalizer, discrete=True).eval()

    def _modules(self) -> dict[str, nn.Module]:
        return {"q_network": self.q_network, "q_target": self.q_target, "obs_normalizer": self.obs_normalizer}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "num_updates": self.num_updates, "learning_rate": self.learning_rate, "epsilon": self.epsilon,
        }
        if self.cfg.checkpoint_replay_buffer:
            state["replay_buffer"] = self.buffer.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state.get("num_updates", 0))
        self.learning_rate = float(state.get("learning_rate", self.cfg.learning_rate))
        self.epsilon = float(state.get("epsilon", self.cfg.exploration_final_eps))
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate
        if "replay_buffer" in state:
            self.buffer.load_state_dict(state["replay_buffer"])
