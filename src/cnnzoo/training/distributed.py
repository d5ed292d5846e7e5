"""PyTorch DDP under torchrun: set-up, teardown, and metric reduction.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the run is a single
process and every function here is a no-op. CPU processes use gloo; GPU processes use nccl for
CUDA tensors and gloo for CPU ones (:func:`backend_for`): the metric sums are CPU tensors, which
nccl alone rejects.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend_for(device_type: str) -> str:
    """The process-group backend for a run on ``device_type``: on CUDA one backend per device
    type, so that DDP's gradients go through nccl while the CPU metric sums go through gloo."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def init(device_type: str) -> Dist:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend=backend_for(device_type))
        else:
            # torchrun's store outlives a restart, and with it the addresses the failed
            # group's processes published there: a restarted process could read a dead
            # peer's and fail to connect. Each attempt gets keys of its own.
            store, rank, world_size = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"cnnzoo/attempt{restart}/", store)
            dist.init_process_group(
                backend=backend_for(device_type), store=store, rank=rank, world_size=world_size
            )
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def shutdown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        # Without a barrier, gloo sometimes aborts at teardown while a peer is still sending.
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: Dist) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_finite(value: float, info: Dist) -> bool:
    """Whether ``value`` is finite on every process. Every process must call it at the same
    point: a process that stopped alone would leave the others waiting in DDP's all-reduce."""
    if not info.enabled:
        return math.isfinite(value)
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], dtype=torch.float64)
    return all_reduce_sum(bad, info).item() == 0


def agree(loss: float, stop: bool, info: Dist) -> tuple[bool, bool]:
    """Whether ``loss`` is finite on every process, and whether any process was asked to stop
    (a signal): the two questions of every training step, in one all-reduce."""
    if not info.enabled:
        return math.isfinite(loss), stop
    flags = torch.tensor([0.0 if math.isfinite(loss) else 1.0, float(stop)], dtype=torch.float64)
    bad, stops = all_reduce_sum(flags, info).tolist()
    return bad == 0, stops > 0


def any_true(flag: bool, info: Dist) -> bool:
    """Whether ``flag`` is set on any process (e.g. rank 0's reporter says stop), for every
    process."""
    if not info.enabled:
        return flag
    return all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64), info).item() > 0


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()
