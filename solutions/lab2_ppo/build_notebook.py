"""Write ``lab2_ppo.ipynb``, the nbgrader source notebook of lab 2, from the cells below.

The committed notebook is the source of truth; this script is a convenient way to edit it
as plain Python (run it, then ``make labs`` to regenerate the student version and
``make pin`` if the training cell changed). nbgrader does not copy ``build_*.py`` into the
student release (``CourseDirectory.ignore`` in ``autograder/nbgrader_config.py``).

    python solutions/lab2_ppo/build_notebook.py
"""

from __future__ import annotations

from pathlib import Path

from rlcourse.grading.authoring import code, md, notebook, write

HERE = Path(__file__).resolve().parent


HEADER = r"""
# Lab 2: Proximal Policy Optimization (PPO)

In this lab you write the two formulas at the heart of PPO, plug them into the course's PPO
implementation (`rlcourse.PPO`) and train an agent that balances a pole on a cart.

1. **Generalized Advantage Estimation**: `compute_gae(rewards, values, dones, last_values, gamma, lam)`.
2. **The clipped surrogate loss**: `clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_eps)`.
3. **Training**: PPO on `CartPole-v1` for 100,000 environment steps with *your* two functions,
   an evaluation of the trained policy, and its learning curve.

Write code only between the `# YOUR CODE HERE` marks (replace `raise NotImplementedError()`).
Every other code cell is locked; if you break or delete one, the grader restores it.

**Points (10 in total)**

| cell | points | what is checked |
|---|---|---|
| `test_gae` | 3 | the visible checks below, and hidden ones: your `compute_gae` against the reference on fixed rollouts with an episode that terminates and one that is cut by the time limit in the middle, for several (gamma, lambda) |
| `test_surrogate` | 3 | the visible checks below, and hidden ones: value *and gradient* of your loss against the reference, with probability ratios inside and outside the clip range |
| `test_training` | 4 | your functions train PPO on CartPole-v1 (seed 0, 100k steps, ~1-2 minutes); the deterministic policy's mean return over 20 evaluation episodes must reach the pass mark pinned in `autograder/pinned_metrics.json`. The pass mark is set so that a correct solution passes on any seed. |

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
from rlcourse.algos.ppo import PPO

# Warnings go to stderr. The grader filters out warnings and progress bars, but any other
# stderr output in a test cell counts as a failure, so quiet them here anyway.
warnings.filterwarnings("ignore")
torch.set_printoptions(precision=4, sci_mode=False)
"""

LOOP_TEXT = r"""
## 1. The loop, the return and the advantage

An agent observes a state $s_t$, samples an action $a_t \sim \pi_\theta(\cdot \mid s_t)$, and the
environment answers with a reward $r_t$ and the next state. `rlcourse` runs $N$ copies of the
environment side by side, so one *rollout* of $T$ steps gives tensors of shape `(T, N)`:

```
for t in range(T):                       # one rollout
    a_t            = policy(s_t)           # (N,) actions, log pi(a_t|s_t) and V(s_t) are stored
    s_t+1, r_t, done_t = env.step(a_t)     # a finished env restarts in the same step
compute advantages A_t and returns R_t   # <- your compute_gae
update the policy for a few epochs         # <- your clipped_surrogate_loss
```

The policy gradient pushes up the log-probability of an action in proportion to how much
better it was than expected. "Expected" is the critic's value $V(s_t)$, and "how much better"
is the **advantage** $A_t \approx Q(s_t, a_t) - V(s_t)$. Subtracting $V$ does not bias the
gradient, but it removes most of its variance: in CartPole every step earns $+1$, and only the
*difference* between actions tells the agent which one helped.
"""

GAE_TEXT = r"""
## 2. Generalized Advantage Estimation

The one-step **TD error** is an advantage estimate that looks one step ahead and trusts the
critic for the rest:

$$\delta_t = r_t + \gamma\,(1 - d_t)\,V(s_{t+1}) - V(s_t),$$

where $d_t = 1$ if the episode ended after step $t$ (then there is no next state to bootstrap from).
GAE (Schulman et al., 2016) averages the $k$-step estimates with weights $\lambda^{k}$, which
collapses into a backward recursion over the rollout:

$$\hat A_t = \delta_t + \gamma \lambda\,(1 - d_t)\,\hat A_{t+1}, \qquad \hat A_T = 0 .$$

* **The lambda trade-off.** $\lambda = 0$ gives $\hat A_t = \delta_t$: low variance, but biased
  whenever the critic is wrong. $\lambda = 1$ gives the discounted sum of actual rewards minus
  $V(s_t)$ (Monte Carlo): unbiased, but it carries the noise of every later reward.
  Values around 0.9-0.97 are the usual compromise; the CartPole preset uses 0.8.
* **Bootstrapping at the end of the rollout.** The rollout stops after $T$ steps in the
  middle of most episodes. For the last step, $V(s_{t+1})$ is `last_values`, the critic's value of
  the observation that follows the rollout.
* **Time-outs are not failures.** CartPole cuts every episode at 500 steps. A pole that is
  still up at step 500 did nothing wrong; treating that step like a fall would teach the critic
  that late states are worth nothing. PPO in `rlcourse` therefore adds the value of the
  state the time limit cut off to the reward of that step, $r_t \leftarrow r_t + \gamma V(s_{\text{final}})$,
  and then marks the step as done like any other episode end. Your function needs no special
  case: `rewards` already hold that correction, and `dones` is 1 for both kinds of ending.

The **returns** $\hat R_t = \hat A_t + V(s_t)$ are the critic's regression targets.

Implement `compute_gae` with a loop that runs backwards over $t$ (vectorized over the $N$ envs).
Do not modify the input tensors.
"""

GAE_SOLUTION = r'''
def compute_gae(rewards, values, dones, last_values, gamma, lam):
    """Generalized Advantage Estimation.

    Args:
        rewards:     (T, N) rewards r_t (a time-out step already holds r_t + gamma * V(final obs)).
        values:      (T, N) critic values V(s_t).
        dones:       (T, N) 1.0 where the episode ended after step t (terminated or timed out), else 0.0.
        last_values: (N,) value V(s_T) of the observation after the last step.
        gamma:       discount factor.
        lam:         GAE lambda.

    Returns:
        (advantages, returns), both of shape (T, N), with returns = advantages + values.
    """
    ### BEGIN SOLUTION
    T = rewards.shape[0]
    not_done = 1.0 - dones.float()
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * not_done[t] * next_values - values[t]
        next_advantage = delta + gamma * lam * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    returns = advantages + values
    ### END SOLUTION
    return advantages, returns
'''

GAE_TEST = r"""
# Visible checks: run this cell to test your compute_gae. (3 points, with hidden checks.)

# A hand-computed rollout: T = 3 steps, one env, the episode ends after step 1.
rewards = torch.tensor([[1.0], [1.0], [1.0]])
values = torch.tensor([[0.5], [0.5], [0.5]])
dones = torch.tensor([[0.0], [1.0], [0.0]])
last_values = torch.tensor([2.0])
adv, ret = compute_gae(rewards, values, dones, last_values, gamma=0.9, lam=0.5)
assert adv.shape == (3, 1) and ret.shape == (3, 1), "advantages and returns must have shape (T, N)"
# t=2: delta = 1 + 0.9 * 2.0 - 0.5 = 2.3 (bootstrapped from last_values)
# t=1: the episode ends: delta = 1 - 0.5 = 0.5, nothing flows back from t=2
# t=0: delta = 1 + 0.9 * 0.5 - 0.5 = 0.95; A = 0.95 + 0.9 * 0.5 * 0.5 = 1.175
assert torch.allclose(adv, torch.tensor([[1.175], [0.5], [2.3]])), f"advantages {adv.flatten().tolist()}"
assert torch.allclose(ret, adv + values), "returns must equal advantages + values"

# lambda = 1, gamma = 1, no episode end: A_t = (sum of the rewards from t on) + V(s_T) - V(s_t).
adv, _ = compute_gae(torch.ones(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), torch.tensor([10.0, 0.0]), 1.0, 1.0)
assert torch.allclose(adv[:, 0], torch.tensor([14.0, 13.0, 12.0, 11.0])), f"lambda=1: {adv[:, 0].tolist()}"
assert torch.allclose(adv[:, 1], torch.tensor([4.0, 3.0, 2.0, 1.0])), f"lambda=1: {adv[:, 1].tolist()}"
# lambda = 0: the advantage is the one-step TD error.
adv, _ = compute_gae(torch.ones(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), torch.tensor([10.0, 0.0]), 1.0, 0.0)
assert torch.allclose(adv[:, 0], torch.tensor([1.0, 1.0, 1.0, 11.0])), f"lambda=0: {adv[:, 0].tolist()}"
print("compute_gae: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab2 as _lab2

_lab2.check_gae(compute_gae, _lab2.load_pins())
### END HIDDEN TESTS
"""

PPO_TEXT = r"""
## 3. PPO's clipped surrogate objective

After a rollout, PPO improves the policy for several epochs on the same data. The data were
collected by the *old* policy $\pi_{\text{old}}$, so each sample is re-weighted by the probability ratio

$$\rho_t(\theta) = \frac{\pi_\theta(a_t \mid s_t)}{\pi_{\text{old}}(a_t \mid s_t)} = \exp\big(\log \pi_\theta(a_t \mid s_t) - \log \pi_{\text{old}}(a_t \mid s_t)\big).$$

Maximizing $\rho_t \hat A_t$ alone would move the policy as far as the (noisy) advantages
suggest, and one bad step can destroy a good policy. PPO (Schulman et al., 2017) maximizes a
pessimistic version instead:

$$L^{\text{CLIP}}(\theta) = \mathbb{E}_t\Big[\min\big(\rho_t \hat A_t,\ \operatorname{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\,\hat A_t\big)\Big].$$

* For a good action ($\hat A_t > 0$) the objective stops growing once $\rho_t > 1 + \epsilon$;
  for a bad one ($\hat A_t < 0$) once $\rho_t < 1 - \epsilon$. Beyond those points the gradient of
  that sample is zero, so one update cannot move the policy far from the one that collected the data.
* The minimum keeps the *unclipped* term when it is worse: a change in the wrong direction is
  always penalized in full.

Optimizers minimize, so return the **negated mean**: `loss = -mean(min(...))`, a 0-dim tensor
that stays differentiable with respect to `log_probs` (use torch operations only).
"""

SURROGATE_SOLUTION = r'''
def clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_eps):
    """PPO's clipped surrogate loss (to be minimized).

    Args:
        log_probs:     (B,) log pi_theta(a|s) under the current policy (requires grad).
        old_log_probs: (B,) log pi_old(a|s) recorded when the actions were sampled.
        advantages:    (B,) advantage estimates.
        clip_eps:      the clip range epsilon.

    Returns:
        A scalar tensor: -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)).
    """
    ### BEGIN SOLUTION
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    ### END SOLUTION
    return loss
'''

SURROGATE_TEST = r"""
# Visible checks: run this cell to test your clipped_surrogate_loss. (3 points, with hidden checks.)

# Same policy (ratio 1): nothing is clipped and the loss is -mean(A).
lp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
A = torch.tensor([1.0, -2.0, 0.5])
loss = clipped_surrogate_loss(lp, lp.clone(), A, 0.2)
assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "the loss must be a 0-dim tensor"
assert torch.isclose(loss, -A.mean()), f"ratio 1: got {loss.item():.4f}"

# Hand-computed: ratios 1.5, 0.5, 1.1 with eps = 0.2.
# A = +1, ratio 1.5 -> min(1.5, 1.2) = 1.2 (clipped); A = +1, ratio 0.5 -> min(0.5, 0.8) = 0.5;
# A = -2, ratio 1.1 -> -2.2 (inside the range). loss = -(1.2 + 0.5 - 2.2) / 3 = 0.5 / 3
log_probs = torch.log(torch.tensor([1.5, 0.5, 1.1])).requires_grad_(True)
loss = clipped_surrogate_loss(log_probs, torch.zeros(3), torch.tensor([1.0, 1.0, -2.0]), 0.2)
assert torch.isclose(loss, torch.tensor(0.5 / 3)), f"hand-computed case: got {loss.item():.4f}"
# The clipped sample (ratio 1.5, A > 0) must not receive any gradient.
loss.backward()
assert log_probs.grad is not None, "the loss must be differentiable with respect to log_probs"
assert log_probs.grad[0].abs() < 1e-7, "a sample clipped by the min must have zero gradient"
print("clipped_surrogate_loss: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab2 as _lab2

_lab2.check_surrogate(clipped_surrogate_loss, _lab2.load_pins())
### END HIDDEN TESTS
"""

TRAIN_TEXT = r"""
## 4. Train PPO with your functions

`PPO(env, gae_fn=..., surrogate_fn=...)` replaces the library's own two functions with yours;
everything else (networks, observation normalization, rollout storage, minibatches, the
optimizer, the hyperparameters of `rlcourse/presets/ppo.yaml` for CartPole-v1) is the
course's implementation. The next cell trains for 100,000 steps (8 environments), which takes
one to two minutes on a laptop, then evaluates the deterministic policy on 20 episodes.
A CartPole episode ends after at most 500 steps, so 500 is the best possible return.

The cell is graded. It sets every seed itself, so running it again gives the same agent.
Training writes a run folder under `runs/` (TensorBoard: `tensorboard --logdir runs`).
"""

TRAIN_TEST = r"""
# Graded (4 points): PPO on CartPole-v1 with YOUR compute_gae and clipped_surrogate_loss.
import os
import random
import tempfile
import time
from pathlib import Path

SEED = 0
TOTAL_STEPS = 100_000   # environment steps, summed over the envs
NUM_ENVS = 8
EVAL_EPISODES = 20

# Seeds are set here, in the graded cell, so the grader repeats exactly your run.
random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)  # a small MLP trains fastest on one thread; results do not depend on the core count

if os.environ.get("NBGRADER_EXECUTION"):  # set by the autograder: keep its folders clean
    run_dir = Path(tempfile.mkdtemp(prefix="lab2_ppo_"))
else:
    run_dir = Path("runs") / time.strftime("lab2_ppo_%Y%m%d-%H%M%S")

env = rlcourse.envs.make("CartPole-v1", num_envs=NUM_ENVS, seed=SEED)
agent = PPO(env, seed=SEED, gae_fn=compute_gae, surrogate_fn=clipped_surrogate_loss)
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
from rlcourse.grading import lab2 as _lab2

_lab2.check_training(result, _lab2.load_pins(), seed=SEED, total_steps=TOTAL_STEPS, num_envs=NUM_ENVS,
                     eval_episodes=EVAL_EPISODES)
### END HIDDEN TESTS
"""

PLOT = r"""
# The learning curve: mean return of the training episodes that finished in each logged window.
# (Saving learning_curve.png into the run folder switched matplotlib to its file backend;
# the magic below brings inline plots back.)
%matplotlib inline
import csv

with open(run_dir / "progress.csv", newline="") as f:
    rows = [row for row in csv.DictReader(f) if row.get("charts/episode_return")]
steps = [int(row["global_step"]) for row in rows]
returns = [float(row["charts/episode_return"]) for row in rows]

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(steps, returns, label="training episodes")
ax.axhline(result["episode_return_mean"], color="tab:green", linestyle="--", label="final evaluation")
ax.set_xlabel("environment steps")
ax.set_ylabel("episode return")
ax.set_title("PPO on CartPole-v1 with your GAE and clipped surrogate")
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
plt.show()
"""

REFLECT = r"""
## 5. To think about (not graded)

* Train again with `PPO(..., lam=0.0)` and with `lam=1.0` (keyword arguments override the preset).
  Which learns faster here, and why might the answer change for a long-horizon locomotion task?
* What would happen to the critic's targets near step 500 if time-outs were treated as
  terminations? Your `compute_gae` cannot show it: `PPO.process_env_step` has already added
  $\gamma V(s_T)$ to the reward of a time-out before GAE sees it. Try it with a subclass of `PPO`
  whose `process_env_step` passes `terminated | truncated` as `terminated` and an all-false
  `extras["time_outs"]` to `super().process_env_step(...)`, and compare the curves.
* Set `clip_eps` very large (`PPO(..., clip_param=10.0)`): what does the learning curve look like?
"""


def build():  # -> nbformat.NotebookNode
    return notebook([
        md("header", HEADER),
        code("setup", SETUP, locked=True),
        md("loop_text", LOOP_TEXT),
        md("gae_text", GAE_TEXT),
        code("compute_gae", GAE_SOLUTION, solution=True),
        code("test_gae", GAE_TEST, grade=True, locked=True, points=3),
        md("ppo_text", PPO_TEXT),
        code("clipped_surrogate_loss", SURROGATE_SOLUTION, solution=True),
        code("test_surrogate", SURROGATE_TEST, grade=True, locked=True, points=3),
        md("train_text", TRAIN_TEXT),
        code("test_training", TRAIN_TEST, grade=True, locked=True, points=4),
        code("learning_curve", PLOT, locked=True),
        md("reflect_text", REFLECT),
    ])


def main() -> None:
    write(build(), HERE / "lab2_ppo.ipynb")


if __name__ == "__main__":
    main()
