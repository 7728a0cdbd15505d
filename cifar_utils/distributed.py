"""torch.distributed helpers for DDP under torchrun; every function also works in a single process.

``torchrun --nproc_per_node N -m cifar_utils train --preset NAME`` sets RANK, WORLD_SIZE and LOCAL_RANK;
:func:`setup` then joins the process group (NCCL on GPUs, gloo on the CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global rank of this process
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (selects the GPU)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (0 and 1 outside torchrun)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def check_batch_divides(batch_size: int, world: int) -> None:
    """Every rank runs this before any collective, so a bad setting fails everywhere instead of hanging.

    Only the training batch must divide: equal shards keep DDP's averaged gradient the mean over the global
    batch. Evaluation has no gradient, so its batch is simply split as evenly as it goes."""
    if batch_size % world:
        suggestion = -(-batch_size // world) * world
        raise ConfigError(f"batch_size={batch_size} does not divide across {world} processes; choose a multiple "
                          f"of {world}, such as --batch-size {suggestion} (the per-process batch is "
                          "batch_size / nproc_per_node)")


def setup(device_type: str) -> DistInfo:
    """Join the process group torchrun describes: NCCL for CUDA, gloo otherwise."""
    info = env_info()
    if not is_initialized():  # also with one process, so that a 1-GPU torchrun exercises NCCL
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum a few numbers over all ranks (returned unchanged in a single process)."""
    if not is_initialized():
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_main(value):
    """Rank 0's ``value`` on every rank (unchanged in a single process); it must be picklable."""
    if not is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if is_initialized():
        dist.barrier()
