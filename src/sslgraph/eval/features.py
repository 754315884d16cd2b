"""Batched feature extraction in eval mode, sharded over processes when distributed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sslgraph.utils import dist
from sslgraph.utils.misc import progress as progress_bar


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> torch.Tensor:
    """Apply ``fn`` to every item ``(image, index, label)`` of ``dataset``; returns ``[N, D]`` float32 on ``device``.

    Under ``torch.distributed`` each process embeds one contiguous shard and the shards are all-gathered,
    so every process returns the full, identically ordered matrix. ``fn`` should already be in eval mode.
    """
    total = len(dataset)  # type: ignore[arg-type]
    per_rank = math.ceil(total / dist.world_size())
    start = min(dist.rank() * per_rank, total)
    shard = Subset(dataset, range(start, min(start + per_rank, total)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    chunks: list[torch.Tensor] = []
    for images, _, _ in progress_bar(loader, desc=desc, total=len(loader), disable=None if progress else True):
        out = fn(images.to(device, non_blocking=True))
        chunks.append(out.float())
    if chunks:
        local = torch.cat(chunks)
    else:
        probe = fn(dataset[0][0].unsqueeze(0).to(device))
        local = probe.new_zeros((0, probe.shape[1])).float()
    return dist.all_gather_cat(local)
