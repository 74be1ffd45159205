"""Multi-process training with ``torch.distributed``: the plumbing, in one place.

``rlcourse train ALGO --nproc N`` starts N processes with torchrun (:func:`launch`); the
same code also runs under a torchrun started by hand, across machines (README). In a
run with N processes (ranks):

* rank 0's parameters and buffers are copied to every rank before training
  (:func:`broadcast_modules`), so all ranks start from the same agent;
* each rank steps its own ``--num-envs`` envs, seeded ``seed + rank * RANK_SEED_OFFSET``
  (:func:`rank_seed`), and draws its own actions and minibatches;
* the observation normalizer is updated with every rank's observations
  (:func:`all_gather_cat`), as one process stepping all N x num_envs envs would;
* after every ``backward`` the gradients are averaged over the ranks
  (:func:`all_reduce_grads`). Each rank's loss is a mean over an equally sized batch, so
  the average is the gradient of the mean loss over the union of the ranks' batches: a
  PPO minibatch of the union of the N ranks' minibatches, an off-policy batch of
  N x batch_size. Identical gradients and identical optimizers keep the parameters
  identical on every rank;
* PPO standardizes advantages with the mean and std of all ranks' rollouts
  (:func:`mean_std`) and averages the KL that drives its adaptive step size
  (:func:`all_reduce_mean`);
* ``global_step`` counts the env steps of all ranks, so ``--total-steps`` is the total;
* rank 0 alone logs, evaluates, writes checkpoints and exports the policy (the runner).

Without a process group (one process, the default) every function here returns its
input unchanged: single-process training does exactly what it did before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist

# Rank r seeds its envs and random generators with seed + r * RANK_SEED_OFFSET: far enough
# apart that the per-env seeds of two ranks (seed + env index) and the eval env's
# (seed + runner.EVAL_SEED_OFFSET) never meet.
RANK_SEED_OFFSET = 1_000_000
# When set, every rank writes its final networks (parameters and buffers) to
# <dir>/rank<r>.pt at the end of training: a check that the ranks stayed in sync.
RANK_STATE_ENV = "RLCOURSE_RANK_STATE_DIR"


def is_initialized() -> bool:
    """Whether a process group is running (training with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes training together (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run directory."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """The seed of this rank's envs and generators: ``seed + rank * RANK_SEED_OFFSET``."""
    return int(seed) + rank() * RANK_SEED_OFFSET


def launched_by_torchrun() -> bool:
    """Whether torchrun (``torch.distributed.run``) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init(device: str = "cpu") -> torch.device:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); returns this rank's device.

    On CUDA, local rank ``r`` uses GPU ``r``. Outside torchrun nothing is started and
    ``device`` is returned as it is.
    """
    if not launched_by_torchrun():
        return torch.device(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU: torch sees {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)
    if not is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    # nccl moves only CUDA tensors; gloo moves CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def broadcast_modules(modules: Iterable[torch.nn.Module]) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's."""
    if not is_initialized():
        return
    for module in modules:
        for tensor in module.state_dict().values():   # the live parameters and buffers
            dist.broadcast(tensor, src=0)


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """The ranks' ``x`` (equal shapes) concatenated along dim 0 in rank order; ``x`` itself without a process group."""
    if not is_initialized():
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the ranks (a new tensor); ``x`` itself without a process group."""
    if not is_initialized():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


@torch.no_grad()
def all_reduce_grads(optimizer: torch.optim.Optimizer) -> None:
    """Replace the gradient of every parameter ``optimizer`` updates by its mean over the ranks.

    Call between ``loss.backward()`` and gradient clipping / ``optimizer.step()``. The
    gradients travel as one flat tensor (one message per call instead of one per layer).
    Parameters without a gradient are skipped; they are the same on every rank because
    every rank runs the same graph.
    """
    if not is_initialized():
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size()
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of all ranks' ``x`` together, as of their concatenation.

    Two passes (the sum, then the squared deviations from the global mean) keep the
    precision of ``x.std()``. Without a process group: ``(x.mean(), x.std())``.
    """
    if not is_initialized():
        return x.mean(), x.std()
    total = torch.stack([x.sum(), torch.tensor(float(x.numel()), dtype=x.dtype, device=x.device)])
    dist.all_reduce(total)
    mean = total[0] / total[1]
    squares = ((x - mean) ** 2).sum()
    dist.all_reduce(squares)
    return mean, torch.sqrt(squares / (total[1] - 1))


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank (e.g. a callback asked to stop)."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def dump_rank_state(modules: dict[str, torch.nn.Module]) -> Path | None:
    """If ``$RLCOURSE_RANK_STATE_DIR`` is set, write this rank's networks to ``<dir>/rank<r>.pt``.

    A debugging aid (and what tests/test_distributed.py compares): after training, every
    rank's file must hold the same parameters and normalizer statistics.
    """
    folder = os.environ.get(RANK_STATE_ENV)
    if not folder:
        return None
    path = Path(folder) / f"rank{rank()}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()}, path)
    return path


def launch(nproc: int, argv: list[str], threads: int = 1) -> int:
    """Run ``rlcourse <argv>`` in ``nproc`` processes on this machine with torchrun; returns its exit status.

    ``torchrun --standalone --nproc-per-node N -m rlcourse.cli ARGV``: a single-node
    rendezvous on a free local port. ``OMP_NUM_THREADS`` is set to ``threads`` (torchrun
    would otherwise set 1 and warn about it).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "rlcourse.cli", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.call(command, env=env)


__all__ = [
    "RANK_SEED_OFFSET", "RANK_STATE_ENV", "all_gather_cat", "all_reduce_grads", "all_reduce_mean", "any_rank",
    "broadcast_modules", "dump_rank_state", "init", "is_initialized", "is_main", "launch", "launched_by_torchrun",
    "mean_std", "rank", "rank_seed", "shutdown", "world_size",
]
