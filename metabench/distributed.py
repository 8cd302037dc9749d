"""Data-parallel meta-training with torch.distributed: ``torchrun --nproc-per-node N -m metabench train ...``.

Every rank draws the same meta-batch from the same seeded generator and trains on its own equal share of
the tasks; before each optimizer step the gradients are averaged over the ranks (an all-reduce), which
is the gradient of the mean loss over the whole meta-batch, so N ranks take the steps one process would.
Rank 0 alone validates, writes the log and the checkpoint; every rank resumes from that checkpoint.
Backend: gloo on CPU, nccl on CUDA (one GPU per rank, by ``LOCAL_RANK``).

Learners qualify when their ``train_step`` averages a loss over the tasks it is given and steps the
``torch.optim`` optimizers it holds as attributes (MAML, FOMAML, ANIL, the LSTM optimizer, Meta-SGD); the
meta-batch must split evenly over the ranks.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist

from metabench.episodes import Episodes


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def start(device: str | torch.device) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (if any, and not joined yet); returns :func:`world`.

    The group is left at exit: a gloo process that exits without leaving it can abort ("terminate called
    without an active exception") and fail the whole torchrun job after a finished run.
    """
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        atexit.register(dist.destroy_process_group)
    return world()


def shard(episodes: Episodes, rank: int, size: int) -> Episodes:
    """Rank ``rank``'s equal share of a meta-batch (consecutive tasks); the whole batch for a single process."""
    if size == 1:
        return episodes
    if len(episodes) % size:
        raise ValueError(f"a meta-batch of {len(episodes)} tasks does not split over {size} ranks; set meta_batch")
    share = len(episodes) // size
    return episodes[rank * share : (rank + 1) * share]


def optimizers(learner: Any) -> list[torch.optim.Optimizer]:
    """The ``torch.optim`` optimizers a learner holds as attributes."""
    return [value for value in vars(learner).values() if isinstance(value, torch.optim.Optimizer)]


def average_gradients(learner: Any) -> None:
    """Make every optimizer step of ``learner`` use the gradient averaged over the ranks."""
    found = optimizers(learner)
    if not found:
        raise ValueError(
            f"{type(learner).__name__} steps no torch.optim optimizer, so its updates cannot be averaged over ranks"
        )
    size = dist.get_world_size()

    def all_reduce(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= size

    for optimizer in found:
        optimizer.register_step_pre_hook(all_reduce)


def barrier() -> None:
    """Wait until every rank is here (nothing to wait for outside ``torchrun``): the ranks end a run together,
    once rank 0 has validated and saved, rather than leaving it alone in the process group."""
    if dist.is_initialized():
        dist.barrier()


def agree(stop: bool) -> bool:
    """True on every rank if any rank wants to stop (a time budget, a signal): ranks leave the loop together."""
    if not dist.is_initialized():
        return stop
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([float(stop)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
