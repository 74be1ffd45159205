"""Multi-process training (rlcourse.distributed): the collectives on hand-checkable numbers, and
`rlcourse train --nproc 2` on CPU through the real CLI (ranks stay identical, rank 0 alone writes,
the 2-process checkpoint resumes in 1 process)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from rlcourse import distributed

# Rank r's batch for a linear model y = w . x with w = (1, 2) and targets 0. Residuals
# w . x: rank 0 (1, 2), rank 1 (3, 2). Gradient of the mean squared error, 2/n sum r_i x_i:
#   rank 0: (2/2) * (1*(1,0) + 2*(0,1))         = (1, 2)
#   rank 1: (2/2) * (3*(1,1) + 2*(2,0))         = (7, 3)
#   both batches together: (2/4) * (8, 5)       = (4, 2.5) = the mean of the two
BATCHES = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [2.0, 0.0]])]
WEIGHT = torch.tensor([[1.0, 2.0]])
EXPECTED_GRAD = torch.tensor([[4.0, 2.5]])
# mean_std over ranks of different sizes: [1, 2, 3] and [4, 5] -> mean 3, unbiased var 10/4.
SAMPLES = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0])]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():   # rank 1 starts elsewhere: the broadcast must overwrite it
            model.weight.copy_(WEIGHT if rank == 0 else torch.full((1, 2), 5.0))
        distributed.broadcast_modules([model])
        weight_after_broadcast = model.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = model(BATCHES[rank]).squeeze(1).pow(2).mean()
        loss.backward()
        local_grad = model.weight.grad.clone()
        distributed.all_reduce_grads(optimizer)
        optimizer.step()
        mean, std = distributed.mean_std(SAMPLES[rank])
        torch.save({
            "weight_after_broadcast": weight_after_broadcast, "local_grad": local_grad,
            "grad": model.weight.grad.clone(), "weight": model.weight.detach().clone(),
            "mean": mean, "std": std,
            "gathered": distributed.all_gather_cat(torch.tensor([[2.0 * rank, 2.0 * rank + 1]])),
            "kl": distributed.all_reduce_mean(torch.tensor(0.01 if rank == 0 else 0.03)),
            "any": distributed.any_rank(rank == 1), "world_size": distributed.world_size(),
            "rank_seed": distributed.rank_seed(7),
        }, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_collectives_match_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    # fork: the children need nothing re-imported (a spawned child re-imports torch, ~3 s each here).
    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    # The same gradient computed in one process on both batches together.
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(WEIGHT)
    model(torch.cat(BATCHES)).squeeze(1).pow(2).mean().backward()
    assert torch.allclose(model.weight.grad, EXPECTED_GRAD)

    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.allclose(out[0]["local_grad"], torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(out[1]["local_grad"], torch.tensor([[7.0, 3.0]]))
    for r, o in enumerate(out):
        assert torch.equal(o["weight_after_broadcast"], WEIGHT), r
        assert torch.allclose(o["grad"], EXPECTED_GRAD), r
        assert torch.allclose(o["weight"], WEIGHT - 0.1 * EXPECTED_GRAD), r   # same step on both ranks
        assert o["mean"].item() == pytest.approx(3.0)
        assert o["std"].item() == pytest.approx(2.5 ** 0.5)
        assert torch.equal(o["gathered"], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        assert o["kl"].item() == pytest.approx(0.02)
        assert o["any"] is True
        assert o["world_size"] == 2
        assert o["rank_seed"] == 7 + r * distributed.RANK_SEED_OFFSET


def test_without_a_process_group_everything_is_one_process() -> None:
    x = torch.tensor([1.0, 2.0, 4.0])
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.all_gather_cat(x) is x
    assert distributed.all_reduce_mean(x) is x
    mean, std = distributed.mean_std(x)
    assert torch.equal(mean, x.mean()) and torch.equal(std, x.std())
    assert distributed.rank_seed(5) == 5


def _ranks_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs between ranks"


@pytest.mark.slow  # two torchrun launches: ~20 s
def test_two_processes_through_the_cli_then_resume_in_one(
    tmp_path: Path, run_cli, tiny_ppo_sets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, ranks = tmp_path / "run", tmp_path / "ranks"
    monkeypatch.setenv(distributed.RANK_STATE_ENV, str(ranks))
    # CartPole's preset rollout: 32 steps x 2 envs x 2 processes = 128 steps per iteration, 2 iterations.
    proc = run_cli(["train", "ppo", "--env", "CartPole-v1", "--num-envs", "2", "--total-steps", "256",
                    "--nproc", "2", "--eval-episodes", "2", "--checkpoint-every", "1", "--run-dir", str(run_dir),
                    *tiny_ppo_sets], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 processes x 2 envs" in proc.stdout

    # Parameters, normalizer statistics and target networks: identical on both ranks.
    state = [torch.load(ranks / f"rank{r}.pt") for r in range(2)]
    _ranks_equal(*state)
    # The normalizer saw both processes' observations: one per env step of the whole run.
    assert state[0]["obs_normalizer"]["count"].item() == 256

    # Rank 0 alone wrote the run directory: one TensorBoard file, one row per iteration,
    # one metrics report on stdout.
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    with (run_dir / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == [256]   # logged every 1000 steps and at the end
    assert proc.stdout.count('"algo": "ppo"') == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["nproc"] == 2 and metrics["total_steps"] == 256 and metrics["episodes"] == 2
    info = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert (info["nproc"], info["num_envs"], info["seed"]) == (2, 2, 0)
    assert (run_dir / "policy.pt").exists()
    checkpoint = torch.load(sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=False)
    _ranks_equal({k: v for k, v in checkpoint["modules"].items()}, state[0])

    # The 2-process checkpoint resumes in one process with the same total of 4 envs.
    monkeypatch.delenv(distributed.RANK_STATE_ENV)
    proc = run_cli(["train", "ppo", "--resume", "--run-dir", str(run_dir), "--total-steps", "384"],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"resuming from .*ckpt_0000000256\.pt at step 256", proc.stdout)
    assert "(4 envs, 384 steps)" in proc.stdout
    info = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert (info["nproc"], info["num_envs"]) == (1, 4)
    with (run_dir / "progress.csv").open() as f:
        assert [int(r["global_step"]) for r in csv.DictReader(f)] == [256, 384]


def test_bad_nproc_is_a_usage_error(tmp_path: Path, run_cli) -> None:
    proc = run_cli(["train", "ppo", "--env", "CartPole-v1", "--nproc", "0"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "--nproc: expected a positive integer, got '0'" in proc.stderr


def test_unknown_env_is_one_line_before_any_process_starts(tmp_path: Path, run_cli) -> None:
    proc = run_cli(["train", "ppo", "--env", "CartPole-v9", "--nproc", "2"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown environment id 'CartPole-v9'. Did you mean CartPole-v1" in proc.stderr
    assert "torchrun" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
