"""``torch.distributed`` set-up for ``torchrun`` and the collectives the training loop and banks need.

Every helper is the identity in a single process, so library code calls them unconditionally.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as tdist


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> None:
    """Join the process group ``torchrun`` describes: NCCL for CUDA devices, gloo for the CPU."""
    if is_dist() or not launched_by_torchrun():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend, timeout=timedelta(minutes=30),
                             device_id=device if device.type == "cuda" else None)


def destroy_distributed() -> None:
    if is_dist():
        tdist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return tensor
    out = tensor.clone()
    tdist.all_reduce(out)
    return out / world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return tensor
    out = tensor.clone()
    tdist.all_reduce(out)
    return out


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return tensor
    out = tensor.clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.MAX)
    return out


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0 in rank order; sizes may differ."""
    if not is_dist():
        return tensor
    tensor = tensor.contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    tdist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    largest = max(counts)
    padded = tensor
    if tensor.shape[0] < largest:
        pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    gathered = [torch.empty_like(padded) for _ in counts]
    tdist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, counts)])


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_dist():
        return obj
    holder = [obj]
    tdist.broadcast_object_list(holder, src=src)
    return holder[0]
