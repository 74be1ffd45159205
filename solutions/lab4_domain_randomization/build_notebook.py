"""Write ``lab4_domain_randomization.ipynb``, the nbgrader source notebook of lab 4, from the cells below.

The committed notebook is the source of truth; this script is a convenient way to edit it
as plain Python (run it, then ``python -m rlcourse.grading.release lab4_domain_randomization``
to regenerate the student version and ``rlcourse pin lab4_domain_randomization`` if the
training cell changed). nbgrader does not copy ``build_*.py`` into the student release.

    python solutions/lab4_domain_randomization/build_notebook.py
"""

from __future__ import annotations

from pathlib import Path

from rlcourse.grading.authoring import code, md, notebook, write

HERE = Path(__file__).resolve().parent
LAB = "lab4_domain_randomization"


HEADER = r"""
# Lab 4: Domain randomization

Lecture 7 showed randomization as a config (`{"mass": {"range": [0.8, 1.2]}, ...}`) and
`rlcourse.evaluate_robustness`. In this lab you write the machinery *behind* such a config,
plug it into the `Ant` locomotion environment, and measure what it buys:

1. **Sampling randomization parameters**: `sample(distribution, low, high, size, generator)` for
   `uniform`, `loguniform` and `gaussian` draws, and `randomize(nominal, draws, operation)`
   for the `scaling` and `additive` operations.
2. **Observation noise and action latency**: `add_obs_noise(obs, mean, std, generator)`,
   `draw_latency(low, high, n, generator)` and the buffer class `ActionLatency` that delays each
   environment's actions by its own number of control steps.
3. **Training**: a walking Ant policy (trained once on the nominal robot and shipped with the
   course) is trained further twice, once on the nominal robot and once with a randomized
   payload, floor friction and observation noise drawn by *your* functions; then both policies
   walk on a friction x payload grid of fixed robots.

Write code only between the `# YOUR CODE HERE` marks (replace `raise NotImplementedError()`).
Every other code cell is locked; if you break or delete one, the grader restores it.

**Points (10 in total)**

| cell | points | what is checked |
|---|---|---|
| `test_sampler` | 4 | the visible checks below, and hidden ones: shapes, dtype, bounds and `low == high` exactly; mean, standard deviation (of the logarithm, for `loguniform`) and median of 200,000 draws within 6 standard errors of the distribution's; the same seed gives the same draws, and only `generator` is used; `randomize` exactly |
| `test_noise_latency` | 3 | the visible checks below, and hidden ones: statistics of the noise on 200,000 elements, independence between elements; the delay frequencies (both ends of the range included); `ActionLatency` step by step against the reference on a fixed action sequence with resets in the middle |
| `test_training` | 3 | your functions randomize the Ant while PPO trains (seed 0, ~2 minutes for both runs and the sweeps); over the friction x payload grid, the randomized policy's **mean return over the grid** must reach the pass mark pinned in `autograder/pinned_metrics.json` (set so that a correct solution passes on any seed) **and** be higher than the nominal policy's mean |

A test cell gives all of its points or none. The training uses your functions, so an error
in them can cost more than one cell; fix the function tests first.
Run the notebook top to bottom (*Kernel > Restart and Run All*) before you submit.
"""

SETUP = r"""
import math
import random
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch

import rlcourse

# Warnings go to stderr. The grader filters out warnings and progress bars, but any other
# stderr output in a test cell counts as a failure, so quiet them here anyway.
warnings.filterwarnings("ignore")
torch.set_num_threads(1)  # small networks: one thread is fastest, and results do not depend on the core count
torch.set_printoptions(precision=4, sci_mode=False)
"""

SAMPLER_TEXT = r"""
## 1. Sampling randomization parameters

Every term of a randomization config says *how* to draw a value and *what to do* with it:

```python
{"mass":     {"range": [0.5, 2.0], "operation": "scaling"},                # m = m_nominal * U(0.5, 2.0)
 "friction": {"range": [0.25, 2.0], "distribution": "loguniform"},         # mu = mu_nominal * logU(0.25, 2)
 "gravity":  {"range": [0.0, 0.4], "distribution": "gaussian", "operation": "additive"}}  # g + N(0, 0.4^2)
```

**Distributions.** `range` holds `[low, high]` for `uniform` and `loguniform`, but `[mean, std]`
for `gaussian` (the IsaacGymEnvs convention; the second number is a standard deviation, not a bound).

* `uniform(low, high)`: $x = a + (b - a)\,u$ with $u \sim U(0, 1)$.
* `loguniform(low, high)` (both $> 0$): $\log x$ is uniform on $[\log a, \log b]$, so
  $x = \exp\big(\log a + (\log b - \log a)\,u\big)$. A scale factor between $1/4$ and $2$ is then
  as likely to halve the value as to double it; on a plain uniform most draws would be above 1.
  The median is the geometric mean $\sqrt{ab}$.
* `gaussian(mean, std)`: $x = \mu + \sigma z$ with $z \sim N(0, 1)$. Unbounded: good for sensor
  noise, dangerous for a mass (a wide Gaussian scale sometimes gives a negative mass).

A range with `low == high` (or `std = 0`) must give exactly that value: `evaluate_robustness`
pins every env to one grid value that way.

**Operations.** `scaling` multiplies the *nominal* value by the draw, `additive` adds it.
Always start from the nominal value, never from the previous draw: otherwise the parameters
drift away in a random walk over resets.

**Randomness you can repeat.** Draw only from the `torch.Generator` you are given (pass
`generator=generator` to `torch.rand` / `torch.randn` / `torch.randint`). The environment owns that
generator and seeds it, so the same seed gives the same robots; the global random state
(`torch.manual_seed`, `np.random`) belongs to the learner and must not be touched.

Implement both functions. `sample` returns a `float64` tensor of shape `size`; `randomize`
broadcasts (a nominal of shape `(k,)` with draws of shape `(N, k)` gives `(N, k)`) and raises
`ValueError` for an unknown operation. Neither may modify its inputs.
"""

SAMPLER_SOLUTION = r'''
def sample(distribution, low, high, size, generator):
    """Draw randomization values.

    Args:
        distribution: "uniform", "loguniform" or "gaussian".
        low, high:    the range [low, high] for uniform and loguniform; (mean, std) for gaussian.
        size:         shape of the result, e.g. (num_envs,) or (num_envs, num_bodies).
        generator:    the torch.Generator to draw from (the only source of randomness).

    Returns:
        A float64 tensor of shape `size`.
    """
    ### BEGIN SOLUTION
    if distribution == "uniform":
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        return low + (high - low) * u
    if distribution == "loguniform":
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        log_low, log_high = math.log(low), math.log(high)
        return torch.exp(log_low + (log_high - log_low) * u)
    if distribution == "gaussian":
        z = torch.randn(size, generator=generator, dtype=torch.float64)
        return low + high * z
    raise ValueError(f"unknown distribution {distribution!r}")
    ### END SOLUTION


def randomize(nominal, draws, operation):
    """Apply draws to the nominal value: "scaling" multiplies, "additive" adds (ValueError otherwise)."""
    ### BEGIN SOLUTION
    if operation == "scaling":
        return nominal * draws
    if operation == "additive":
        return nominal + draws
    raise ValueError(f"unknown operation {operation!r}; use 'scaling' or 'additive'")
    ### END SOLUTION
'''

SAMPLER_TEST = r"""
# Visible checks: run this cell to test sample and randomize. (4 points, with hidden checks.)
g = torch.Generator().manual_seed(0)
x = sample("uniform", 0.5, 2.0, (10_000,), g)
assert isinstance(x, torch.Tensor) and x.shape == (10_000,), "sample must return a tensor of shape `size`"
assert x.dtype == torch.float64, f"the draws must be float64, got {x.dtype}"
assert 0.5 <= x.min() and x.max() <= 2.0, "uniform draws must lie in [low, high]"
assert abs(x.mean() - 1.25) < 0.03, f"uniform(0.5, 2.0): mean {x.mean():.3f}, expected about 1.25"

y = sample("loguniform", 0.25, 4.0, (10_000,), g)
assert 0.25 <= y.min() and y.max() <= 4.0, "loguniform draws must lie in [low, high]"
# log y is uniform on [log 0.25, log 4], centred on 0: half of the draws below 1 = sqrt(0.25 * 4).
assert abs(torch.log(y).mean()) < 0.05, f"loguniform: mean of log(x) {torch.log(y).mean():.3f}, expected about 0"
assert abs((y < 1.0).double().mean() - 0.5) < 0.03, "loguniform(0.25, 4): about half of the draws must be below 1"

z = sample("gaussian", 1.0, 0.3, (10_000,), g)
assert abs(z.mean() - 1.0) < 0.02 and abs(z.std() - 0.3) < 0.02, f"gaussian(1, 0.3): mean {z.mean():.3f}, std {z.std():.3f}"
assert sample("uniform", 0.7, 0.7, (3,), g).tolist() == [0.7, 0.7, 0.7], "low == high must give that value"
assert sample("uniform", 0.5, 2.0, (4, 3), g).shape == (4, 3)

a = sample("uniform", 0.5, 2.0, (5,), torch.Generator().manual_seed(1))
b = sample("uniform", 0.5, 2.0, (5,), torch.Generator().manual_seed(1))
assert torch.equal(a, b), "the same generator seed must give the same draws"

nominal = torch.tensor([2.0, 0.5], dtype=torch.float64)
draws = torch.tensor([[1.5, 0.5], [1.0, 2.0]], dtype=torch.float64)
assert torch.equal(randomize(nominal, draws, "scaling"), torch.tensor([[3.0, 0.25], [2.0, 1.0]], dtype=torch.float64))
assert torch.equal(randomize(nominal, draws, "additive"), torch.tensor([[3.5, 1.0], [3.0, 2.5]], dtype=torch.float64))
print("sample and randomize: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab4 as _lab4

_lab4.check_sampler(sample, randomize, _lab4.load_pins())
### END HIDDEN TESTS
"""

NOISE_TEXT = r"""
## 2. Observation noise and action latency

**Observation noise.** Real sensors are noisy: IMU readings jitter, encoders quantize. The
simplest model adds independent Gaussian noise $N(\mu, \sigma^2)$ to *every element* of the
observation at every step (`obs_noise: {"range": [mean, std]}` in the config). A policy that
never saw noise may rely on differences far smaller than the noise of a real sensor.
`add_obs_noise(obs, mean, std, generator)` returns a *new* tensor with the observation's shape
and dtype (draw the noise in float64, then add it converted to `obs.dtype`).

**Action latency.** Between the policy's decision and the motor's torque there is a
communication bus, a motor driver and filtering: typically 10-40 ms. With a latency of $k$
control steps, the actuators of an env execute at step $t$ the action the policy chose at step
$t - k$. Each env gets its own $k$, drawn when it resets, uniformly from the *integers*
`low .. high` (**both included**): `draw_latency(low, high, n, generator)` returns an `int64`
tensor of `n` delays.

`ActionLatency(num_envs, num_actions, max_latency)` keeps, per env, the last
`max_latency + 1` actions:

* `reset(env_ids, delays)`: the envs `env_ids` start a new episode with the delays `delays`;
  their history is cleared (an env never receives actions from its previous episode);
* `step(actions)`: records `actions` (shape `(num_envs, num_actions)`) and returns what each
  env's actuators receive now: the action from exactly `delay` steps ago (delay 0 = this step's
  action), or **zeros** while the env has not yet received enough actions since its last reset.

```
step        1    2    3    4          delay 0: a1  a2  a3  a4
policy     a1   a2   a3   a4          delay 1: 0   a1  a2  a3
                                      delay 2: 0   0   a1  a2
```

The env calls `reset` for every env at the start and for each env whose episode ended, and
`step` once per control step. Do not modify the `actions` tensor you are given.
"""

NOISE_SOLUTION = r'''
def add_obs_noise(obs, mean, std, generator):
    """obs + independent N(mean, std^2) noise on every element (a new tensor, same shape and dtype)."""
    ### BEGIN SOLUTION
    noise = mean + std * torch.randn(tuple(obs.shape), generator=generator, dtype=torch.float64)
    return obs + noise.to(obs.dtype)
    ### END SOLUTION


def draw_latency(low, high, n, generator):
    """n delays (int64), uniform over the integers low, low + 1, ..., high."""
    ### BEGIN SOLUTION
    return torch.randint(int(low), int(high) + 1, (n,), generator=generator)
    ### END SOLUTION


class ActionLatency:
    """Delays the actions of env i by delays[i] control steps (see the text above)."""

    def __init__(self, num_envs, num_actions, max_latency):
        ### BEGIN SOLUTION
        self.history = torch.zeros(num_envs, max_latency + 1, num_actions)   # history[:, j] = action j steps ago
        self.delays = torch.zeros(num_envs, dtype=torch.long)
        ### END SOLUTION

    def reset(self, env_ids, delays):
        ### BEGIN SOLUTION
        self.history[env_ids] = 0.0
        self.delays[env_ids] = delays
        ### END SOLUTION

    def step(self, actions):
        ### BEGIN SOLUTION
        self.history = torch.roll(self.history, shifts=1, dims=1)
        self.history[:, 0] = actions
        return self.history[torch.arange(self.history.shape[0]), self.delays]
        ### END SOLUTION
'''

NOISE_TEST = r"""
# Visible checks: run this cell to test the noise and the latency buffer. (3 points, with hidden checks.)
obs = torch.zeros(20_000, 3)
noisy = add_obs_noise(obs, 0.0, 0.1, torch.Generator().manual_seed(0))
assert noisy.shape == obs.shape and noisy.dtype == obs.dtype, "same shape and dtype as the observation"
assert torch.equal(obs, torch.zeros(20_000, 3)), "add_obs_noise must not modify obs in place"
assert abs(noisy.mean()) < 0.005 and abs(noisy.std() - 0.1) < 0.005, f"noise mean {noisy.mean():.4f}, std {noisy.std():.4f}"
assert not torch.equal(noisy[:, 0], noisy[:, 1]), "every element gets its own noise"

k = draw_latency(0, 2, 30_000, torch.Generator().manual_seed(0))
assert k.dtype == torch.int64 and k.shape == (30_000,), "draw_latency returns n int64 delays"
assert set(k.tolist()) == {0, 1, 2}, f"delays 0, 1 and 2 must all occur (both ends included), got {sorted(set(k.tolist()))}"
assert abs((k == 2).double().mean() - 1 / 3) < 0.02, "each delay is equally likely"

buf = ActionLatency(num_envs=3, num_actions=1, max_latency=2)
buf.reset(torch.arange(3), torch.tensor([0, 1, 2]))
got = [buf.step(torch.full((3, 1), float(t))).flatten().tolist() for t in (1, 2, 3)]
# env 0 (delay 0) gets a_t, env 1 gets a_{t-1}, env 2 gets a_{t-2}; zeros before the episode's first action.
assert got == [[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [3.0, 2.0, 1.0]], f"delayed actions {got}"
buf.reset(torch.tensor([2]), torch.tensor([1]))            # env 2 starts a new episode with delay 1
assert buf.step(torch.full((3, 1), 4.0)).flatten().tolist() == [4.0, 3.0, 0.0], "a reset clears the env's history"
assert buf.step(torch.full((3, 1), 5.0)).flatten().tolist() == [5.0, 4.0, 4.0]
print("add_obs_noise, draw_latency and ActionLatency: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab4 as _lab4

_lab4.check_noise_latency(add_obs_noise, draw_latency, ActionLatency, _lab4.load_pins())
### END HIDDEN TESTS
"""

TRAIN_TEXT = r"""
## 3. Train with and without randomization, then sweep friction x payload

Learning to walk from scratch takes the Ant about a million steps (several minutes here), so
this part starts where many real projects add randomization: from a policy that already walks.
`rlcourse.pretrained.load("ant_walker", env=env)` gives a PPO agent trained for 1,000,000
steps on the *nominal* Ant (no randomization; see `rlcourse/pretrained/__init__.py` for how it
was made). It walks about 20 m in 10 s, and it is fragile in a way that matters on a real
robot: **it cannot carry a load**. The Ant weighs 0.9 kg; with 20 kg strapped to its torso the
walker still makes progress, with 30 kg it only stands. (Scaling the mass of every body, as in
lecture 7, barely bothers it: its motors are strong for its own weight.)

The next cell trains the walker further twice, with the same seed and budget (102,400 steps
each, 64 envs, ~35 s each):

* **randomized**: at each reset every env draws a payload `logU(0.03, 30)` kg that is *added* to
  the torso's mass and a floor friction scale `logU(0.03, 2.0)`, and its observations get
  `N(0, 0.01^2)` noise, all drawn by *your* functions;
* **nominal**: the same extra training on the robot as built, `randomization=None`.

Log-uniform ranges spread the draws evenly over orders of magnitude: 0.03-0.3 kg, 0.3-3 kg and
3-30 kg are equally likely, so half of the robots carry less than 1 kg and the policy keeps
practising the light robot while it learns to carry a load; the friction range brackets the
nominal floor (1.0) from both sides. No latency here,
although you wrote it: one step of delay makes the shipped walker fall, and 100k steps with
latency on half of the robots measurably held the randomized policy back (see the end of this
notebook, and try it yourself in part 4).

Then `rlcourse.evaluate_robustness` runs both deterministic policies on a grid of *fixed*
robots: friction scale 0.03 (ice) to 1 x payload 0 to 30 kg, four 300-step (15 s) episodes per
cell. The grid evaluation uses the environment's own sampler, not yours.

**What is graded is the mean over the grid**: the randomized policy's mean must reach the
pinned pass mark *and* beat the nominal policy's mean. The cell also prints each policy's
**worst cell**, the number a robot engineer cares about most (a real robot meets one particular
floor with one particular load), and the end of this notebook explains why that one is shown
but not graded. The cell sets every seed itself, so running it again gives the same policies
on the same computer.
"""

TRAIN_TEST = r"""
# Graded (3 points): the shipped Ant walker trained further with and without YOUR randomization;
# both swept over friction x payload.
import time

import rlcourse.pretrained

SEED = 0
TASK = "Ant"
PRETRAINED = "ant_walker"      # PPO, 1M steps on the nominal Ant (rlcourse/pretrained)
NUM_ENVS = 64
FINETUNE_STEPS = 102_400       # per policy: 100 PPO iterations of 16 steps x 64 envs
SWEEP_EPISODES = 4             # per grid cell
SWEEP_EPISODE_LENGTH = 300     # control steps = 15 s
TRAIN_RANDOMIZATION = {
    "friction": {"range": [0.03, 2.0], "distribution": "loguniform", "mode": "reset"},
    "mass": {"range": [0.03, 30.0], "distribution": "loguniform", "operation": "additive",
             "bodies": ["torso"], "mode": "reset"},
    "obs_noise": {"range": [0.0, 0.01]},
}
SWEEP = {"friction": [0.03, 0.1, 1.0], "added_mass": [0.0, 15.0, 30.0]}   # friction scale x payload (kg)

sweeps, result = {}, {}
# The randomized policy first: it is the one that runs your functions (an error shows at once).
for name, randomization in (("randomized", TRAIN_RANDOMIZATION), ("nominal", None)):
    # Seeds are set here, in the graded cell, so the grader repeats exactly your run.
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    start = time.perf_counter()
    env = rlcourse.envs.make(TASK, num_envs=NUM_ENVS, seed=SEED, randomization=randomization)
    if randomization is not None:
        env.dr.override(sample=sample, randomize=randomize, obs_noise=add_obs_noise,
                        draw_latency=draw_latency, latency_buffer=ActionLatency)
    agent = rlcourse.pretrained.load(PRETRAINED, env=env)
    agent.learn(agent.global_step + FINETUNE_STEPS, eval_episodes=0, progress=False)
    env.close()
    sweeps[name] = rlcourse.evaluate_robustness(
        agent, TASK, sweep=SWEEP, episodes=SWEEP_EPISODES, num_envs=SWEEP_EPISODES, seed=10_000 + SEED,
        env_kwargs={"episode_length": SWEEP_EPISODE_LENGTH},
    )
    grid = sweeps[name].grid()
    result[name] = {"grid": grid.round(3).tolist(), "worst_case_return": float(grid.min()),
                    "mean_return": float(grid.mean()), "seconds": round(time.perf_counter() - start, 1)}
    print(f"{name:>10}: worst cell {grid.min():7.1f}, mean over the grid {grid.mean():7.1f} "
          f"({result[name]['seconds']:.0f} s to train and sweep)")

assert set(result) == {"nominal", "randomized"}
assert all(math.isfinite(r["worst_case_return"]) for r in result.values())
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab4 as _lab4

_lab4.check_training(result, _lab4.load_pins(), seed=SEED, task=TASK, pretrained=PRETRAINED, num_envs=NUM_ENVS,
                     finetune_steps=FINETUNE_STEPS,
                     sweep_episodes=SWEEP_EPISODES, sweep_episode_length=SWEEP_EPISODE_LENGTH,
                     train_randomization=TRAIN_RANDOMIZATION, sweep=SWEEP)
### END HIDDEN TESTS
"""

PLOT = r"""
# Both grids side by side (rows: friction scale, columns: payload on the torso); the randomized
# policy's training ranges cover the whole grid. The worst cell of each is red.
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
lo = min(sweeps[n].grid().min() for n in sweeps)
hi = max(sweeps[n].grid().max() for n in sweeps)
for ax, name in zip(axes, ("nominal", "randomized")):
    grid = sweeps[name].grid()
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            worst = grid[i, j] == grid.min()
            ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color="r" if worst else "w",
                    fontweight="bold" if worst else "normal")
    ax.set_xticks(range(len(SWEEP["added_mass"])), SWEEP["added_mass"])
    ax.set_yticks(range(len(SWEEP["friction"])), SWEEP["friction"])
    ax.set_xlabel("payload (kg)")
    ax.set_ylabel("friction scale")
    ax.set_title(f"{name}: worst cell {grid.min():.0f} (red)")
fig.colorbar(im, ax=axes, label=f"episode return ({SWEEP_EPISODE_LENGTH} steps)")
plt.show()
diff = sweeps["randomized"].grid() - sweeps["nominal"].grid()
print("randomized - nominal, per cell (rows: friction", SWEEP["friction"], ")")
print(np.round(diff, 0))
"""

RESULT_TEXT = r"""
### What the reference measured (and what it means)

With the reference functions on five seeds (0-4, 2 CPU cores), on two computers: an AMD EPYC
(2026-12-02, the pinned numbers) and an Intel Xeon (2026-12-01):

| seed | 0 | 1 | 2 | 3 | 4 |
|---|---|---|---|---|---|
| EPYC: randomized, mean / worst cell | 501 / 64 | 504 / 78 | 527 / 94 | 524 / 90 | 543 / 87 |
| EPYC: nominal, mean / worst cell | 370 / 121 | 347 / 114 | 339 / 115 | 360 / 115 | 368 / 110 |
| Xeon: randomized, mean / worst cell | 647 / 344 | 648 / 240 | 635 / 201 | 647 / 315 | 657 / 328 |
| Xeon: nominal, mean / worst cell | 471 / 144 | 473 / 157 | 459 / 151 | 475 / 151 | 457 / 151 |

**Randomization raised the mean over the grid on every seed, on both computers**, by 130 to
200. The nominal policy's weak cells are the heavy payloads, where it stands still; the
randomized one walks there (810-1000 with 15 kg on friction 0.1). But look at *where* the
randomized policy is now weakest: on ice with 30 kg, or **on the nominal floor without a
payload**, where the nominal policy scores 500-740 and the randomized one 130-450 (some
episodes end early because the robot tips over). That is the price of randomization from
lecture 7: a policy that cannot tell how heavy it is has to compromise between the robots it
was trained on.

**Why the worst cell is not graded.** The same code and seeds give different worst cells on
the two computers: on the Xeon randomization raised the worst cell on every seed (by 50 to
200), on the EPYC it *lowered* it on every seed (ice with 30 kg: ~350 on the Xeon, 64-94 on
the EPYC). Different processors round the last bits of some floating-point operations
differently; a walker balancing on ice with a heavy load amplifies those differences until the
gait differs. A grade must not depend on the student's processor, so the lab grades the mean,
which tells the same story on both. For a real robot the lesson is the reverse: report the
worst case, *and* test it on more than one simulator and seed before you trust it.

The design of this lab is itself a measurement; the versions that did *not* show a benefit
are as instructive (all with 102,400 steps of fine-tuning):

* **Randomizing what the policy is insensitive to** (friction logU(0.01, 1), mass scale 0.5-2.5 on
  every body and 0-1 steps of latency, swept over friction x mass scale): it only made training
  harder; the worst cell was set by ice, where no gait works, mass scale did not matter, and
  randomization won on 2 seeds of 5.
* **Latency on half the robots** (0-1 steps): the walker falls with one step of delay, and
  100k steps were not enough to learn to walk with it; the same payload design scored 102
  instead of 209 in its worst cell.
* **A uniform payload U(0, 30) kg**: it learned to walk with 15-30 kg but no longer without a
  payload (worst cell 142 against 144): log-uniform keeps the light robot in the mix. Even
  `logU(0.1, 30)` (40% of the robots below 1 kg instead of 50%) won by as little as 11 on one
  seed of ten.
* **A friction range that ends at the nominal floor** (logU(0.03, 1)): it rarely saw friction
  near 1 and lost on the nominal floor on one seed of four.

Your numbers will differ a little from the reference (your sampler may draw in another
order, and your computer may round differently), but the picture should be the same: measure
robustness on a grid, look at the worst case as well as the mean, and compare with the policy
trained *without* randomization before you believe that randomization helped.
"""

REFLECT = r"""
## 4. To think about (not graded)

* Compare the two grids cell by cell (the difference is printed under the plot). Where does the
  nominal policy do *better* than the randomized one, and why there?
* Retrain the randomized policy with a uniform payload `U(0, 30)`. How often does it now see a
  robot with less than 1 kg of payload, and what happens to the cell without payload?
* In a new cell (the graded one is locked), train a third policy the same way with
  `{**TRAIN_RANDOMIZATION, "action_latency": {"range": [0, 1]}}`: your `ActionLatency` then runs
  inside the env. Sweep `action_latency` over `[0, 1, 2]` for all three policies
  (`evaluate_robustness(agent, "Ant", sweep={"action_latency": [0, 1, 2]})`).
* The policy cannot observe its payload. What could you add to the observation (or to the
  policy) so that it could adapt its gait to the load instead of compromising?
* Why does `randomize` always start from the nominal value? Write down what a "scaling" term with
  range `[0.9, 1.1]` would do to a mass after 1,000 resets if each draw multiplied the previous value.
"""


def build():  # -> nbformat.NotebookNode
    return notebook([
        md("header", HEADER),
        code("setup", SETUP, locked=True),
        md("sampler_text", SAMPLER_TEXT),
        code("sampler", SAMPLER_SOLUTION, solution=True),
        code("test_sampler", SAMPLER_TEST, grade=True, locked=True, points=4),
        md("noise_text", NOISE_TEXT),
        code("noise_latency", NOISE_SOLUTION, solution=True),
        code("test_noise_latency", NOISE_TEST, grade=True, locked=True, points=3),
        md("train_text", TRAIN_TEXT),
        code("test_training", TRAIN_TEST, grade=True, locked=True, points=3),
        code("robustness_maps", PLOT, locked=True),
        md("result_text", RESULT_TEXT),
        md("reflect_text", REFLECT),
    ])


def main() -> None:
    write(build(), HERE / f"{LAB}.ipynb")


if __name__ == "__main__":
    main()
