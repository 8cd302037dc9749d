"""Data-parallel meta-training (metabench.distributed): two gloo ranks, each on half the meta-batch, take the
meta-gradient one process takes on all of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metabench import distributed
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs import make_env

ENV = "MetaOmniglot-5w1s-v1"
CONFIG = {"meta_batch": 4, "width": 8, "inner_steps": 2}


def meta_gradient(rank: int, ranks: int) -> list[torch.Tensor]:
    """The gradients second-order MAML's optimizer steps with, on this rank's share of a seeded meta-batch."""
    torch.set_num_threads(1)
    learner = build_learner("maml", ENV, CONFIG, "cpu", 0)
    episodes = make_env(ENV, split="train").sampler.sample(4, torch.Generator().manual_seed(0))
    if ranks > 1:
        distributed.average_gradients(learner)
        episodes = distributed.shard(episodes, rank, ranks)
    captured: list[torch.Tensor] = []
    for optimizer in distributed.optimizers(learner):  # hooks run in order: after the all-reduce
        optimizer.register_step_pre_hook(
            lambda optimizer, args, kwargs: captured.extend(
                p.grad.clone() for group in optimizer.param_groups for p in group["params"]
            )
        )
    learner.train_step(episodes)
    return captured


def _rank(rank: int, ranks: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=ranks)
    try:
        torch.save(meta_gradient(rank, ranks), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_take_the_single_process_meta_gradient(omniglot_dir: Path, tmp_path: Path) -> None:
    single = meta_gradient(0, 1)
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        parallel = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(parallel) == len(single) > 0
        for a, b in zip(parallel, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="does not split"):
        distributed.shard(make_env(ENV).sampler.sample(3, torch.Generator()), 0, 2)


def test_torchrun_trains_on_two_ranks_and_rank_zero_writes_the_checkpoint(omniglot_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "metabench", "train"]
    # rank 0 alone validates: 300 episodes keep it busy while rank 1 is done (a run once aborted at that exit)
    command += ["maml", "--env", ENV, "--iterations", "3", "--out", str(tmp_path / "run"), "--val-episodes", "300"]
    command += ["--config", "meta_batch=4", "width=8"]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    learner, checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["iteration"] == 3 and checkpoint["training"]["episodes_seen"] == 12
