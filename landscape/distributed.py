"""Sharding work over ``torch.distributed`` ranks (``torchrun``), and nothing home-made.

Library code never takes a communicator: when the default process group is initialised
(by :func:`init_from_env` in the CLI, or by the user), surfaces split their pending cells
over the ranks and gather the finished chunks to rank 0, the only process that writes the
HDF5 file (PyPI's h5py has no parallel HDF5). Without a process group every helper here is
the identity, so the same code runs in one process.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["broadcast_object", "gather_to_root", "init_from_env", "is_distributed", "rank_and_world", "shutdown"]


def is_distributed() -> bool:
    """Whether a default process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str | None = None) -> str | None:
    """Initialise the default process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL when this rank gets a GPU (``cuda:LOCAL_RANK``), gloo otherwise. Returns the
    device this rank should use (None to keep the caller's choice).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return device
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    return device


def shutdown() -> None:
    """Destroy the default process group if this module's caller created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_root(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    rank = dist.get_rank()
    out = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out
