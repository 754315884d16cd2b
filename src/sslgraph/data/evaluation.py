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
