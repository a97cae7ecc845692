"""torch.distributed helpers: start from ``torchrun``'s environment, rank-0 checks (the sum over processes is
:func:`fapn.runtime.all_reduce_sum`, which the metrics use too)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fapn.runtime import resolve_device

__all__ = ["DistributedContext", "init_distributed", "is_main_process"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, and whether DDP is on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): nccl on GPU, gloo on CPU.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda`` (each process takes GPU ``LOCAL_RANK``).
    """
    resolved = resolve_device(device, "train.device")
    kind = resolved.type
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    torch_device = torch.device("cuda", local_rank) if kind == "cuda" and world_size > 1 else resolved
    if kind == "cuda":
        torch.cuda.set_device(torch_device)
    return DistributedContext(rank, world_size, local_rank, torch_device)


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
