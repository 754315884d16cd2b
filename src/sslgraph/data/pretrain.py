"""Datasets the training loop and the evaluators iterate over.

A pretraining item is ``(crop1, crop2, index, label)``: crop 1 from image ``index``, crop 2 from its partner
(itself, or a neighbour chosen by bootstrapping). The augmentation of an item is a pure function of
``(seed, epoch, index)``, so runs with any number of workers, batch size or processes see identical crops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from sslgraph.data.datasets import ImageDataset
from sslgraph.data.transforms import TwoCropTransform

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One step of the SplitMix64 mixer: nearby inputs give unrelated 64-bit outputs."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one item's augmentation, well mixed in each of the three inputs."""
    state = 0
    for part in (seed, epoch, index):
        state = _splitmix64(state ^ (part & _MASK64))
    return state


class PretrainDataset(Dataset):
    """Two crops per training image, crop 2 taken from ``partners[index]`` when partners are set.

    The trainer calls :meth:`set_epoch` and :meth:`set_partners` before creating each epoch's (non-persistent)
    worker processes, so plain attributes reach the workers.
    """

    def __init__(self, base: ImageDataset, transform: TwoCropTransform, *, seed: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.partners: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_partners(self, partners: torch.Tensor | None) -> None:
        """The source image of crop 2 for every index (``None``: the image itself)."""
        if partners is not None:
            n = len(self.base)
            if partners.shape != (n,) or partners.dtype.is_floating_point or partners.dtype == torch.bool:
                raise ValueError(f"partners must be an integer tensor of shape [{n}], "
                                 f"got {partners.dtype} {list(partners.shape)}")
            partners = partners.detach().to("cpu", torch.long)
            if n and (int(partners.min()) < 0 or int(partners.max()) >= n):
                raise ValueError(f"partners must lie in [0, {n}), got values in "
                                 f"[{int(partners.min())}, {int(partners.max())}]")
        self.partners = partners

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        img1 = self.base.load(index)
        partner = index if self.partners is None else int(self.partners[index])
        img2 = img1 if partner == index else self.base.load(partner)
        # Seed only the CPU generator (torch.manual_seed would also reseed every CUDA device) inside a fork,
        # so the caller's random stream continues exactly as if this item had not been drawn.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, self.epoch, index))
            crop1, crop2 = self.transform(img1, img2)
        return crop1, crop2, index, int(self.base.targets[index])


class EvalDataset(Dataset):
    """``(transform(image), index, label)`` for feature extraction and monitoring."""

    def __init__(self, base: ImageDataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.base.load(index)), index, int(self.base.targets[index])
