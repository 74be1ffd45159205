"""Write ``lab3_reward_shaping.ipynb``, the nbgrader source notebook of lab 3, from the cells below.

The committed notebook is the source of truth; this script is a convenient way to edit it
as plain Python (run it, then ``make labs`` to regenerate the student version and
``rlcourse pin lab3_reward_shaping`` if the training cell changed). The graded protocol's
constants are formatted in from :data:`rlcourse.grading.lab3.PROTOCOL`, so the notebook and
the pins cannot disagree. nbgrader does not copy ``build_*.py`` into the student release.

    python solutions/lab3_reward_shaping/build_notebook.py
"""

from __future__ import annotations

from pathlib import Path

from rlcourse.grading.authoring import code, md, notebook, write

from rlcourse.grading import lab3

HERE = Path(__file__).resolve().parent
P = lab3.PROTOCOL
W = P["weights"]


def _weights_literal(indent: str = "    ") -> str:
    rows = [f'{indent}"{name}": {W[name]!r},' for name in lab3.TERM_NAMES]
    return "{\n" + "\n".join(rows) + "\n}"


HEADER = r"""
# Lab 3: Reward shaping for a walking robot

Lecture 6 read the Ant's reward as a table of weighted, vectorized terms. In this lab you
write such a reward yourself, five terms from scratch, and train the Ant with it:

| term | function you write | weight in the graded run |
|---|---|---|
| forward velocity | `forward_velocity(env)` | WEIGHT_forward_velocity |
| alive bonus | `alive_bonus(env)` | WEIGHT_alive_bonus |
| energy penalty | `energy_penalty(env)` | WEIGHT_energy_penalty |
| orientation penalty | `orientation_penalty(env)` | WEIGHT_orientation_penalty |
| fall penalty | `fall_penalty(env)` | WEIGHT_fall_penalty |

1. **Explore first** (section 1): a panel with one slider per weight trains the Ant briefly
   with the course's built-in versions of the five terms and shows the learning curve, what each
   term contributed and a video. Nothing in it is graded.
2. **Write the terms** (sections 2-4): each is a vectorized torch function of the whole batch
   of robots, `f(env) -> tensor of shape (num_envs,)`.
3. **Train with your reward** (section 5): PPO on the Ant with your five terms (about a minute).
4. **Diagnose reward hacking** (section 6): a policy trained on a mis-weighted reward; find
   out from its per-term episode sums what it learned to exploit (not graded).

Write code only between the `# YOUR CODE HERE` marks (replace `raise NotImplementedError()`).
Every other code cell is locked; if you break or delete one, the grader restores it.

**Points (10 in total)**

| cell | points | what is checked |
|---|---|---|
| `test_task_terms` | 2 | the visible checks below it, and hidden ones: `forward_velocity` and `alive_bonus` against the reference terms on a fixed batch of 24 robot states (tilted and upside-down torsos, any heading, moving forward, backward and sideways, fallen robots, episodes cut by the time limit) |
| `test_cost_terms` | 2 | the same for `energy_penalty` and `orientation_penalty` |
| `test_fall_term` | 2 | the same for `fall_penalty` |
| `test_training` | 4 | PPO trains the Ant with your five terms and the weights above (seed SEED, ITERATIONS iterations, about a minute); the mean speed along $+x$ of the training robots over the last SPEED_ITERATIONS iterations, measured from their positions, must reach the pass mark pinned in `autograder/pinned_metrics.json`. The pass mark is set so that a correct reward passes on any seed. |

A test cell gives all of its points or none. The training uses your functions, so an error in
them can cost more than one cell; make the term tests pass first.
Run the notebook top to bottom (*Kernel > Restart and Run All*) before you submit.
"""
for _name in lab3.TERM_NAMES:
    HEADER = HEADER.replace(f"WEIGHT_{_name}", f"{W[_name]:+g}")
HEADER = (HEADER.replace("SPEED_ITERATIONS", str(P["speed_iterations"])).replace("SEED", str(P["seed"]))
          .replace("ITERATIONS", str(P["iterations"])))

SETUP = r"""
%matplotlib inline
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import clear_output, display

import rlcourse
from rlcourse.envs.locomotion import AntEnv, RewardTerm, record_video, show_video
from rlcourse.envs.locomotion import ant as builtin

# Warnings go to stderr. The grader filters out warnings and progress bars, but any other
# stderr output in a test cell counts as a failure, so quiet them here anyway.
warnings.filterwarnings("ignore")
torch.set_num_threads(1)  # small networks: one thread is fastest, and results do not depend on the core count
torch.set_printoptions(precision=4, sci_mode=False)
GRADING = bool(os.environ.get("NBGRADER_EXECUTION"))  # set by the autograder, which skips the ungraded demos
"""

TERMS_TEXT = r"""
## The Ant, as seen by a reward term

`rlcourse.envs.make("Ant", num_envs=N)` simulates $N$ ants side by side (MuJoCo's ant: a
torso on four two-joint legs, 8 motors). A reward term receives the whole batch, `env`, and
reads its state tensors; every one has the robots along the first dimension:

| attribute | shape | meaning |
|---|---|---|
| `env.root_lin_vel_w` | `(N, 3)` | torso velocity in the **world** frame (m/s); the target lies far away along $+x$ |
| `env.root_lin_vel_b` | `(N, 3)` | the same velocity in the torso's own frame (turns with the robot) |
| `env.projected_gravity_b` | `(N, 3)` | direction of gravity seen from the torso (a unit vector): $(0, 0, -1)$ when level |
| `env.actions` | `(N, 8)` | this step's actions (motor commands), clipped to $[-1, 1]$ |
| `env.dof_vel` | `(N, 8)` | joint velocities (rad/s), in action order |
| `env.dof_vel_scale` | float | 0.2, the velocity scale of the Ant's energy term |
| `env.terminated` | `(N,)` bool | True on the step on which the robot **fell** (torso below 0.31 m) |
| `env.time_outs` | `(N,)` bool | True on the step on which the episode was cut by the time limit (not a fall) |

The reward is $r_t = \sum_i w_i\, f_i(\text{env})$, built from `RewardTerm(func, weight)` data
exactly as in lecture 6; the env adds up every term's weighted value per episode and reports
the sums in `extras["episode"]["rew_<term>"]`. The five terms of this lab (the weights carry
the signs, so every *penalty* function returns a non-negative amount):

* **forward velocity** $v_x$: the torso's world-frame velocity along $+x$. It pays for
  progress toward the target (the Ant's `progress` term is the same speed measured toward the target).
* **alive bonus** $1 - \text{terminated}$: 1 on every step, except 0 on the step on which the robot falls.
* **energy penalty** $\sum_j \lvert a_j \cdot \dot q_j \cdot 0.2 \rvert$: mechanical power, in action units, summed over the 8 joints.
* **orientation penalty** $g_x^2 + g_y^2$ with $g$ = `projected_gravity_b`: $\sin^2$ of the torso's tilt, 0 when level, 1 when on its side.
* **fall penalty** $\text{terminated}$: 1 on the step on which the robot falls, 0 otherwise, and 0 on a time-out.

The course ships reference versions of the five (used by the panel below, never by your
graded cells): `builtin.forward_velocity`, `builtin.is_alive`, `builtin.energy`,
`builtin.flat_orientation_l2` and `builtin.is_terminated`. The next cell draws them, unweighted,
along 8 seconds of one ant walking with an open-loop gait.
"""

HELPERS = r'''
TERM_NAMES = ("forward_velocity", "alive_bonus", "energy_penalty", "orientation_penalty", "fall_penalty")
BUILTIN_TERMS = {
    "forward_velocity": builtin.forward_velocity,
    "alive_bonus": builtin.is_alive,
    "energy_penalty": builtin.energy,
    "orientation_penalty": builtin.flat_orientation_l2,
    "fall_penalty": builtin.is_terminated,
}
LAB_WEIGHTS = WEIGHTS_LITERAL


def lab_rewards(funcs, weights):
    """rewards= for make("Ant"): the Ant's default terms removed, the five lab terms added (weight 0 drops one)."""
    spec = {name: None for name in AntEnv.default_rewards()}
    spec.update({name: RewardTerm(funcs[name], float(weights[name])) for name in TERM_NAMES})
    return spec


class TermRecorder:
    """Wraps term functions to record their mean value per step; as a Runner callback it closes one
    PPO iteration: history[i][name] = mean weighted value of term `name` per robot and step."""

    def __init__(self, weights):
        self.weights = {name: float(w) for name, w in weights.items()}
        self.history = []
        self._sums, self._steps = {}, {}

    def wrap(self, funcs):
        def recorded(name, fn):
            def term(env):
                value = fn(env)
                if isinstance(value, torch.Tensor):
                    self._sums[name] = self._sums.get(name, 0.0) + float(value.detach().float().mean())
                    self._steps[name] = self._steps.get(name, 0) + 1
                return value
            term.__name__ = getattr(fn, "__name__", name)
            return term
        return {name: recorded(name, fn) for name, fn in funcs.items()}

    def __call__(self, runner):
        self.history.append({name: self.weights[name] * self._sums[name] / self._steps[name]
                             for name in self._sums if self._steps.get(name)})
        self._sums, self._steps = {}, {}


class ForwardSpeedMeter:
    """Runner callback: mean speed (m/s) along +x of the training robots over each PPO iteration,
    measured from their torso positions (so it does not depend on the reward terms)."""

    def __init__(self, env):
        self.env = env
        self.speeds = []
        self._x = self._length = None

    def __call__(self, runner):
        x, length = self.env.root_pos_w[:, 0].clone(), self.env.episode_length.clone()
        if self._x is not None:
            steps = runner.algo.num_steps_per_env
            same_episode = (length - self._length) == steps  # robots that did not fall or restart meanwhile
            if bool(same_episode.any()):
                self.speeds.append(float((x - self._x)[same_episode].mean()) / (steps * self.env.step_dt))
        self._x, self._length = x, length


@torch.no_grad()
def forward_distance(policy, episodes, episode_length, seed):
    """x displacement (m) of the first episode of each of `episodes` envs (at most `episode_length` steps)."""
    env = rlcourse.envs.make("Ant", num_envs=episodes, seed=seed, episode_length=episode_length)
    obs, _ = env.reset()
    distance = torch.full((episodes,), float("nan"))
    while bool(distance.isnan().any()):
        obs, _, _, _, extras = env.step(policy(obs))
        if "episode" in extras:
            ids = extras["episode"]["env_ids"]
            first = distance[ids].isnan()
            distance[ids[first]] = extras["episode"]["x_distance"][first]
    env.close()
    return distance.tolist()


@torch.no_grad()
def episode_term_sums(policy, funcs, weights, episodes=16, episode_length=200, seed=3000):
    """Per-term episode sums (weighted, from extras["episode"]) and x distance of deterministic episodes."""
    env = rlcourse.envs.make("Ant", num_envs=episodes, seed=seed, episode_length=episode_length,
                             rewards=lab_rewards(funcs, weights))
    obs, _ = env.reset()
    rows = []
    while len(rows) < episodes:
        obs, _, _, _, extras = env.step(policy(obs))
        if "episode" in extras:
            ep = extras["episode"]
            for k in range(len(ep["env_ids"])):
                rows.append({key: float(v[k]) for key, v in ep.items() if key.startswith("rew_") or key in
                             ("x_distance", "length", "return")})
    env.close()
    rows = rows[:episodes]
    return {key: float(np.mean([r.get(key, 0.0) for r in rows])) for key in rows[0]}


def train_ppo(funcs, weights, iterations=60, num_envs=64, seed=0):
    """Train PPO (Ant preset) briefly with the given terms and weights; returns the agent and the per-iteration history."""
    torch.manual_seed(seed)
    recorder = TermRecorder(weights)
    env = rlcourse.envs.make("Ant", num_envs=num_envs, seed=seed, rewards=lab_rewards(recorder.wrap(funcs), weights))
    agent = rlcourse.PPO(env, seed=seed)
    start = time.perf_counter()
    agent.learn(iterations * agent.num_steps_per_env * num_envs, eval_episodes=0, progress=False, callback=recorder)
    env.close()
    return agent, recorder.history, time.perf_counter() - start


def plot_history(history, weights, ax_total, ax_terms, title=""):
    steps = np.arange(1, len(history) + 1)
    ax_total.plot(steps, [sum(h.values()) for h in history], color="k")
    ax_total.set(xlabel="PPO iteration", ylabel="reward per step", title=title or "learning curve")
    for name in TERM_NAMES:
        if weights[name] != 0:
            ax_terms.plot(steps, [h.get(name, 0.0) for h in history], label=f"{name} ({weights[name]:+g})")
    ax_terms.axhline(0, color="k", lw=0.5)
    ax_terms.set(xlabel="PPO iteration", ylabel="weighted value per step", title="what each term contributed")
    ax_terms.legend(fontsize=7)
    for ax in (ax_total, ax_terms):
        ax.grid(alpha=0.3)


def plot_episode_sums(sums, weights, ax, title="per-term episode sums (10-s episodes)"):
    names = [n for n in TERM_NAMES if weights[n] != 0]
    values = [sums.get(f"rew_{n}", 0.0) for n in names]
    ax.barh(names, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax.axvline(0, color="k", lw=0.5)
    ax.set(title=title, xlabel="mean episode sum of the weighted term")
    ax.grid(alpha=0.3, axis="x")


def show_video_of(agent, steps=100, every=4, seed=0):
    """A short GIF of the trained policy (needs offscreen OpenGL; skipped with a message without it)."""
    try:
        env = rlcourse.envs.make("Ant", num_envs=1, seed=seed)
        path = record_video(env, agent, Path(tempfile.mkdtemp(prefix="lab3_")) / "ant.gif", steps=steps,
                            every=every, width=240, height=180)
        env.close()
        display(show_video(path, width=360))
    except Exception as exc:  # no OpenGL backend on this machine
        print(f"(no video: {exc})")


# Unweighted term values along 8 s of one ant walking with an open-loop gait (lecture 6's).
PHASE = torch.tensor([0, 0.5, 1, 1.5, 1, 1.5, 0, 0.5]) * math.pi
env = rlcourse.envs.make("Ant", num_envs=1, seed=1, rewards={name: None for name in AntEnv.default_rewards()})
obs, _ = env.reset()
trace = {name: [] for name in TERM_NAMES}
for t in range(160):
    obs, *_ = env.step(torch.sin(2 * math.pi * 2.0 * t * env.step_dt + PHASE)[None])
    for name in TERM_NAMES:
        trace[name].append(float(BUILTIN_TERMS[name](env)[0]))
env.close()
fig, axes = plt.subplots(1, 5, figsize=(15, 2.6), sharex=True)
seconds = np.arange(160) * 0.05
for ax, name in zip(axes, TERM_NAMES):
    ax.plot(seconds, trace[name])
    ax.set(title=name, xlabel="time (s)")
    ax.grid(alpha=0.3)
fig.suptitle("the five built-in terms, unweighted, along one open-loop gait", y=1.04)
plt.show()
'''.replace("WEIGHTS_LITERAL", _weights_literal())

PANEL_TEXT = r"""
## 1. Explore the weights

The panel below holds one slider per weight. Its first plot updates as you move a slider
without simulating anything: it shows the reward per step, term by term, that two behaviours
recorded once (standing still, and the untrained policy's random motions) would earn with
your weights, i.e. what the learner "sees" before it learns anything. **Train** runs PPO
with the built-in terms and your weights for the chosen number of iterations (about 20-40 s
for 60 iterations on a laptop), then shows the learning curve, what each term contributed
during training, the per-term sums of 10-s test episodes of the trained policy, how far it
walked, and a short video.

Things to try: the graded weights as they are; the alive bonus at 5 (what does the robot do
now?); the fall penalty at 0 together with a negative alive bonus; the energy penalty at
-0.5. Each press is a new experiment: compare a *short* run's per-term curves, not its final
distance, which varies a lot from seed to seed after so little training.
"""

PANEL = r'''
PANEL_CLASS = "rlcourse-reward-panel"  # the panel's CSS class (a browser test looks for it)
SLIDER_RANGES = {"forward_velocity": (0.0, 3.0, 0.1), "alive_bonus": (-1.0, 5.0, 0.1),
                 "energy_penalty": (-0.5, 0.1, 0.01), "orientation_penalty": (-3.0, 0.5, 0.1),
                 "fall_penalty": (-10.0, 0.0, 0.5)}


@torch.no_grad()
def record_unweighted(policy, steps=60, num_envs=16, seed=0):
    """Mean unweighted value per step of each built-in term for `policy` (no learning)."""
    env = rlcourse.envs.make("Ant", num_envs=num_envs, seed=seed,
                             rewards=lab_rewards(BUILTIN_TERMS, {n: 1.0 for n in TERM_NAMES}))
    obs, _ = env.reset()
    totals = torch.zeros(len(TERM_NAMES))
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
        totals += env.reward_manager.last_weighted.mean(dim=0)
    env.close()
    return dict(zip(TERM_NAMES, (totals / steps).tolist()))


gen = torch.Generator().manual_seed(0)
BEHAVIOURS = {
    "standing still": record_unweighted(lambda obs: torch.zeros(obs.shape[0], 8)),
    "untrained policy": record_unweighted(lambda obs: (torch.randn(obs.shape[0], 8, generator=gen) * 0.6).clamp(-1, 1)),
}


def reward_panel(funcs=BUILTIN_TERMS, weights=LAB_WEIGHTS, iterations=60, num_envs=64, seed=0):
    sliders = {name: widgets.FloatSlider(value=weights[name], min=lo, max=hi, step=step, description=name,
                                         continuous_update=False, readout_format="+.2f",
                                         style={"description_width": "140px"}, layout=widgets.Layout(width="420px"))
               for name, (lo, hi, step) in SLIDER_RANGES.items()}
    iters = widgets.IntSlider(value=iterations, min=10, max=300, step=10, description="iterations",
                              continuous_update=False)
    with_video = widgets.Checkbox(value=True, description="record a video")
    button = widgets.Button(description="Train", button_style="primary", icon="play",
                            tooltip="train PPO with these weights and show the results")
    status = widgets.HTML("Move a slider, or press Train.")
    out = widgets.Output()

    def current():
        return {name: slider.value for name, slider in sliders.items()}

    def preview(_=None):
        w = current()
        with out:
            clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(8, 2.8))
            names = list(BEHAVIOURS)
            y = np.arange(len(TERM_NAMES))
            for k, b in enumerate(names):
                ax.barh(y + 0.4 * k, [w[t] * BEHAVIOURS[b][t] for t in TERM_NAMES], height=0.4, label=b)
            ax.set_yticks(y + 0.2, TERM_NAMES)
            ax.axvline(0, color="k", lw=0.5)
            totals = ", ".join(f"{b}: {sum(w[t] * BEHAVIOURS[b][t] for t in TERM_NAMES):+.2f}" for b in names)
            ax.set(xlabel="weighted value per step", title=f"reward per step before learning ({totals})")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="x")
            plt.show()

    def train(_):
        button.disabled = True
        w = current()
        try:
            status.value = f"training for {iters.value} iterations ..."
            agent, history, seconds = train_ppo(funcs, w, iterations=iters.value, num_envs=num_envs, seed=seed)
            sums = episode_term_sums(agent.inference_policy(), funcs, w)
            status.value = (f"trained in {seconds:.0f} s; the deterministic policy walked "
                            f"<b>{sums['x_distance']:+.2f} m</b> along +x in 10 s (mean of 16 robots)")
            with out:
                clear_output(wait=True)
                fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
                plot_history(history, w, axes[0], axes[1])
                plot_episode_sums(sums, w, axes[2])
                plt.tight_layout()
                plt.show()
                if with_video.value:
                    show_video_of(agent)
        except Exception as exc:
            status.value = f"training failed: {type(exc).__name__}: {exc}"
        finally:
            button.disabled = False

    for slider in sliders.values():
        slider.observe(preview, names="value")
    button.on_click(train)
    controls = widgets.HBox([widgets.VBox(list(sliders.values())), widgets.VBox([iters, with_video, button, status])])
    panel = widgets.VBox([widgets.HTML("<b>Reward weights</b> (built-in terms; the graded weights are preset)"),
                          controls, out])
    panel.add_class(PANEL_CLASS)
    if not GRADING:
        # Drawn only in a real front end: the autograder's headless executor (nbclient) can
        # hang waiting on plots captured into an Output widget, and grading needs no plot.
        preview()
    return panel


panel = reward_panel()
display(panel)
'''

TASK_TEXT = r"""
## 2. The task terms: forward velocity and alive bonus

Write both as vectorized torch expressions over the batch (no Python loop over robots); each
returns a float tensor of shape `(env.num_envs,)` and must not modify the env's tensors.

* `forward_velocity(env)`: the torso's velocity along the world $+x$ axis, in m/s. Which of
  the two velocity attributes is the right one? The robot may be facing any direction.
* `alive_bonus(env)`: 1.0 for every robot, except 0.0 for a robot on the step on which it fell
  (`env.terminated`). Hint: a bool tensor becomes 0.0/1.0 with `.float()`.

The visible checks use a hand-made stand-in for the env (`SimpleNamespace` with the same
attributes) holding three robots, so you can compute the expected values by hand.
"""

TASK_SOLUTION = r'''
def forward_velocity(env):
    """Torso velocity along the world +x axis (m/s), shape (num_envs,)."""
    ### BEGIN SOLUTION
    return env.root_lin_vel_w[:, 0]
    ### END SOLUTION


def alive_bonus(env):
    """1.0 per robot and step, 0.0 on the step on which the robot fell, shape (num_envs,)."""
    ### BEGIN SOLUTION
    return 1.0 - env.terminated.float()
    ### END SOLUTION
'''

FAKE_ENV = r"""
# Three robots, by hand. Robot 0 walks forward, level. Robot 1 is turned around and tilted
# (gravity (0.6, 0, -0.8) in its frame: 37 degrees) and its episode was just cut by the time
# limit. Robot 2 lies on its side and fell on this step.
fake = SimpleNamespace(
    num_envs=3,
    device=torch.device("cpu"),
    dof_vel_scale=0.2,
    root_lin_vel_w=torch.tensor([[1.0, 0.5, 0.0], [-0.5, 0.0, 0.1], [2.0, -1.0, 0.0]]),
    root_lin_vel_b=torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.0, 0.1], [0.0, 2.2, 0.3]]),
    projected_gravity_b=torch.tensor([[0.0, 0.0, -1.0], [0.6, 0.0, -0.8], [0.0, -1.0, 0.0]]),
    actions=torch.tensor([[1.0, -1.0, 0, 0, 0, 0, 0, 0.5], [0.0] * 8, [-0.5, 0, 0, 0, 0, 0, 0, 1.0]]),
    dof_vel=torch.tensor([[5.0, 5.0, 3.0, 0, 0, 0, 0, -2.0], [7.0] * 8, [4.0, 0, 0, 0, 0, 0, 0, -10.0]]),
    terminated=torch.tensor([False, False, True]),
    time_outs=torch.tensor([False, True, False]),
)
"""

TASK_TEST = r"""
# Visible checks (2 points with the hidden ones): forward_velocity and alive_bonus.
v = forward_velocity(fake)
assert isinstance(v, torch.Tensor) and v.shape == (3,), "forward_velocity must return a tensor of shape (num_envs,)"
assert torch.allclose(v, torch.tensor([1.0, -0.5, 2.0])), f"forward_velocity: {v.tolist()} (world frame, x component)"
a = alive_bonus(fake)
assert isinstance(a, torch.Tensor) and a.shape == (3,) and a.is_floating_point(), "alive_bonus must return a float tensor (num_envs,)"
assert torch.allclose(a, torch.tensor([1.0, 1.0, 0.0])), f"alive_bonus: {a.tolist()} (a time-out is not a fall)"
print("forward_velocity, alive_bonus: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab3 as _lab3

_lab3.check_terms({"forward_velocity": forward_velocity, "alive_bonus": alive_bonus}, _lab3.load_pins())
### END HIDDEN TESTS
"""

COST_TEXT = r"""
## 3. The cost terms: energy and orientation

Both return the (non-negative) *amount* to penalize; the negative weight makes it a cost.

* `energy_penalty(env)`: $\sum_{j=1}^{8} \lvert a_j \, \dot q_j \, s \rvert$ with $a$ = `env.actions`,
  $\dot q$ = `env.dof_vel` and $s$ = `env.dof_vel_scale`: the mechanical power of each joint, in
  action units. The absolute value is taken **per joint**: a joint that brakes (negative power)
  costs energy as well, and it must not cancel another joint's positive work.
* `orientation_penalty(env)`: $g_x^2 + g_y^2$ for $g$ = `env.projected_gravity_b`. Gravity points
  straight down the torso's $-z$ axis when the torso is level, so only the $x$ and $y$ components
  measure the tilt ($g_x^2 + g_y^2 = \sin^2$ of the tilt angle, since $g$ is a unit vector).
"""

COST_SOLUTION = r'''
def energy_penalty(env):
    """Sum over the joints of |action * joint velocity * dof_vel_scale|, shape (num_envs,)."""
    ### BEGIN SOLUTION
    return (env.actions * env.dof_vel * env.dof_vel_scale).abs().sum(dim=1)
    ### END SOLUTION


def orientation_penalty(env):
    """g_x^2 + g_y^2 of the gravity direction in the torso frame, shape (num_envs,)."""
    ### BEGIN SOLUTION
    return env.projected_gravity_b[:, :2].pow(2).sum(dim=1)
    ### END SOLUTION
'''

COST_TEST = r"""
# Visible checks (2 points with the hidden ones): energy_penalty and orientation_penalty.
e = energy_penalty(fake)
assert isinstance(e, torch.Tensor) and e.shape == (3,), "energy_penalty must return a tensor of shape (num_envs,)"
# robot 0: |1*5*0.2| + |-1*5*0.2| + |0.5*-2*0.2| = 1 + 1 + 0.2; robot 1 does not act; robot 2: 0.4 + 2.0
assert torch.allclose(e, torch.tensor([2.2, 0.0, 2.4])), f"energy_penalty: {e.tolist()} (absolute value per joint)"
o = orientation_penalty(fake)
assert isinstance(o, torch.Tensor) and o.shape == (3,), "orientation_penalty must return a tensor of shape (num_envs,)"
assert torch.allclose(o, torch.tensor([0.0, 0.36, 1.0])), f"orientation_penalty: {o.tolist()}"
print("energy_penalty, orientation_penalty: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab3 as _lab3

_lab3.check_terms({"energy_penalty": energy_penalty, "orientation_penalty": orientation_penalty}, _lab3.load_pins())
### END HIDDEN TESTS
"""

FALL_TEXT = r"""
## 4. The fall penalty

`fall_penalty(env)`: 1.0 for a robot on the step on which it fell (`env.terminated`), 0.0
otherwise. An episode can also end because it reached the time limit (`env.time_outs`): that
is not a failure, and a penalty there would teach the robot that surviving to the end is bad
(compare lab 2's treatment of time-outs).
"""

FALL_SOLUTION = r'''
def fall_penalty(env):
    """1.0 on the step on which a robot fell (not on a time-out), else 0.0, shape (num_envs,)."""
    ### BEGIN SOLUTION
    return env.terminated.float()
    ### END SOLUTION
'''

FALL_TEST = r"""
# Visible checks (2 points with the hidden ones): fall_penalty.
f = fall_penalty(fake)
assert isinstance(f, torch.Tensor) and f.shape == (3,) and f.is_floating_point(), "fall_penalty must return a float tensor (num_envs,)"
assert torch.allclose(f, torch.tensor([0.0, 0.0, 1.0])), f"fall_penalty: {f.tolist()} (a time-out is not a fall)"
print("fall_penalty: visible checks passed")
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab3 as _lab3

_lab3.check_terms({"fall_penalty": fall_penalty}, _lab3.load_pins())
### END HIDDEN TESTS
"""

TRAIN_TEXT = r"""
## 5. Train the Ant with your reward

The next cell builds the reward from **your** five functions with the weights of the graded
run and trains PPO (the course's implementation with the Ant preset of `rlcourse/presets/ppo.yaml`:
NUM_ENVS robots, 16 steps each per iteration, ITERATIONS iterations = TOTAL_STEPS steps; about a
minute on a laptop). It grades what we actually want, measured without any reward term: how fast
the training robots move along $+x$, from their torso positions, averaged over the last
SPEED_ITERATIONS iterations (exploration noise included, so it is the behaviour PPO optimizes).

So little training is not enough for a good gait (the full preset trains five times longer):
expect a shuffle. The cell also measures how far the *deterministic* policy walks in
EVAL_SECONDS-second episodes. That number is not graded, because after so little training it
depends on luck: some seeds have found a gait (metres), others still stand (centimetres), and
the two differ only in floating-point details. The training speed, an average over many robots
and iterations, is much less sensitive to luck; its pass mark is half of what the reference reward
reached on its worst seed. The cell sets every seed itself, so running it again gives the same result.
"""
TRAIN_TEXT = (TRAIN_TEXT.replace("NUM_ENVS", str(P["num_envs"])).replace("SPEED_ITERATIONS", str(P["speed_iterations"]))
              .replace("ITERATIONS", str(P["iterations"])).replace("TOTAL_STEPS", f"{P['total_steps']:,}")
              .replace("EVAL_SECONDS", f"{P['eval_episode_length'] * 0.05:g}"))

TRAIN_TEST = r"""
# Graded (4 points): PPO on the Ant with YOUR five reward terms.
import random

SEED = {seed}
NUM_ENVS = {num_envs}
ITERATIONS = {iterations}
TOTAL_STEPS = {total_steps:_}  # = ITERATIONS * 16 steps per env * NUM_ENVS
WEIGHTS = {weights}
SPEED_ITERATIONS = {speed_iterations}  # the graded speed averages the last SPEED_ITERATIONS iterations
EVAL_EPISODES = {eval_episodes}  # not graded: the deterministic policy's walk
EVAL_EPISODE_LENGTH = {eval_episode_length}  # control steps of 0.05 s: 10-s episodes
EVAL_SEED = {eval_seed}

my_terms = {{"forward_velocity": forward_velocity, "alive_bonus": alive_bonus, "energy_penalty": energy_penalty,
            "orientation_penalty": orientation_penalty, "fall_penalty": fall_penalty}}
# Seeds are set here, in the graded cell, so the grader repeats exactly your run.
random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)

recorder = TermRecorder(WEIGHTS)  # records each term's mean value per iteration, for the plot below
env = rlcourse.envs.make("{env}", num_envs=NUM_ENVS, seed=SEED, rewards=lab_rewards(recorder.wrap(my_terms), WEIGHTS))
agent = rlcourse.PPO(env, seed=SEED)
meter = ForwardSpeedMeter(env)


def after_each_iteration(runner):
    recorder(runner)
    meter(runner)


start = time.perf_counter()
agent.learn(TOTAL_STEPS, eval_episodes=0, progress=False, callback=after_each_iteration)
env.close()
result = {{"{metric}": float(np.mean(meter.speeds[-SPEED_ITERATIONS:])), "iterations": len(meter.speeds) + 1}}
print(f"trained for {{TOTAL_STEPS}} steps in {{time.perf_counter() - start:.0f}} s; forward speed of the training "
      f"robots over the last {{SPEED_ITERATIONS}} iterations: {{result['{metric}']:+.3f}} m/s")

distances = forward_distance(agent.inference_policy(), EVAL_EPISODES, EVAL_EPISODE_LENGTH, EVAL_SEED)
print(f"(not graded) the deterministic policy walked {{np.mean(distances):+.2f}} m in {{EVAL_EPISODE_LENGTH * 0.05:.0f}} s "
      f"on average, min {{min(distances):+.2f}} m, max {{max(distances):+.2f}} m over {{len(distances)}} robots")
assert result["iterations"] == ITERATIONS
assert math.isfinite(result["{metric}"])
### BEGIN HIDDEN TESTS
from rlcourse.grading import lab3 as _lab3

_lab3.check_training(result, _lab3.load_pins(), seed=SEED, total_steps=TOTAL_STEPS, num_envs=NUM_ENVS,
                     weights=WEIGHTS, speed_iterations=SPEED_ITERATIONS)
### END HIDDEN TESTS
""".format(weights=_weights_literal(), **{k: v for k, v in P.items() if k != "weights"})

TRAIN_PLOT = r"""
# What your reward paid during training, term by term (and a video, outside the autograder).
fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
plot_history(recorder.history, WEIGHTS, axes[0], axes[1], title="PPO on the Ant with your reward")
axes[2].plot(np.arange(2, len(meter.speeds) + 2), meter.speeds)
axes[2].axvspan(ITERATIONS - SPEED_ITERATIONS + 0.5, ITERATIONS + 0.5, color="tab:green", alpha=0.15, label="graded")
axes[2].set(xlabel="PPO iteration", ylabel="m/s", title="forward speed of the training robots")
axes[2].legend(fontsize=8)
axes[2].grid(alpha=0.3)
plt.tight_layout()
plt.show()
if not GRADING:
    show_video_of(agent)
"""

HACK_TEXT = r"""
## 6. Reward hacking: what did this robot learn?

A colleague wanted a stronger energy penalty and trained the Ant with the weights printed by
the next cell. They report an excellent learning curve: the reward per step climbed steadily.
Their video shows a robot that thrashes its legs and keeps falling over. The next cell repeats
their run with the built-in terms (about 30 s; skipped by the autograder) and prints the
per-term episode sums of the trained policy in 10-s test episodes, the numbers
`extras["episode"]["rew_<term>"]` that the env reports for every finished episode (TensorBoard
shows them as `episode/rew_<term>`), and the mean episode length (200 steps = no fall).
"""

HACK_DEMO = r"""
HACKED_WEIGHTS = dict(LAB_WEIGHTS, energy_penalty=+0.5)
print("the colleague's weights:", HACKED_WEIGHTS)
if GRADING:
    print("(skipped by the autograder)")
else:
    hacked_agent, hacked_history, seconds = train_ppo(BUILTIN_TERMS, HACKED_WEIGHTS, iterations=60, num_envs=64)
    hacked_sums = episode_term_sums(hacked_agent.inference_policy(), BUILTIN_TERMS, HACKED_WEIGHTS)
    print(f"trained in {seconds:.0f} s; test episodes last {hacked_sums['length']:.0f} of 200 steps on average, "
          f"walked {hacked_sums['x_distance']:+.2f} m; per-term episode sums:")
    for name in TERM_NAMES:
        print(f"  rew_{name:<20} {hacked_sums.get('rew_' + name, 0.0):+9.2f}")
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
    plot_history(hacked_history, HACKED_WEIGHTS, axes[0], axes[1], title="the colleague's learning curve")
    plot_episode_sums(hacked_sums, HACKED_WEIGHTS, axes[2])
    plt.tight_layout()
    plt.show()
    show_video_of(hacked_agent)
"""

DIAGNOSIS_TEXT = r"""
Diagnose it (not graded): which term did the policy learn to collect instead of walking, and
how do you see it in the per-term sums? What was wrong with the weights? Write your answer
into the strings and set `fixed_weights`; the cell after it retrains with your weights and
prints the same table (outside the autograder).
"""

DIAGNOSIS = r'''
# Set three names: exploited_term (one of TERM_NAMES), explanation (a few sentences: what the
# robot does and which per-term sums show it), fixed_weights (a dict of the five weights).
### BEGIN SOLUTION
exploited_term = "energy_penalty"
explanation = (
    "The energy weight has the wrong sign (+0.5 instead of a negative weight), so the 'penalty' pays the robot "
    "for mechanical power: the policy learns to thrash its legs as hard as it can. rew_energy_penalty is the "
    "largest part of the return and it is positive; the thrashing tips the robot over, so the test episodes end "
    "by falls long before 200 steps (rew_fall_penalty, a short mean length, a smaller alive sum). A rising "
    "return only says that the optimizer succeeds on the reward it was given; the per-term sums show on what."
)
fixed_weights = dict(HACKED_WEIGHTS, energy_penalty=-0.05)
### END SOLUTION
'''

DIAGNOSIS_CHECK = r"""
if GRADING:
    print("(skipped by the autograder)")
else:
    fixed_agent, fixed_history, seconds = train_ppo(BUILTIN_TERMS, fixed_weights, iterations=60, num_envs=64)
    fixed_sums = episode_term_sums(fixed_agent.inference_policy(), BUILTIN_TERMS, fixed_weights)
    print(f"your diagnosis: {exploited_term}; with your weights the test episodes last {fixed_sums['length']:.0f} "
          f"of 200 steps and the robot walked {fixed_sums['x_distance']:+.2f} m")
    for name in TERM_NAMES:
        print(f"  rew_{name:<20} {fixed_sums.get('rew_' + name, 0.0):+9.2f}")
"""

REFLECT = r"""
## 7. To think about (not graded)

* Set the fall penalty to 0 and the alive bonus to -0.5 in the panel (a "hurry up" cost per
  step). What does the robot learn? Which per-term sums give it away, and which *episode length*
  do you expect?
* With the alive bonus at 5, standing still earns more per step than the untrained policy (see the
  panel's first plot). Why can that slow down learning to walk even though walking earns the
  bonus too?
* `forward_velocity` pays for speed along $+x$ in the world frame. What would a robot trained with
  the *body-frame* velocity (`root_lin_vel_b[:, 0]`) be rewarded for once it has turned around?
* The orientation penalty is $\sin^2$ of the tilt: which tilt angles does it hardly distinguish,
  and would a term using `1 - up` (the cosine) behave differently near level?
"""


def build():  # -> nbformat.NotebookNode
    return notebook([
        md("header", HEADER),
        code("setup", SETUP, locked=True),
        md("terms_text", TERMS_TEXT),
        code("helpers", HELPERS, locked=True),
        md("panel_text", PANEL_TEXT),
        code("panel", PANEL, locked=True),
        md("task_text", TASK_TEXT),
        code("task_terms", TASK_SOLUTION, solution=True),
        code("fake_env", FAKE_ENV, locked=True),
        code("test_task_terms", TASK_TEST, grade=True, locked=True, points=2),
        md("cost_text", COST_TEXT),
        code("cost_terms", COST_SOLUTION, solution=True),
        code("test_cost_terms", COST_TEST, grade=True, locked=True, points=2),
        md("fall_text", FALL_TEXT),
        code("fall_term", FALL_SOLUTION, solution=True),
        code("test_fall_term", FALL_TEST, grade=True, locked=True, points=2),
        md("train_text", TRAIN_TEXT),
        code("test_training", TRAIN_TEST, grade=True, locked=True, points=4),
        code("training_plot", TRAIN_PLOT, locked=True),
        md("hack_text", HACK_TEXT),
        code("hack_demo", HACK_DEMO, locked=True),
        md("diagnosis_text", DIAGNOSIS_TEXT),
        code("diagnosis", DIAGNOSIS, solution=True),
        code("diagnosis_check", DIAGNOSIS_CHECK, locked=True),
        md("reflect_text", REFLECT),
    ])


def main() -> None:
    write(build(), HERE / "lab3_reward_shaping.ipynb")


if __name__ == "__main__":
    main()
