"""The dataset the evaluators and the kNN monitor iterate over: clean, deterministic views of a split."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from sslgraph.data.datasets import ImageDataset


class EvalDataset(Dataset):
    """``(transform(image), index, label)`` for feature extraction and monitoring."""

    def __init__(self, base: ImageDataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.base.load(index)), index, int(self.base.targets[index])

    @property
    def in_memory(self) -> bool:
        """Whether the split is one uint8 tensor in memory, so :meth:`image_slice` can read it."""
        return self.base.images is not None

    def image_slice(self, start: int, stop: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Items ``start .. stop - 1``'s transformed images as one batch, transformed in one call on ``device``
        (the same values as item by item, without indexing and collating each): for splits held in memory."""
        if self.base.images is None:
            raise RuntimeError("EvalDataset.image_slice: this split is read from files; iterate the items instead")
        return self.transform(self.base.images[start:stop].to(device, non_blocking=True))
