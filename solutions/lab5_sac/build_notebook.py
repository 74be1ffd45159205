"""Write ``lab5_sac.ipynb``, the nbgrader source notebook of lab 5, from the cells below.

The committed notebook is the source of truth; this script is a convenient way to edit it
as plain Python (run it, then ``make labs`` to regenerate the student version and
``rlcourse pin lab5_sac`` if the training cell changed). nbgrader does not copy
``build_*.py`` into the student release (``CourseDirectory.ignore`` in
``autograder/nbgrader_config.py``).

    python solutions/lab5_sac/build_notebook.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from rlcourse.grading.authoring import code, md, notebook, write

HERE = Path(__file__).resolve().parent


HEADER = r"""
# Lab 5: Soft Actor-Critic (SAC)

In this lab you write the four formulas that make SAC an *entropy-regularized* off-policy
actor-critic, plug them into the course's SAC implementation (`rlcourse.SAC`) and train an
agent that swings a pendulum up and holds it there.

1. **The soft critic target**: `sac_critic_target(rewards, next_q1, next_q2, next_log_prob, dones, gamma, alpha)`.
2. **The log-probability of a tanh-squashed Gaussian**: `squashed_gaussian_log_prob(pre_tanh, mean, log_std)`.
3. **The temperature loss**: `temperature_loss(log_alpha, log_prob, target_entropy)`.
4. **The Polyak (soft) target update**: `polyak_update(target, source, tau)`.
5. **Training**: SAC on `Pendulum-v1` for 5,000 environment steps with *your* functions,
   an evaluation of the deterministic policy, and its learning curve.

Write code only between the `# YOUR CODE HERE` marks (replace `raise NotImplementedError()`).
Every other code cell is locked; if you break or delete one, the grader restores it.

**Points (10 in total)**

| cell | points | what is checked |
|---|---|---|
| `test_critic_target` | 2 | the visible checks below, and hidden ones: your target against the reference on fixed minibatches with terminal and non-terminal transitions, alpha as a number and as a tensor |
| `test_log_prob` | 2 | the visible checks below, and hidden ones: value *and gradients* against the reference for 1 to 3 action dimensions, including pre-tanh values up to about 25 where the naive formula breaks down |
| `test_temperature` | 2 | the visible checks below, and hidden ones: value, gradient with respect to `log_alpha`, and no gradient into `log_prob` |
| `test_polyak` | 1 | the visible checks below, and hidden ones: several tau on two kinds of networks whose parameters require gradients; the target's own tensors must change in place, the source must not |
| `test_training` | 3 | your functions train SAC on Pendulum-v1 (seed 0, 5k steps, about a minute); the deterministic policy's mean return over 10 evaluation episodes must reach the pass mark pinned in `autograder/pinned_metrics.json`. The pass mark is set so that a correct solution passes on any seed. |

A test cell gives all of its points or none. The training cell uses your functions, so an
error in them usually costs more than one cell; fix the function tests first.
Run the notebook top to bottom (*Kernel > Restart and Run All*) before you submit.
"""

SETUP = r"""
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rlcourse
from rlcourse.algos.sac import SAC

# Warnings go to stderr. The grader filters out warnings and progress bars, but any other
# stderr output in a test cell counts as a failure, so quiet them here anyway.
warnings.filterwarnings("ignore")
torch.set_printoptions(precision=4, sci_mode=False)
# Small MLPs train fastest on one thread, and one thread makes runs repeatable.
torch.set_num_threads(1)
"""

LOOP_TEXT = r"""
## 1. Maximum-entropy reinforcement learning

SAC (Haarnoja et al., 2018) maximizes the return *plus* the entropy of its stochastic policy,

$$J(\pi) = \mathbb{E}\Big[\sum_t \gamma^t \big(r_t + \alpha\, \mathcal{H}(\pi(\cdot \mid s_t))\big)\Big], \qquad
\mathcal{H}(\pi(\cdot \mid s)) = \mathbb{E}_{a \sim \pi}\big[-\log \pi(a \mid s)\big].$$

The temperature $\alpha$ sets the price of randomness: the policy stays as random as it can
afford, which explores without any added noise and keeps it from committing early to one
way of solving the task. Like DQN, SAC learns off-policy from a replay buffer:

```
a ~ pi(.|s)  (tanh-squashed Gaussian; log pi(a|s) by your squashed_gaussian_log_prob)
store (s, a, r, s', done = terminated); then for a sampled batch:
    a' ~ pi(.|s');  y = your sac_critic_target(r, Q1_targ(s', a'), Q2_targ(s', a'), log pi(a'|s'), done)
    critics:     minimize (Q1(s, a) - y)^2 + (Q2(s, a) - y)^2
    actor:       minimize mean(alpha * log pi(a~|s) - min(Q1, Q2)(s, a~)),  a~ ~ pi(.|s) reparameterized
    temperature: minimize your temperature_loss(log_alpha, log pi(a~|s), target_entropy)
    targets:     your polyak_update(critic_targets, critics, tau)
```

`Pendulum-v1`: swing a pendulum up and keep it upright with a limited torque in $[-2, 2]$.
The reward is $-(\theta^2 + 0.1\,\dot\theta^2 + 0.001\,u^2)$ every step for 200 steps: 0 is
perfect, a random policy gets about $-1100$, a good one about $-150$.
"""

TARGET_TEXT = r"""
## 2. The soft critic target

The soft Q-function counts the future entropy bonus as part of the value. Its Bellman
target for a transition $(s, a, r, s', d)$, with a fresh action $a' \sim \pi(\cdot \mid s')$ from the
*current* policy, is

$$y = r + \gamma\,(1 - d)\,\Big(\min\big(Q_{\bar\phi_1}(s', a'),\, Q_{\bar\phi_2}(s', a')\big) - \alpha \log \pi(a' \mid s')\Big).$$

* **Two critics, take the smaller.** Maximizing a learned Q-function exploits its
  overestimates; the minimum of two independently trained critics counters that (clipped
  double-Q, Fujimoto et al., 2018). $Q_{\bar\phi_i}$ are the slowly moving *target* critics.
* **The entropy bonus** $-\alpha \log \pi(a' \mid s')$ is large when the policy is uncertain in $s'$.
* **Terminated vs truncated.** As in lab 1, $d = 1$ only for terminal states; the buffer stores
  `done = terminated`, so time-outs bootstrap. (Pendulum never terminates, every episode is
  cut after 200 steps; your function must still handle `dones`.)

All inputs are `(B,)` tensors except `gamma` (a float) and `alpha` (a float *or* a 0-dim tensor:
SAC passes `log_alpha.exp()`). Return the `(B,)` targets.
"""

TARGET_SOLUTION = r'''
def sac_critic_target(rewards, next_q1, next_q2, next_log_prob, dones, gamma, alpha):
    """Soft Bellman target y = r + gamma * (1 - d) * (min(Q1', Q2') - alpha * log pi(a'|s')).

    Args:
        rewards:       (B,) rewards.
        next_q1:       (B,) first target critic at (s', a').
        next_q2:       (B,) second target critic at (s', a').
        next_log_prob: (B,) log pi(a'|s') of the next action a' ~ pi(.|s').
        dones:         (B,) 1.0 where s' is terminal (time-outs are stored as 0.0).
        gamma:         discount factor.
        alpha:         entropy temperature (float or 0-dim tensor).

    Returns:
        (B,) targets.
    """
    ### BEGIN SOLUTION
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    y = rewards + gamma * (1.0 - dones) * soft_value
    ### END SOLUTION
    return y
'''

TARGET_TEST = r"""
# Visible checks: run this cell to test your sac_critic_target. (2 points, with hidden checks.)

rewards = torch.tensor([1.0, -0.5, 2.0])
next_q1 = torch.tensor([10.0, 4.0, 7.0])
next_q2 = torch.tensor([8.0, 5.0, 1.0])
next_log_prob = torch.tensor([-1.0, 0.5, 3.0])
dones = torch.tensor([0.0, 0.0, 1.0])
y = sac_critic_target(rewards, next_q1, next_q2, next_log_prob, dones, 0.9, 0.2)
assert isinstance(y, torch.Tensor) and y.shape == (3,), "one target per transition, shape (B,)"
# y0 = 1 + 0.9 * (min(10, 8) - 0.2 * (-1)) = 1 + 0.9 * 8.2 = 8.38
# y1 = -0.5 + 0.9 * (min(4, 5) - 0.2 * 0.5) = -0.5 + 0.9 * 3.9 = 3.01
# y2 = 2 (terminal: no bootstrap)
assert torch.allclose(y, torch.tensor([8.38, 3.01, 2.0])), f"got {y.tolist()}"
# alpha may be a 0-dim tensor (SAC passes log_alpha.exp()).
y = sac_critic_target(rewards, next_q1, next_q2, next_log_prob, dones, 0.9, torch.tensor(0.2))
assert torch.allclose(y, torch.tensor([8.38, 3.01, 2.0])), f"alpha as a tensor: got {y.tolist()}"
print("sac_critic_target: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab5 as _lab5

_lab5.check_critic_target(sac_critic_target, _lab5.load_pins())
### END HIDDEN TESTS
"""

LOG_PROB_TEXT = r"""
## 3. The log-probability of a squashed Gaussian

Pendulum's torque is bounded, so SAC's actor outputs a bounded action: it samples
$u \sim \mathcal{N}(\mu(s), \sigma(s)^2)$ per action dimension and acts with $a = \tanh(u) \in (-1, 1)$
(scaled onto the env's box by the library). The entropy terms need $\log \pi(a \mid s)$, the density
of $a$, not of $u$. Since $\tanh$ is invertible with $\frac{d}{du}\tanh(u) = 1 - \tanh(u)^2$, the
change-of-variables formula gives, summed over the action dimensions $i$,

$$\log \pi(a \mid s) = \sum_i \Big[\log \mathcal{N}(u_i;\, \mu_i, \sigma_i^2) - \log\big(1 - \tanh(u_i)^2\big)\Big],
\qquad \log \mathcal{N}(u; \mu, \sigma^2) = -\frac{(u - \mu)^2}{2\sigma^2} - \log \sigma - \tfrac12 \log(2\pi).$$

**Numerical stability.** In float32, $\tanh(u)$ rounds to exactly $\pm 1$ for $|u|$ above about 9,
so $\log(1 - \tanh(u)^2) = -\infty$; adding a small $\epsilon$ inside the log (a common fix) avoids the
infinity but returns a wrong, bounded value already for moderate $|u|$. Use the exact identity

$$\log\big(1 - \tanh(u)^2\big) = 2\,\big(\log 2 - u - \operatorname{softplus}(-2u)\big),$$

(from $1 - \tanh(u)^2 = 4 / (e^{u} + e^{-u})^2$), which is finite for every $u$;
`F.softplus` computes $\log(1 + e^x)$ without overflow.

Implement `squashed_gaussian_log_prob` with torch operations (the actor's loss differentiates
through it). Inputs are `(B, A)`; return `(B,)`.
"""

LOG_PROB_SOLUTION = r'''
def squashed_gaussian_log_prob(pre_tanh, mean, log_std):
    """log pi(a|s) of a = tanh(u), u ~ N(mean, exp(log_std)^2), summed over the action dimensions.

    Args:
        pre_tanh: (B, A) the Gaussian sample u (before the tanh).
        mean:     (B, A) the Gaussian's mean.
        log_std:  (B, A) the log of its standard deviation.

    Returns:
        (B,) log-probabilities of the squashed actions tanh(u).
    """
    ### BEGIN SOLUTION
    gaussian = -((pre_tanh - mean) ** 2) / (2.0 * torch.exp(2.0 * log_std)) - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    log_prob = (gaussian - log_det).sum(dim=-1)
    ### END SOLUTION
    return log_prob
'''

LOG_PROB_TEST = r"""
# Visible checks: run this cell to test your squashed_gaussian_log_prob. (2 points, with hidden checks.)

# u = mean = 0, std = 1, one action dimension: log N(0; 0, 1) = -0.5 log(2 pi), and tanh'(0) = 1.
lp = squashed_gaussian_log_prob(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1))
assert isinstance(lp, torch.Tensor) and lp.shape == (1,), "sum over the action dimensions: shape (B,)"
assert torch.allclose(lp, torch.tensor([-0.5 * math.log(2 * math.pi)])), f"u = 0: got {lp.tolist()}"

# Compare with the direct formula where it is accurate (|u| <= 2), two action dimensions.
u = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
mean = torch.tensor([[0.2, -0.5], [1.5, 0.0]])
log_std = torch.tensor([[-0.5, 0.0], [0.3, -1.0]])
direct = (torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
lp = squashed_gaussian_log_prob(u, mean, log_std)
assert torch.allclose(lp, direct, atol=1e-4), f"got {lp.tolist()}, the direct formula gives {direct.tolist()}"

# Far in the tail of tanh the direct formula is -inf; yours must stay finite and keep its gradient.
u = torch.tensor([[12.0], [-30.0]], requires_grad=True)
lp = squashed_gaussian_log_prob(u, torch.tensor([[11.0], [-29.0]]), torch.zeros(2, 1))
assert torch.isfinite(lp).all(), "the log-probability must stay finite for large |u|: use the stable identity"
# log(1 - tanh(u)^2) ~ 2 (log 2 - |u|) there; for u = 12: -0.5 - 0.5 log(2 pi) - 2 (log 2 - 12)
assert torch.allclose(lp[0], torch.tensor(-0.5 - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - 12)), atol=1e-3), lp
lp.sum().backward()
assert u.grad is not None and torch.isfinite(u.grad).all(), "the log-probability must be differentiable"
print("squashed_gaussian_log_prob: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab5 as _lab5

_lab5.check_log_prob(squashed_gaussian_log_prob, _lab5.load_pins())
### END HIDDEN TESTS
"""

TEMPERATURE_TEXT = r"""
## 4. Learning the temperature

A fixed $\alpha$ has to be tuned per task, and the right amount of randomness changes during
training. SAC instead constrains the policy's entropy to stay above a target $\bar{\mathcal H}$
(the library uses $-\dim(\mathcal A)$, i.e. $-1$ for Pendulum) and learns $\alpha$ as the Lagrange
multiplier of that constraint, by gradient descent on

$$L(\alpha) = -\,\mathbb{E}_{a \sim \pi}\Big[\log\alpha \cdot \big(\log \pi(a \mid s) + \bar{\mathcal H}\big)\Big].$$

When the entropy $-\log\pi$ is below the target, $\log \pi + \bar{\mathcal H} > 0$ and descending $L$
raises $\alpha$ (randomness becomes cheaper); above the target it lowers $\alpha$. SAC learns
$\log\alpha$ rather than $\alpha$, so $\alpha = e^{\log\alpha}$ stays positive, and the loss multiplies
$\log\alpha$ (as in the authors' code).

This loss trains $\alpha$ **only**: the `log_prob` you receive is still attached to the actor's
computation graph, and the loss must not send gradients into it. **Detach** it.
Return the mean over the batch, a 0-dim tensor differentiable with respect to `log_alpha`.
"""

TEMPERATURE_SOLUTION = r'''
def temperature_loss(log_alpha, log_prob, target_entropy):
    """The temperature loss -mean(log_alpha * (log pi(a|s) + target_entropy)), log pi treated as a constant.

    Args:
        log_alpha:      0-dim tensor log(alpha) (requires grad).
        log_prob:       (B,) log pi(a|s) of fresh actions (attached to the actor's graph).
        target_entropy: the entropy target (a float).

    Returns:
        A 0-dim tensor.
    """
    ### BEGIN SOLUTION
    loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
    ### END SOLUTION
    return loss
'''

TEMPERATURE_TEST = r"""
# Visible checks: run this cell to test your temperature_loss. (2 points, with hidden checks.)

log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
log_prob = torch.tensor([0.5, -1.0, 1.5], requires_grad=True)  # stands for the actor's output
loss = temperature_loss(log_alpha, log_prob, -1.0)
assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "the loss must be a 0-dim tensor (the mean)"
# log pi + target = [-0.5, -2.0, 0.5], mean -2/3: loss = -log(0.5) * (-2/3) = (2/3) log(0.5)
assert torch.isclose(loss, torch.tensor(2 / 3 * math.log(0.5))), f"got {loss.item():.4f}"
loss.backward()
# d loss / d log_alpha = -mean(log pi + target) = 2/3 > 0: descending lowers alpha (the entropy is above target).
assert log_alpha.grad is not None and torch.isclose(log_alpha.grad, torch.tensor(2 / 3)), f"grad {log_alpha.grad}"
assert log_prob.grad is None or torch.all(log_prob.grad == 0), "no gradient may flow into log_prob: detach it"
print("temperature_loss: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab5 as _lab5

_lab5.check_temperature_loss(temperature_loss, _lab5.load_pins())
### END HIDDEN TESTS
"""

POLYAK_TEXT = r"""
## 5. Soft target updates

DQN copies its online network into the target network every few hundred steps. SAC (like
DDPG and TD3) instead moves the target critics a little towards the critics after *every*
gradient step, an exponential moving average of the parameters:

$$\bar\phi \leftarrow \tau\,\phi + (1 - \tau)\,\bar\phi, \qquad \tau = 0.005 .$$

The targets then trail the critics by about $1/\tau = 200$ updates and change smoothly.

Implement `polyak_update(target, source, tau)` for two `nn.Module`s with the same architecture:

* change the target's parameter tensors **in place** (`zip(target.parameters(), source.parameters())`;
  `p.mul_(...)`, `p.add_(...)`, `p.copy_(...)` or `torch.lerp`); assigning a new tensor to a loop
  variable changes nothing;
* run it under `torch.no_grad()`: the update is not part of any loss, and in-place changes of
  parameters that require gradients are an error otherwise;
* leave the source unchanged. `tau = 1` copies the source, `tau = 0` leaves the target as it is.
"""

POLYAK_SOLUTION = r'''
def polyak_update(target, source, tau):
    """In place: theta' <- tau * theta + (1 - tau) * theta' for every parameter of target (theta') and source (theta).

    Args:
        target: nn.Module whose parameters move (the target critics).
        source: nn.Module with the same architecture (the critics being trained).
        tau:    the update rate in [0, 1].
    """
    ### BEGIN SOLUTION
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), source.parameters()):
            target_param.mul_(1.0 - tau).add_(tau * param)
    ### END SOLUTION
'''

POLYAK_TEST = r"""
# Visible checks: run this cell to test your polyak_update. (1 point, with hidden checks.)

source, target = nn.Linear(2, 1), nn.Linear(2, 1)
with torch.no_grad():
    source.weight.copy_(torch.tensor([[1.0, 2.0]]))
    source.bias.fill_(4.0)
    target.weight.zero_()
    target.bias.zero_()
weight = target.weight  # the very tensor the optimizer and the forward pass use
polyak_update(target, source, 0.25)
assert target.weight is weight, "update the target's parameters in place, do not replace them"
assert torch.allclose(target.weight, torch.tensor([[0.25, 0.5]])), f"weight {target.weight.tolist()}"
assert torch.allclose(target.bias, torch.tensor([1.0])), f"bias {target.bias.tolist()}"
assert torch.allclose(source.weight, torch.tensor([[1.0, 2.0]])), "the source must not change"
polyak_update(target, source, 0.5)  # 0.5 * 1 + 0.5 * 0.25 = 0.625,  0.5 * 2 + 0.5 * 0.5 = 1.25
assert torch.allclose(target.weight, torch.tensor([[0.625, 1.25]])), f"weight {target.weight.tolist()}"
assert target.weight.grad_fn is None, "the update must not be recorded by autograd (torch.no_grad())"
polyak_update(target, source, 1.0)
assert torch.allclose(target.weight, source.weight) and torch.allclose(target.bias, source.bias), "tau = 1 copies"
print("polyak_update: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab5 as _lab5

_lab5.check_polyak(polyak_update, _lab5.load_pins())
### END HIDDEN TESTS
"""

TRAIN_TEXT = r"""
## 6. Train SAC with your functions

`SAC(env, target_fn=..., log_prob_fn=..., temperature_loss_fn=..., polyak_fn=...)` replaces
the library's own four functions with yours; everything else (the actor and the twin critics,
the replay buffer, the optimizers and the hyperparameters of `rlcourse/presets/sac.yaml` for
Pendulum-v1) is the course's implementation. The first 1,000 steps are uniformly random
actions that fill the buffer; after that SAC takes one gradient step per environment step.
5,000 steps (25 episodes) are enough to learn the swing-up, though not to perfect it. The cell
takes about a minute on a laptop, then evaluates the deterministic policy $\tanh(\mu(s))$ on 10 episodes.

The cell is graded. It sets every seed itself, so running it again gives the same agent.
Training writes a run folder under `runs/` (TensorBoard: `tensorboard --logdir runs`).
"""

TRAIN_TEST = r"""
# Graded (3 points): SAC on Pendulum-v1 with YOUR four functions.
import os
import random
import tempfile
import time
from pathlib import Path

SEED = 0
TOTAL_STEPS = 5_000    # environment steps
NUM_ENVS = 1
EVAL_EPISODES = 10

# Seeds are set here, in the graded cell, so the grader repeats exactly your run.
random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)

if os.environ.get("NBGRADER_EXECUTION"):  # set by the autograder: keep its folders clean
    run_dir = Path(tempfile.mkdtemp(prefix="lab5_sac_"))
else:
    run_dir = Path("runs") / time.strftime("lab5_sac_%Y%m%d-%H%M%S")

env = rlcourse.envs.make("Pendulum-v1", num_envs=NUM_ENVS, seed=SEED)
agent = SAC(env, seed=SEED, target_fn=sac_critic_target, log_prob_fn=squashed_gaussian_log_prob,
            temperature_loss_fn=temperature_loss, polyak_fn=polyak_update)
start = time.perf_counter()
agent.learn(TOTAL_STEPS, run_dir=run_dir, eval_episodes=0)
print(f"trained for {TOTAL_STEPS} steps in {time.perf_counter() - start:.0f} s; run folder: {run_dir}")

eval_env = rlcourse.envs.make("Pendulum-v1", num_envs=5, seed=10_000 + SEED)
result = rlcourse.evaluate(agent, eval_env, episodes=EVAL_EPISODES)
print(f"evaluation: mean return {result['episode_return_mean']:.1f} +- {result['episode_return_std']:.1f} "
      f"over {result['episodes']} episodes (0 is perfect, a random policy gets about -1100)")
assert result["episodes"] == EVAL_EPISODES
assert math.isfinite(result["episode_return_mean"])
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab5 as _lab5

_lab5.check_training(result, _lab5.load_pins(), seed=SEED, total_steps=TOTAL_STEPS, num_envs=NUM_ENVS,
                     eval_episodes=EVAL_EPISODES)
### END HIDDEN TESTS
"""

PLOT = r"""
# The learning curve (return of each training episode, with the policy's exploration noise)
# and the learned temperature alpha.
# (Saving learning_curve.png into the run folder switched matplotlib to its file backend;
# the magic below brings inline plots back.)
%matplotlib inline
import csv

with open(run_dir / "progress.csv", newline="") as f:
    rows = list(csv.DictReader(f))
curve = [(int(r["global_step"]), float(r["charts/episode_return"])) for r in rows if r.get("charts/episode_return")]
alpha = [(int(r["global_step"]), float(r["charts/alpha"])) for r in rows if r.get("charts/alpha")]

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax.plot(*zip(*curve), label="training episodes")
ax.axhline(result["episode_return_mean"], color="tab:green", linestyle="--", label="final evaluation")
ax.set_xlabel("environment steps")
ax.set_ylabel("episode return")
ax.set_title("SAC on Pendulum-v1 with your functions")
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
if alpha:
    ax2.plot(*zip(*alpha))
ax2.set_yscale("log")
ax2.set_xlabel("environment steps")
ax2.set_title("temperature alpha")
ax2.grid(alpha=0.3)
plt.tight_layout()
plt.show()
"""

REFLECT = r"""
## 7. To think about (not graded)

* Train with a fixed temperature, `SAC(..., autotune_alpha=False, init_alpha=0.01)` and with
  `init_alpha=1.0`. How do the learning curves and the final policies differ?
* Replace `min` by the mean of the two critics in your target. Plot `losses/q_values` from
  `progress.csv`: what happens to the value estimates?
* Plot `charts/entropy` next to alpha. Where does the policy's entropy settle, and why there?
* With `tau = 1` (the target critics are the critics), does SAC still learn Pendulum? Why is a
  slowly moving target more important for off-policy methods than for PPO?
"""


def build() -> nbformat.NotebookNode:
    return notebook([
        md("header", HEADER),
        code("setup", SETUP, locked=True),
        md("loop_text", LOOP_TEXT),
        md("target_text", TARGET_TEXT),
        code("sac_critic_target", TARGET_SOLUTION, solution=True),
        code("test_critic_target", TARGET_TEST, grade=True, locked=True, points=2),
        md("log_prob_text", LOG_PROB_TEXT),
        code("squashed_gaussian_log_prob", LOG_PROB_SOLUTION, solution=True),
        code("test_log_prob", LOG_PROB_TEST, grade=True, locked=True, points=2),
        md("temperature_text", TEMPERATURE_TEXT),
        code("temperature_loss", TEMPERATURE_SOLUTION, solution=True),
        code("test_temperature", TEMPERATURE_TEST, grade=True, locked=True, points=2),
        md("polyak_text", POLYAK_TEXT),
        code("polyak_update", POLYAK_SOLUTION, solution=True),
        code("test_polyak", POLYAK_TEST, grade=True, locked=True, points=1),
        md("train_text", TRAIN_TEXT),
        code("test_training", TRAIN_TEST, grade=True, locked=True, points=3),
        code("learning_curve", PLOT, locked=True),
        md("reflect_text", REFLECT),
    ])


def main() -> None:
    write(build(), HERE / "lab5_sac.ipynb")


if __name__ == "__main__":
    main()
