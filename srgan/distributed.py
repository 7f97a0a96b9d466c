"""Several GPUs for ``srgan.train`` (``torchrun --nproc_per_node N -m srgan.train``).

One process a device: NCCL between GPUs, gloo on CPUs (the tests). Every rank holds all the
training images and draws its own batches (seed + rank); DDP averages the gradients; rank 0
alone validates, logs and writes files. Decisions that lead to collectives (stop, checkpoint,
the sized schedule) are agreed by all-reduce; a single process decides on the host, with no
device read.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from srgan.checkpoint import TrainingSetupError


def setup(device_arg: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(wanted)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingSetupError(f"--device {wanted}: no CUDA device is available")
        if world > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else 0)
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def teardown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module | None, device: torch.device, world: int) -> nn.Module | None:
    """``module`` in DistributedDataParallel when there are several ranks, else itself."""
    if module is None or world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def gather_object(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def any_rank(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag, true where it is true on any rank."""
    if world == 1:
        return flags
    reduced = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return [bool(f) for f in reduced.tolist()]


def min_over_ranks(value: int, world: int, device: torch.device) -> int:
    if world == 1:
        return value
    reduced = torch.tensor([value], device=device)
    dist.all_reduce(reduced, op=dist.ReduceOp.MIN)
    return int(reduced.item())
