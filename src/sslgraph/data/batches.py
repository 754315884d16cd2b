"""uint8 batches for pretraining: the loader only gathers or decodes images; the views are made on the device.

For a data set held in the uint8 cache (CIFAR-10, any small folder) a batch is one indexing operation on that
tensor — no worker process, no per-image Python — optionally with the whole cache kept on the GPU. Larger
folders (ImageNet) are decoded by ``DataLoader`` workers into fixed-size uint8 images (shorter side resized to
``storage_size``, centre crop), from which :class:`~sslgraph.data.batch_aug.BatchAugment` cuts its crops.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from sslgraph.data.datasets import ImageDataset


class _StoredItems(Dataset):
    """``(uint8 [3, S, S] image, uint8 partner image, index)`` decoded from files, for datasets without a cache."""

    def __init__(self, base: ImageDataset, storage_size: int) -> None:
        self.base = base
        self.resize = v2.Compose([v2.Resize(storage_size, antialias=True), v2.CenterCrop(storage_size)])
        self.partners: Tensor | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        image = self.resize(self.base.load(index))
        partner = index if self.partners is None else int(self.partners[index])
        other = image if partner == index else self.resize(self.base.load(partner))
        return image, other, index


class _After(Sampler[int]):
    """The sampler's order from position ``skip`` on: the rest of an epoch, batch for batch the same."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(iter(self.sampler))[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


class PretrainBatches:
    """One epoch at a time: ``(images, partner_images, indices)`` with uint8 images ``[B, 3, H, W]`` on ``device``
    (``indices`` on the cache's device, or on the CPU for a decoding loader).

    ``partner_images`` is ``None`` while no partners are set (crop 2 from the image itself). The order comes
    from ``sampler`` (a ``DistributedSampler`` in every run, so one process and many see the same global order).
    """

    def __init__(self, base: ImageDataset, *, sampler: Sampler[int], batch_size: int, device: torch.device,
                 num_workers: int = 0, storage_size: int | None = None, cache_on_device: bool = False) -> None:
        self.base = base
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self.partners: Tensor | None = None
        # Batches of the next epoch to leave out (a run resumed mid-epoch); consumed by the next iteration.
        self.start_step = 0
        self.cached = base.images is not None
        if self.cached:
            images = base.images
            assert images is not None
            self.images = images.to(device) if cache_on_device else images
            self.loader = None
        else:
            if storage_size is None:
                raise ValueError("PretrainBatches: storage_size is needed for a data set without a uint8 cache")
            self.items = _StoredItems(base, storage_size)
            self.loader = DataLoader(self.items, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                     pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]

    def set_partners(self, partners: Tensor | None) -> None:
        """Source image of crop 2 per training index (``None``: the image itself)."""
        if partners is not None:
            n = len(self.base)
            if partners.shape != (n,) or partners.dtype.is_floating_point or partners.dtype == torch.bool:
                raise ValueError(f"partners must be an integer tensor of shape [{n}], "
                                 f"got {partners.dtype} {list(partners.shape)}")
            if n and (int(partners.min()) < 0 or int(partners.max()) >= n):
                raise ValueError(f"partners must lie in [0, {n}), got values in "
                                 f"[{int(partners.min())}, {int(partners.max())}]")
            # Kept where the cache is, so a batch's partner lookup is a gather on that device.
            partners = partners.detach().to(self.images.device if self.cached else "cpu", torch.long)
        self.partners = partners
        if not self.cached:
            self.items.partners = partners

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
        first, self.start_step = self.start_step, 0
        if self.loader is not None:
            if first:
                rest = DataLoader(self.items, batch_size=self.batch_size,
                                  sampler=_After(self.sampler, first * self.batch_size),
                                  num_workers=self.loader.num_workers, pin_memory=self.loader.pin_memory,
                                  drop_last=True)
                # Starting a loader draws its workers' seed from the global RNG; an uninterrupted run drew it at
                # the epoch's start, so here the draw must not move the RNG state restored for this step.
                with torch.random.fork_rng(devices=[]):
                    loader = iter(rest)
            else:
                loader = iter(self.loader)
            for images, others, indices in loader:
                partnered = self.partners is not None
                yield (images.to(self.device, non_blocking=True),
                       others.to(self.device, non_blocking=True) if partnered else None, indices)
            return
        # The epoch's order goes to the cache's device once; every batch is then gathered there without a copy
        # (the indices come back on that device too).
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long).to(self.images.device)
        for start in range(first * self.batch_size, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            images = self.images[indices].to(self.device, non_blocking=True)
            others = None
            if self.partners is not None:
                others = self.images[self.partners[indices]].to(self.device, non_blocking=True)
            yield images, others, indices
