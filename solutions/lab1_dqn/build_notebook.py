"""Write ``lab1_dqn.ipynb``, the nbgrader source notebook of lab 1, from the cells below.

The committed notebook is the source of truth; this script is a convenient way to edit it
as plain Python (run it, then ``make labs`` to regenerate the student version and
``rlcourse pin lab1_dqn`` if the training cell changed). nbgrader does not copy
``build_*.py`` into the student release (``CourseDirectory.ignore`` in
``autograder/nbgrader_config.py``).

    python solutions/lab1_dqn/build_notebook.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from rlcourse.grading.authoring import code, md, notebook, write

HERE = Path(__file__).resolve().parent


HEADER = r"""
# Lab 1: Deep Q-Networks (DQN)

In this lab you write the pieces of DQN that decide what it learns and how it explores, plug
them into the course's DQN implementation (`rlcourse.DQN`) and train an agent that balances
a pole on a cart.

1. **Exploration**: `epsilon_greedy(q_values, epsilon, generator)`, one action per environment.
2. **The TD targets**: `dqn_target(...)` and `double_dqn_target(...)`.
3. **The Huber loss**: `huber_loss(predictions, targets, delta)`.
4. **Training**: DQN on `CartPole-v1` for 20,000 environment steps with *your* functions,
   an evaluation of the greedy policy, and its learning curve.

Write code only between the `# YOUR CODE HERE` marks (replace `raise NotImplementedError()`).
Every other code cell is locked; if you break or delete one, the grader restores it.

**Points (10 in total)**

| cell | points | what is checked |
|---|---|---|
| `test_epsilon_greedy` | 2 | the visible checks below, and hidden ones: greedy at epsilon 0, random numbers drawn from the `generator` argument only, and the action frequencies on 20,000 rows for several epsilon (each row explores on its own, uniformly over *all* actions) |
| `test_td_targets` | 3 | the visible checks below, and hidden ones: both targets against the reference on fixed minibatches with terminal and non-terminal transitions, for several gamma |
| `test_huber` | 2 | the visible checks below, and hidden ones: value *and gradient* of your loss against the reference, with TD errors on both sides of delta, for several delta |
| `test_training` | 3 | your functions train DQN on CartPole-v1 (seed 0, 20k steps, under a minute); the greedy policy's mean return over 20 evaluation episodes must reach the pass mark pinned in `autograder/pinned_metrics.json`. The pass mark is set so that a correct solution passes on any seed. |

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

import rlcourse
from rlcourse.algos.dqn import DQN

# Warnings go to stderr. The grader filters out warnings and progress bars, but any other
# stderr output in a test cell counts as a failure, so quiet them here anyway.
warnings.filterwarnings("ignore")
torch.set_printoptions(precision=4, sci_mode=False)
# A small MLP trains fastest on one thread, and one thread makes runs repeatable.
torch.set_num_threads(1)
"""

LOOP_TEXT = r"""
## 1. Q-learning with a neural network

The action-value function $Q^\pi(s, a)$ is the expected discounted return after taking action
$a$ in state $s$ and following $\pi$ afterwards. The optimal one satisfies the **Bellman
optimality equation**

$$Q^*(s, a) = \mathbb{E}\big[\,r + \gamma \max_{a'} Q^*(s', a')\,\big],$$

and the greedy policy $\pi(s) = \arg\max_a Q^*(s, a)$ is optimal. DQN (Mnih et al., 2015) fits a
network $Q_\theta$ to this equation by regression on transitions $(s, a, r, s', d)$ it has seen:

```
for every step:
    a_t = epsilon_greedy(Q_theta(s_t))            # <- your epsilon_greedy: (N,) actions, one per env
    s_t+1, r_t, terminated, truncated = env.step(a_t)
    replay_buffer.add(s_t, a_t, r_t, s_t+1, done = terminated)
    every few steps, for a batch sampled from the buffer:
        y = target(r, Q_target(s'), Q_theta(s'), done)   # <- your dqn_target / double_dqn_target
        loss = huber_loss(Q_theta(s)[a], y)             # <- your huber_loss
        gradient step on theta; now and then Q_target <- Q_theta
```

Two stabilizers make this work: the **replay buffer** (a batch mixes transitions from many
episodes, so consecutive samples are not correlated) and the **target network** $Q_{\theta^-}$, a
copy of $Q_\theta$ that is refreshed only every so often, so the regression target does not move
with every gradient step.

`rlcourse` steps $N$ environments side by side; every function in this lab works on a batch.
"""

EPSILON_TEXT = r"""
## 2. Exploration: epsilon-greedy

An agent that always takes the action it currently believes best never finds out that another
one is better. Epsilon-greedy explores in the simplest way: **in each environment
independently**, with probability $\epsilon$ take an action drawn uniformly from *all* actions
(the greedy one included), otherwise take $\arg\max_a Q(s, a)$. DQN starts with $\epsilon = 1$
and lowers it over the first part of training (the schedule is the library's).

Implement `epsilon_greedy` for a batch of Q-values of shape `(N, num_actions)`:

* return an `int64` tensor of shape `(N,)`;
* draw **every** random number from `generator` (pass `generator=generator` to `torch.rand` /
  `torch.randint`), never from the global random state: the same seed must give the same actions;
* vectorize (no Python loop over the rows).
"""

EPSILON_SOLUTION = r'''
def epsilon_greedy(q_values, epsilon, generator):
    """Epsilon-greedy actions for a batch of states.

    Args:
        q_values:  (N, num_actions) Q-values, one row per environment.
        epsilon:   probability of a uniformly random action, in [0, 1].
        generator: a torch.Generator, the only source of randomness.

    Returns:
        (N,) int64 actions: per row, with probability epsilon a uniformly random action
        (any of the num_actions, the greedy one included), else argmax_a q_values[row, a].
    """
    ### BEGIN SOLUTION
    n, num_actions = q_values.shape
    greedy = q_values.argmax(dim=1)
    explore = torch.rand(n, generator=generator) < epsilon
    random_actions = torch.randint(0, num_actions, (n,), generator=generator)
    actions = torch.where(explore, random_actions, greedy)
    ### END SOLUTION
    return actions
'''

EPSILON_TEST = r"""
# Visible checks: run this cell to test your epsilon_greedy. (2 points, with hidden checks.)

q = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]])
a = epsilon_greedy(q, 0.0, torch.Generator().manual_seed(0))
assert isinstance(a, torch.Tensor) and a.shape == (2,), "one action per row: a tensor of shape (N,)"
assert a.dtype == torch.int64, f"actions must be int64 (long), got {a.dtype}"
assert a.tolist() == [1, 0], f"epsilon = 0 must be greedy: got {a.tolist()}"

# 6,000 rows whose greedy action is 2.
q = torch.zeros(6000, 3)
q[:, 2] = 1.0
# epsilon = 1: uniformly random over all three actions, the greedy one included.
a = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0))
freq = torch.bincount(a, minlength=3).float() / len(a)
assert (freq - 1 / 3).abs().max() < 0.03, f"epsilon = 1: action frequencies {freq.tolist()}"
# epsilon = 0.4: the greedy action with probability 0.6 + 0.4 / 3 = 0.733.
a = epsilon_greedy(q, 0.4, torch.Generator().manual_seed(1))
p_greedy = (a == 2).float().mean().item()
assert abs(p_greedy - (0.6 + 0.4 / 3)) < 0.03, f"epsilon = 0.4: greedy action in {p_greedy:.3f} of the rows"
# The generator is the only source of randomness: same seed, same actions.
b = epsilon_greedy(q, 0.4, torch.Generator().manual_seed(1))
assert torch.equal(a, b), "the same generator seed must give the same actions"
print("epsilon_greedy: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab1 as _lab1

_lab1.check_epsilon_greedy(epsilon_greedy, _lab1.load_pins())
### END HIDDEN TESTS
"""

TARGET_TEXT = r"""
## 3. The TD target, plain and double

For a sampled transition $(s, a, r, s', d)$ the regression target of $Q_\theta(s, a)$ is

$$y = r + \gamma\,(1 - d)\,\max_{a'} Q_{\theta^-}(s', a') \qquad \text{(DQN)}.$$

* **Terminated vs truncated.** $d = 1$ only if $s'$ is *terminal* (the pole fell): no future
  reward follows, and the target is $r$ alone. CartPole also stops every episode after 500 steps;
  that *time-out* says nothing about the state, and the return would have continued. The replay
  buffer therefore stores `done = terminated` (a time-out has `done = 0`, and its `s'` is the
  last observation of the episode), so truncated transitions bootstrap like any other. Your
  functions just use `dones` as given.
* **Double DQN.** The max in the target uses the same noisy estimate to *pick* the best next
  action and to *evaluate* it, so it is biased upwards (the max of noisy estimates is larger
  than the max of the true values). Double DQN (van Hasselt et al., 2016) picks with the online
  network and evaluates with the target network:

$$y = r + \gamma\,(1 - d)\,Q_{\theta^-}\big(s', \arg\max_{a'} Q_\theta(s', a')\big).$$

Implement both, vectorized over the batch. The inputs are `rewards` and `dones` of shape `(B,)`
(floats, `dones` is 0.0 or 1.0), and Q-values of the next states of shape `(B, num_actions)`;
return `(B,)` targets. (`torch.gather` or indexing with `torch.arange(B)` picks one entry per row.)
The training below uses `double_dqn_target`.
"""

DQN_TARGET_SOLUTION = r'''
def dqn_target(rewards, next_q_target, dones, gamma):
    """The DQN target y = r + gamma * (1 - done) * max_a' Q_target(s', a').

    Args:
        rewards:       (B,) rewards.
        next_q_target: (B, num_actions) target-network Q-values of the next states.
        dones:         (B,) 1.0 where s' is terminal (a time-out is stored as 0.0), else 0.0.
        gamma:         discount factor.

    Returns:
        (B,) targets.
    """
    ### BEGIN SOLUTION
    y = rewards + gamma * (1.0 - dones) * next_q_target.max(dim=1).values
    ### END SOLUTION
    return y
'''

DOUBLE_TARGET_SOLUTION = r'''
def double_dqn_target(rewards, next_q_online, next_q_target, dones, gamma):
    """The double-DQN target y = r + gamma * (1 - done) * Q_target(s', argmax_a' Q_online(s', a')).

    Args:
        rewards:       (B,) rewards.
        next_q_online: (B, num_actions) online-network Q-values of the next states (they pick a').
        next_q_target: (B, num_actions) target-network Q-values of the next states (they evaluate a').
        dones:         (B,) 1.0 where s' is terminal (a time-out is stored as 0.0), else 0.0.
        gamma:         discount factor.

    Returns:
        (B,) targets.
    """
    ### BEGIN SOLUTION
    best = next_q_online.argmax(dim=1, keepdim=True)
    y = rewards + gamma * (1.0 - dones) * next_q_target.gather(1, best).squeeze(1)
    ### END SOLUTION
    return y
'''

TARGET_TEST = r"""
# Visible checks: run this cell to test dqn_target and double_dqn_target. (3 points, with hidden checks.)

# Three transitions, gamma = 0.9: 0 running, 1 a time-out (stored with done = 0), 2 terminal.
rewards = torch.tensor([1.0, 0.5, -1.0])
dones = torch.tensor([0.0, 0.0, 1.0])
next_q_target = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
next_q_online = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])

y = dqn_target(rewards, next_q_target, dones, 0.9)
assert isinstance(y, torch.Tensor) and y.shape == (3,), "dqn_target must return one target per transition, shape (B,)"
# y0 = 1 + 0.9 * max(1, 2) = 2.8;  y1 = 0.5 + 0.9 * 3 = 3.2 (the time-out bootstraps);  y2 = -1 (terminal)
assert torch.allclose(y, torch.tensor([2.8, 3.2, -1.0])), f"dqn_target: got {y.tolist()}"

y = double_dqn_target(rewards, next_q_online, next_q_target, dones, 0.9)
assert isinstance(y, torch.Tensor) and y.shape == (3,), "double_dqn_target must return shape (B,)"
# The online net picks actions [0, 1, 0]; the target net evaluates them:
# y0 = 1 + 0.9 * 1 = 1.9;  y1 = 0.5 + 0.9 * 0 = 0.5;  y2 = -1 (terminal)
assert torch.allclose(y, torch.tensor([1.9, 0.5, -1.0])), f"double_dqn_target: got {y.tolist()}"
print("dqn_target, double_dqn_target: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab1 as _lab1

_lab1.check_td_targets(dqn_target, double_dqn_target, _lab1.load_pins())
### END HIDDEN TESTS
"""

HUBER_TEXT = r"""
## 4. The Huber loss

Regressing $Q_\theta(s, a)$ on $y$ with the squared error gives a gradient proportional to the
TD error $x = Q_\theta(s, a) - y$. Early in training, and whenever the target network is
refreshed, a few transitions have huge TD errors, and their gradients swamp everything else.
The **Huber loss** is quadratic near zero and linear beyond $\delta$:

$$\ell_\delta(x) = \begin{cases} \tfrac12 x^2 & \text{if } |x| \le \delta, \\ \delta\,\big(|x| - \tfrac12 \delta\big) & \text{otherwise,} \end{cases}
\qquad \ell'_\delta(x) = \operatorname{clip}(x, -\delta, \delta).$$

The two pieces meet with the same value and the same slope at $|x| = \delta$, and the
gradient of any single transition is at most $\delta$ in size. (With $\delta = 1$ this is
PyTorch's `smooth_l1_loss`; DQN uses $\delta = 1$.)

Implement `huber_loss` with torch operations (it must stay differentiable with respect to
`predictions`) and return the **mean** over the batch, a 0-dim tensor. Use the formula above,
not `torch.nn.functional`'s ready-made losses.
"""

HUBER_SOLUTION = r'''
def huber_loss(predictions, targets, delta):
    """Mean Huber loss of the TD errors x = predictions - targets.

    Args:
        predictions: (B,) Q(s, a) of the sampled transitions (requires grad).
        targets:     (B,) TD targets.
        delta:       where the loss turns from quadratic to linear.

    Returns:
        A 0-dim tensor: mean over the batch of 0.5 x^2 (|x| <= delta) or delta (|x| - delta / 2).
    """
    ### BEGIN SOLUTION
    x = predictions - targets
    abs_x = x.abs()
    quadratic = 0.5 * x ** 2
    linear = delta * (abs_x - 0.5 * delta)
    loss = torch.where(abs_x <= delta, quadratic, linear).mean()
    ### END SOLUTION
    return loss
'''

HUBER_TEST = r"""
# Visible checks: run this cell to test your huber_loss. (2 points, with hidden checks.)

targets = torch.zeros(3)
predictions = torch.tensor([0.5, -2.0, 3.0], requires_grad=True)
loss = huber_loss(predictions, targets, 1.0)
assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "the loss must be a 0-dim tensor (the mean)"
# delta = 1: 0.5 * 0.5^2 = 0.125;  1 * (2 - 0.5) = 1.5;  1 * (3 - 0.5) = 2.5;  mean = 4.125 / 3
assert torch.isclose(loss, torch.tensor(4.125 / 3)), f"delta = 1: got {loss.item():.4f}"
loss.backward()
assert predictions.grad is not None, "the loss must be differentiable with respect to predictions"
# The gradient is clip(x, -delta, delta) / B.
assert torch.allclose(predictions.grad, torch.tensor([0.5, -1.0, 1.0]) / 3), f"gradient {predictions.grad.tolist()}"
# delta = 2: 0.125;  0.5 * 2^2 = 2 (|x| = delta: both branches agree);  2 * (3 - 1) = 4;  mean = 6.125 / 3
loss = huber_loss(predictions.detach(), targets, 2.0)
assert torch.isclose(loss, torch.tensor(6.125 / 3)), f"delta = 2: got {loss.item():.4f}"
print("huber_loss: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab1 as _lab1

_lab1.check_huber(huber_loss, _lab1.load_pins())
### END HIDDEN TESTS
"""

TRAIN_TEXT = r"""
## 5. Train DQN with your functions

`DQN(env, epsilon_fn=..., target_fn=..., loss_fn=...)` replaces the library's own functions
with yours; everything else (the Q-network, the replay buffer, the epsilon schedule, target
network copies, the optimizer and the hyperparameters of `rlcourse/presets/dqn.yaml` for
CartPole-v1) is the course's implementation. To keep the run short, the Q-network has two
hidden layers of 64 units (the preset's 256 solve the task in 100k steps) and training stops
after 20,000 steps, far from a perfect pole-balancer. Over such a short run, batches of 128
and a step size of 1e-3 learn more steadily than the preset's 64 and 2.3e-3, which are tuned
for its 100k-step runs. The cell takes well under a minute on a
laptop and evaluates the greedy policy on 20 episodes. A CartPole episode ends after at most
500 steps; a random policy gets about 20.

The cell is graded. It sets every seed itself, so running it again gives the same agent.
Training writes a run folder under `runs/` (TensorBoard: `tensorboard --logdir runs`).
"""

TRAIN_TEST = r"""
# Graded (3 points): DQN on CartPole-v1 with YOUR epsilon_greedy, double_dqn_target and huber_loss.
import os
import random
import tempfile
import time
from pathlib import Path

SEED = 0
TOTAL_STEPS = 20_000   # environment steps, summed over the envs
NUM_ENVS = 4
HIDDEN = (64, 64)      # Q-network hidden layers (the preset's are 256 units wide)
BATCH_SIZE = 128       # transitions per gradient step (the preset's: 64)
LEARNING_RATE = 1e-3   # Adam step size (the preset's: 2.3e-3)
EVAL_EPISODES = 20

# Seeds are set here, in the graded cell, so the grader repeats exactly your run.
random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)

if os.environ.get("NBGRADER_EXECUTION"):  # set by the autograder: keep its folders clean
    run_dir = Path(tempfile.mkdtemp(prefix="lab1_dqn_"))
else:
    run_dir = Path("runs") / time.strftime("lab1_dqn_%Y%m%d-%H%M%S")

env = rlcourse.envs.make("CartPole-v1", num_envs=NUM_ENVS, seed=SEED)
agent = DQN(env, seed=SEED, hidden=HIDDEN, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
            epsilon_fn=epsilon_greedy, target_fn=double_dqn_target, loss_fn=huber_loss)
start = time.perf_counter()
agent.learn(TOTAL_STEPS, run_dir=run_dir, eval_episodes=0)
print(f"trained for {TOTAL_STEPS} steps in {time.perf_counter() - start:.0f} s; run folder: {run_dir}")

eval_env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=10_000 + SEED)
result = rlcourse.evaluate(agent, eval_env, episodes=EVAL_EPISODES)
print(f"evaluation: mean return {result['episode_return_mean']:.1f} +- {result['episode_return_std']:.1f} "
      f"over {result['episodes']} episodes (500 is the maximum)")
assert result["episodes"] == EVAL_EPISODES
assert math.isfinite(result["episode_return_mean"])
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab1 as _lab1

_lab1.check_training(result, _lab1.load_pins(), seed=SEED, total_steps=TOTAL_STEPS, num_envs=NUM_ENVS,
                     eval_episodes=EVAL_EPISODES, hyperparameters={"hidden": HIDDEN, "batch_size": BATCH_SIZE,
                                      "learning_rate": LEARNING_RATE})
### END HIDDEN TESTS
"""

PLOT = r"""
# The learning curve: mean return of the training episodes that finished in each logged window
# (they include the exploration of epsilon-greedy), and the epsilon schedule.
# (Saving learning_curve.png into the run folder switched matplotlib to its file backend;
# the magic below brings inline plots back.)
%matplotlib inline
import csv

with open(run_dir / "progress.csv", newline="") as f:
    rows = list(csv.DictReader(f))
curve = [(int(r["global_step"]), float(r["charts/episode_return"])) for r in rows if r.get("charts/episode_return")]
eps = [(int(r["global_step"]), float(r["charts/epsilon"])) for r in rows if r.get("charts/epsilon")]

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(*zip(*curve), label="training episodes")
ax.axhline(result["episode_return_mean"], color="tab:green", linestyle="--", label="final greedy evaluation")
ax.set_xlabel("environment steps")
ax.set_ylabel("episode return")
ax.set_title("DQN on CartPole-v1 with your epsilon-greedy, double-DQN target and Huber loss")
ax.grid(alpha=0.3)
if eps:
    ax2 = ax.twinx()
    ax2.plot(*zip(*eps), color="tab:gray", alpha=0.6, label="epsilon")
    ax2.set_ylabel("epsilon")
    ax2.set_ylim(0, 1.05)
ax.legend(loc="upper left")
plt.show()
"""

REFLECT = r"""
## 6. To think about (not graded)

* Train again with `DQN(..., double_dqn=False, target_fn=dqn_target)` and plot `losses/q_values`
  from `progress.csv` for both runs. The true value of a CartPole state is at most
  $1 / (1 - \gamma) = 100$: which run overestimates more?
* Replace your Huber loss by the squared error (`lambda p, t, d: 0.5 * ((p - t) ** 2).mean()`).
  What happens to the learning curve just after each target-network copy?
* What would go wrong if the buffer stored `done = terminated or truncated`? Think of the value
  the network would learn for a state at step 499.
* DQN's greedy return on CartPole often swings between 500 and much less long after it first
  reaches 500. Which parts of the algorithm could cause that?
"""


def build() -> nbformat.NotebookNode:
    return notebook([
        md("header", HEADER),
        code("setup", SETUP, locked=True),
        md("loop_text", LOOP_TEXT),
        md("epsilon_text", EPSILON_TEXT),
        code("epsilon_greedy", EPSILON_SOLUTION, solution=True),
        code("test_epsilon_greedy", EPSILON_TEST, grade=True, locked=True, points=2),
        md("target_text", TARGET_TEXT),
        code("dqn_target", DQN_TARGET_SOLUTION, solution=True),
        code("double_dqn_target", DOUBLE_TARGET_SOLUTION, solution=True),
        code("test_td_targets", TARGET_TEST, grade=True, locked=True, points=3),
        md("huber_text", HUBER_TEXT),
        code("huber_loss", HUBER_SOLUTION, solution=True),
        code("test_huber", HUBER_TEST, grade=True, locked=True, points=2),
        md("train_text", TRAIN_TEXT),
        code("test_training", TRAIN_TEST, grade=True, locked=True, points=3),
        code("learning_curve", PLOT, locked=True),
        md("reflect_text", REFLECT),
    ])


def main() -> None:
    write(build(), HERE / "lab1_dqn.ipynb")


if __name__ == "__main__":
    main()
