"""What every lab's hidden checks share: the pins file, tolerances, the graded-run protocol, the
evaluated-return check, the checks of reward terms and of losses.

A lab is its source notebook ``solutions/<lab>/<lab>.ipynb`` plus one checks module
``rlcourse.grading.<lab>`` (found by that name; nothing here lists the labs). The checks module
holds the lab's hidden checks and their fixed inputs, and for the graded training run:

* ``measure(ns) -> dict``: what the graded cell measured, read from the notebook's namespace
  (``globals()``). The same function feeds ``rlcourse pin`` (reference runs) and the hidden
  check of a student's run, so both measure the same thing.
* ``check_training(ns)``: the hidden check of the graded cell.
* ``pass_mark(runs) -> dict``: the pass mark (``threshold``, ``threshold_rule``) from the
  reference runs; :func:`margin_pass_mark` is the usual rule.
* ``PIN_SEEDS``: the seeds ``rlcourse pin`` runs the source notebook with.

The graded run's *protocol* is the source of the notebook's ``parameters`` cell (its seed) and
of its graded training cell ``test_training`` (hidden tests left out). ``rlcourse pin`` stores
it with the pins; grading refuses pins whose protocol differs from the notebook's.

Failure messages end up in the student's feedback: they say what is wrong, never the expected
numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import nbformat

if TYPE_CHECKING:
    import torch

    from rlcourse.grading.hidden import FunctionCheck

PINS_ENV_VAR = "RLCOURSE_PINNED_METRICS"
PINS_RELPATH = Path("autograder") / "pinned_metrics.json"
# Tolerances of the function checks (student output vs the reference on the same inputs).
TOLERANCES = {"atol": 1e-5, "rtol": 1e-4}
# The cells whose source defines the graded run: the seed, then the training cell.
PARAMETERS_CELL = "parameters"
TRAINING_CELL = "test_training"
PROTOCOL_CELLS = (PARAMETERS_CELL, TRAINING_CELL)
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def fail(message: str) -> None:
    """A failed check: the message is what the student reads in the feedback."""
    raise AssertionError(message)


# --------------------------------------------------------------------------- labs and pins
def checks_module(lab: str) -> ModuleType:
    """The hidden checks of ``lab``: the module ``rlcourse.grading.<lab>``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", lab):
        raise ValueError(f"{lab!r} is not a lab id (a lab folder name is also its checks module's name)")
    try:
        return importlib.import_module(f"rlcourse.grading.{lab}")
    except ModuleNotFoundError as exc:
        if exc.name != f"rlcourse.grading.{lab}":
            raise
        raise ValueError(f"lab {lab!r} has no checks module rlcourse/grading/{lab}.py") from None


def _names(lab: str, attribute: str) -> dict[str, tuple[str, ...]]:
    try:
        module = checks_module(lab)
    except ValueError:
        return {}
    return {k: tuple(v) for k, v in getattr(module, attribute, {}).items()}


def withheld(lab: str) -> dict[str, tuple[str, ...]]:
    """Every reference implementation the lab withholds from a submission: its checks module's
    ``WITHHELD`` and ``GUARDED`` together (none for a lab without a checks module)."""
    out = _names(lab, "WITHHELD")
    for module, names in _names(lab, "GUARDED").items():
        out[module] = tuple(dict.fromkeys(out.get(module, ()) + names))
    return out


def guarded(lab: str) -> dict[str, tuple[str, ...]]:
    """The lab's ``GUARDED`` references: withheld from the submission's code, while the package's
    own code (an env that draws its randomization with them) still runs them."""
    return _names(lab, "GUARDED")


def find_pins(start: str | os.PathLike | None = None) -> Path:
    """Locate ``autograder/pinned_metrics.json``.

    Order: the ``RLCOURSE_PINNED_METRICS`` environment variable (the grading pipeline sets
    it); then every folder from ``start`` (default: the working directory) up to the root, so
    it is found from ``labs/<lab>/`` and from a copy of the course; finally the repository
    this package was installed from.
    """
    env_path = os.environ.get(PINS_ENV_VAR)
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise FileNotFoundError(f"{PINS_ENV_VAR}={env_path} does not point at a file")
        return path
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PINS_RELPATH).is_file():
            return folder / PINS_RELPATH
    package_repo = Path(__file__).resolve().parents[2]
    if (package_repo / PINS_RELPATH).is_file():
        return package_repo / PINS_RELPATH
    raise FileNotFoundError(f"no {PINS_RELPATH} above {here}; run `rlcourse pin` or set {PINS_ENV_VAR}")


def load_pins(lab: str, start: str | os.PathLike | None = None) -> dict[str, Any]:
    """The pinned entry of ``lab`` (a clear error if the file has none)."""
    path = find_pins(start)
    data = json.loads(path.read_text())
    if lab not in data:
        raise KeyError(f"{path} has no entry for {lab!r}; run `rlcourse pin {lab}`")
    return data[lab]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples -> lists, numpy/torch scalars -> numbers)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf; the check treats the string as a failure
    return value


def config_dict(cfg: Any) -> dict[str, Any]:
    """An algorithm's config dataclass as the JSON the pins store."""
    return jsonable(dataclasses.asdict(cfg))


# --------------------------------------------------------------------------- protocol
def strip_hidden_tests(source: str) -> str:
    """``source`` without its ``### BEGIN/END HIDDEN TESTS`` blocks (markers included)."""
    out, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            out.append(line)
    return "\n".join(out).rstrip("\n")


def grade_id(cell: Mapping[str, Any]) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def protocol(notebook: str | os.PathLike | nbformat.NotebookNode) -> dict[str, str]:
    """``{grade_id: source}`` of the cells that define the graded run (hidden tests left out)."""
    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(notebook, as_version=4)
    cells = {grade_id(c): strip_hidden_tests(c.source) for c in nb.cells if grade_id(c) in PROTOCOL_CELLS}
    missing = [gid for gid in PROTOCOL_CELLS if gid not in cells]
    if missing:
        raise ValueError(f"the notebook has no cell with grade_id {', '.join(missing)} (the graded run's "
                         f"seed lives in {PARAMETERS_CELL!r}, its code in {TRAINING_CELL!r})")
    return cells


def protocol_difference(lab: str, pinned: Mapping[str, str], current: Mapping[str, str]) -> str | None:
    """``None`` if the protocols agree, else a message with a diff of each cell that changed."""
    parts = []
    for gid in sorted({*pinned, *current}):
        old, new = pinned.get(gid, ""), current.get(gid, "")
        if old != new:
            diff = difflib.unified_diff(old.split("\n"), new.split("\n"), f"pinned {gid}", f"notebook {gid}",
                                        lineterm="", n=1)
            parts.append("\n".join(diff))
    if not parts:
        return None
    return (f"the graded run of {lab} changed since it was pinned; run `rlcourse pin {lab}`:\n"
            + "\n".join(parts))


def check_pins_current(course_dir: Path, labs: Iterable[str]) -> None:
    """Raise ``RuntimeError`` if a lab has no pins or its pins' protocol differs from its
    source notebook's (a pass mark measured for another run would grade wrongly)."""
    path = course_dir / PINS_RELPATH
    pinned = json.loads(path.read_text()) if path.exists() else {}
    for lab in labs:
        if lab not in pinned:
            raise RuntimeError(f"{path} has no pins for {lab}; run `rlcourse pin {lab}`")
        source = course_dir / "solutions" / lab / f"{lab}.ipynb"
        message = protocol_difference(lab, pinned[lab]["protocol"], protocol(source))
        if message:
            raise RuntimeError(message)


# What the pins record of the machine that changes training results (floating-point order).
MACHINE_KEYS = ("cpu", "python", "torch", "numpy", "gymnasium", "mujoco")


def machine_differences(pinned_versions: Mapping[str, Any]) -> list[str]:
    """``"key: pinned X, here Y"`` for each of :data:`MACHINE_KEYS` where this machine differs."""
    from rlcourse.machine import versions

    here = versions()
    return [f"{k}: pinned {pinned_versions.get(k)!r}, here {here.get(k)!r}"
            for k in MACHINE_KEYS if pinned_versions.get(k) != here.get(k)]


def check_agent_config(lab: str, agent_config: Mapping[str, Any], pins: Mapping[str, Any]) -> None:
    """The graded run trained with the pinned hyperparameters; an edited preset changes the run
    without changing the notebook, so its pass mark would no longer describe the reference."""
    pinned = pins.get("agent_config", {})
    current = jsonable(agent_config)
    changed = sorted(k for k in {*pinned, *current} if pinned.get(k) != current.get(k))
    if changed:
        fields = ", ".join(f"{k}: pinned {pinned.get(k)!r}, now {current.get(k)!r}" for k in changed)
        raise RuntimeError(f"{lab}'s graded run trained with other hyperparameters than the pinned reference "
                           f"({fields}); the instructor must run `rlcourse pin {lab}`")


# --------------------------------------------------------------------------- pass marks
def margin_pass_mark(values: list[float], metric: str, *, margin: float = 0.5, digits: int = 0,
                     baseline: float = 0.0, unit: str = "") -> dict[str, Any]:
    """``threshold = baseline + margin * (worst reference - baseline)``, rounded to ``digits``.

    A correct solution trains like the reference on *some* seed (a student's own floating-point
    order changes the trajectory like a new seed), so the pass mark sits well below the worst
    reference seed; ``baseline`` is what an untrained agent scores when that is not 0.
    """
    worst = min(values)
    threshold = round(baseline + margin * (worst - baseline), digits)
    rule = f"round({margin} * reference_min, {digits})" if baseline == 0 else \
        f"round(baseline + {margin} * (reference_min - baseline), {digits}), baseline {baseline}"
    return {"metric": metric, "reference_values": [round(v, 4) for v in values],
            "reference_mean": round(sum(values) / len(values), 4), "reference_min": round(worst, 4),
            "threshold": float(threshold) if digits > 0 else float(int(threshold)),
            "threshold_rule": rule + (f" {unit}" if unit else "")}


def check_at_least(value: Any, threshold: float, message: str) -> None:
    """``value`` is a finite number ``>= threshold``; else fail with ``message`` (no numbers in it)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        fail(message)
    if not (math.isfinite(value) and value >= float(threshold)):
        fail(message)


# --------------------------------------------------------------------------- evaluated return
def measure_evaluated_return(ns: Mapping[str, Any]) -> dict[str, Any]:
    """Labs graded on an evaluated return: the training cell leaves ``result`` (the dict of
    :func:`rlcourse.evaluate`) and ``agent`` in the namespace."""
    result, agent = ns.get("result"), ns.get("agent")
    if not isinstance(result, Mapping) or "episode_return_mean" not in result:
        fail("the training cell must leave `result`, the dict returned by rlcourse.evaluate")
    if agent is None or not hasattr(agent, "cfg"):
        fail("the training cell must leave the trained `agent`")
    return {"return": float(result["episode_return_mean"]), "std": float(result.get("episode_return_std", 0.0)),
            "episodes": int(result.get("episodes", 0)), "agent_config": config_dict(agent.cfg)}


def record_policy(ns: Mapping[str, Any]) -> dict[str, Any]:
    """What the graded cell of an evaluated-return lab produced, as plain data: the numbers it
    measured and the trained agent's networks (state dicts, tensors only)."""
    measured = measure_evaluated_return(ns)
    agent = ns["agent"]
    modules = getattr(agent, "_modules", None)
    if not callable(modules):
        fail("the training cell must leave the trained `agent`, an rlcourse algorithm")
    return {"measured": measured, "algo": str(getattr(agent, "name", "")),
            "modules": {str(k): m.state_dict() for k, m in modules().items()}}


def load_policy(lab: str, record: Mapping[str, Any], algo: str, env: Any) -> Any:
    """A fresh agent of class ``algo`` with the pinned hyperparameters, on ``env``, holding the
    recorded networks. The record must come from a run with the pinned hyperparameters (an
    edited preset trains another run than the pass mark describes)."""
    from rlcourse.algos import get_algorithm

    pins = load_pins(lab)
    measured = record.get("measured") if isinstance(record, Mapping) else None
    if not isinstance(measured, Mapping) or record.get("algo") != algo:
        fail(f"the training cell did not leave a trained {algo.upper()} agent")
    try:
        check_agent_config(lab, measured.get("agent_config", {}), pins)
    except RuntimeError as exc:  # graded: a failure of this cell, with the reason
        fail(str(exc))
    cls = get_algorithm(algo)
    agent = cls(env, seed=0, preset=None, **pins["agent_config"])
    recorded = record.get("modules")
    for key, module in agent._modules().items():
        state = recorded.get(key) if isinstance(recorded, Mapping) else None
        if not isinstance(state, Mapping):
            fail(f"the trained agent's network {key!r} was not recorded")
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError, KeyError) as exc:
            fail(f"the trained agent's network {key!r} does not fit the course's {algo.upper()} "
                 f"({str(exc).splitlines()[0]})")
    return agent


def judge_evaluated_return(lab: str, record: Mapping[str, Any], seed: int | None, *, algo: str, env_id: str,
                           num_envs: int, episodes: int, functions: str) -> None:
    """The trusted half of an evaluated-return lab's training check: load the recorded networks
    into the grader's own agent and evaluate its deterministic policy on ``episodes`` episodes
    of fresh envs seeded with ``seed`` (``None``: a fixed seed), against the pass mark."""
    import rlcourse

    env = rlcourse.envs.make(env_id, num_envs=num_envs, seed=EVAL_SEED if seed is None else seed)
    agent = load_policy(lab, record, algo, env)
    try:
        result = rlcourse.evaluate(agent, env, episodes=episodes)
    except ValueError as exc:
        if "NaN or inf" not in str(exc):
            raise
        # rlcourse.evaluate refuses the actions of weights that are NaN or inf.
        fail(f"the trained agent's policy outputs NaN or inf actions: the training diverged; check {functions}")
    check_at_least(result["episode_return_mean"], load_pins(lab)["threshold"],
                   "the trained agent's evaluation return is below the pinned pass mark for this lab "
                   f"(see the header); check {functions}")


# The evaluation seed of a training check that runs in one process (no grader to draw one).
EVAL_SEED = 424242


def check_evaluated_return(lab: str, ns: Mapping[str, Any], functions: str) -> None:
    """The shared hidden check of labs graded on an evaluated return: pinned hyperparameters,
    as many evaluation episodes as the reference, the return at or above the pass mark."""
    pins = load_pins(lab)
    measured = measure_evaluated_return(ns)
    check_agent_config(lab, measured["agent_config"], pins)
    if measured["episodes"] < min(run["measured"]["episodes"] for run in pins["runs"]):
        fail("the agent was evaluated on fewer episodes than the training cell asks for")
    check_at_least(measured["return"], pins["threshold"],
                   "the trained agent's evaluation return is below the pinned pass mark for this lab "
                   f"(see the header); check {functions}")


# --------------------------------------------------------------------------- reward terms
# The term checks import torch where they run: the pipeline's own processes import this module
# for its names only, and never load torch.
def call_terms(names: Sequence[str], case: Mapping[str, Any], fns: Sequence[Any], build_env: Callable[..., Any],
               state: Sequence[str]) -> dict[str, Any]:
    """Runs in the sandbox: each student term ``fns[i]`` (named ``names[i]``) on an env in the
    case's states (``build_env(case)``); returns per term what it returned and whether it wrote
    into the env's tensors named in ``state``. Those are then restored (the same tensors, bound
    again and refilled in place, so views of them see it too): the next term sees the same states."""
    import torch

    from rlcourse.grading.hidden import plain

    env = build_env(case)
    try:
        tensors = [getattr(env, attr) for attr in state]
        outputs: dict[str, Any] = {}
        for name, fn in zip(names, fns):
            if not callable(fn):
                outputs[name] = {"callable": False, "type": type(fn).__name__}
                continue
            before = [t.clone() for t in tensors]
            try:
                out = fn(env)
            finally:
                now = [getattr(env, attr, None) for attr in state]
                modified = any(not (isinstance(t, torch.Tensor) and torch.equal(t, b)) for t, b in zip(now, before))
                if modified:
                    for attr, tensor, saved in zip(state, tensors, before):
                        setattr(env, attr, tensor)
                        tensor.copy_(saved)
            outputs[name] = {"callable": True, "modified": modified, "is_tensor": isinstance(out, torch.Tensor),
                             "type": type(out).__name__, "out": plain(out)}
        return outputs
    finally:
        env.close()


def judge_terms(names: Sequence[str], case: Mapping[str, Any], outputs: Mapping[str, Any],
                build_env: Callable[..., Any], references: Mapping[str, Callable[..., Any]],
                in_place_example: str) -> None:
    """Runs in the grader: the reference terms (``references[name]``) on its own env in the case's
    states, compared with what each student term returned."""
    env = build_env(case)
    try:
        for name in names:
            judge_term(name, outputs.get(name), references[name](env), case, in_place_example)
    finally:
        env.close()


def judge_term(name: str, record: Any, want: torch.Tensor, case: Mapping[str, Any], in_place_example: str) -> None:
    """What the student's term ``name`` returned on the robots of ``case`` (its ``record`` from
    :func:`call_terms`) against the reference values ``want``; the failure names the term and the
    first robot that differs, by its label, never the expected numbers."""
    import torch

    n, batch = len(case["labels"]), case["batch"]
    if not isinstance(record, Mapping):
        fail(f"the hidden check of {name} found no result of it (did the cell run to the end?)")
    kind = str(record.get("type"))[:60]
    if not record.get("callable"):
        fail(f"{name} must be a function of the env, got {kind}")
    if record.get("modified"):
        fail(f"{name} modified the env's state in place (e.g. {in_place_example} or +=); compute on new tensors")
    got = record.get("out")
    if not (record.get("is_tensor") and isinstance(got, torch.Tensor)):
        fail(f"{name} must return a torch tensor, got {kind}")
    if tuple(got.shape) != (n,):
        fail(f"{name} must return one value per robot, shape (num_envs,) = ({n},); got shape {tuple(got.shape)}")
    if not got.is_floating_point():
        fail(f"{name} must return a float tensor (a bool tensor needs .float())")
    got, want = got.detach().to(torch.float32), want.detach().to(torch.float32)
    if not torch.isfinite(got).all():
        fail(f"{name} returned NaN or inf on {batch} of robot states")
    close = torch.isclose(got, want, **TOLERANCES)
    if not bool(close.all()):
        bad = (~close).nonzero().flatten().tolist()
        if bool(torch.isclose(-got, want, **TOLERANCES).all()):
            hint = " (only the sign differs: the term returns the quantity itself, the weight carries the sign)"
        else:
            hint = ""
        fail(f"{name} differs from the reference on {len(bad)} of {n} robots of {batch}; "
             f"first: robot {bad[0]} ({case['labels'][bad[0]]}){hint}")


def term_check(name: str, terms: tuple[str, ...], cases: Callable[[int | None], list[dict[str, Any]]],
               build_env: Callable[..., Any], references: Mapping[str, Callable[..., Any]], state: Sequence[str],
               *, in_place_example: str) -> FunctionCheck:
    """The check ``name`` of one graded cell of reward terms: the student's ``terms``, in the order
    the cell passes them, each run on envs that ``build_env`` puts in the states of ``cases``
    (plain data), against ``references[term]``. ``state``: the names of the env's tensors a term
    must not write into; ``in_place_example``: the in-place method the message about that names."""
    from rlcourse.grading.hidden import FunctionCheck

    def call(case: dict[str, Any], *fns: Any) -> dict[str, Any]:
        return call_terms(terms, case, fns, build_env, state)

    def judge(case: dict[str, Any], outputs: dict[str, Any]) -> None:
        judge_terms(terms, case, outputs, build_env, references, in_place_example)

    return FunctionCheck(name, cases, call, judge)


# --------------------------------------------------------------------------- losses
def tensor_or_type(value: Any) -> Any:
    """A returned tensor as it is, anything else as the name of its type (so that the judge can
    tell a tensor from a number, a numpy array or a list, which records would turn into tensors)."""
    import torch

    return value if isinstance(value, torch.Tensor) else f"<{type(value).__qualname__}>"


def record_loss(loss: Any, batch: Any, case: Mapping[str, Any], fields: Sequence[str], trained: Iterable[Any],
                untrained: Iterable[Any], grads_key: str) -> dict[str, Any]:
    """Runs in the sandbox: the record of a student's ``loss`` computed on ``batch``, a copy of the
    case's minibatch: the loss, the ``fields`` of the batch it wrote into (``modified``) and, for a
    scalar with gradient, its gradients with respect to the ``trained`` parameters (``grads_key``;
    zeros where it has none) and how much gradient reached the ``untrained`` tensors, the target
    networks' and inputs that must stay constants (``target_grad_norm``)."""
    import torch

    out: dict[str, Any] = {"loss": tensor_or_type(loss),
                           "modified": [k for k in fields if not torch.equal(getattr(batch, k), case[k])]}
    if isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad:
        trained = list(trained)
        grads = torch.autograd.grad(loss, trained + list(untrained), allow_unused=True)
        out[grads_key] = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(trained, grads)]
        out["target_grad_norm"] = float(sum(0.0 if gr is None else float(gr.abs().sum())
                                            for gr in grads[len(trained):]))
    return out


def judge_loss_record(name: str, outputs: Mapping[str, Any], grads_key: str, *, returns: str, scalar: str,
                      not_differentiable: str, target_gradient: str) -> tuple[torch.Tensor, list[Any]]:
    """Runs in the grader: what must hold of a :func:`record_loss` record before its value is
    compared with the reference, else a failure: the loss ``name`` wrote into no field of the
    batch, returned a scalar tensor (``returns``, ``scalar``: what it is, in the messages), has a
    gradient with respect to the trained parameters (else ``not_differentiable``) and sent none
    into the target (else ``target_gradient``). Returns the loss and those gradients."""
    import torch

    modified = outputs.get("modified")
    if isinstance(modified, list) and modified:
        fail(f"{name} modified batch.{modified[0]} in place; work on new tensors")
    loss = outputs.get("loss")
    if not isinstance(loss, torch.Tensor):
        fail(f"{name} must return a torch tensor ({returns})")
    if loss.dim() != 0:
        fail(f"{name} returned shape {tuple(loss.shape)}; it must return a scalar (0-dim) tensor: {scalar}")
    grads = outputs.get(grads_key)
    # No gradient at all, or only zeros (Q(s, a) computed without gradient, a fresh leaf returned).
    if not isinstance(grads, list) or all(isinstance(gr, torch.Tensor) and not bool(gr.any()) for gr in grads):
        fail(not_differentiable)
    target_grad = outputs.get("target_grad_norm")
    if not isinstance(target_grad, (int, float)) or not math.isfinite(target_grad) or target_grad != 0.0:
        fail(target_gradient)
    return loss, grads


def same_grads(got: Any, want: Sequence[torch.Tensor], tol: Mapping[str, float] = TOLERANCES) -> bool:
    """Whether ``got`` (recorded gradients) is a list of tensors of the shapes of ``want`` and close to it."""
    import torch

    return (isinstance(got, list) and len(got) == len(want) and all(
        isinstance(g, torch.Tensor) and g.shape == w.shape and torch.allclose(g.float(), w, **tol)
        for g, w in zip(got, want)))
