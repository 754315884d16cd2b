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


class PretrainBatches:
    """One epoch at a time: ``(images, partner_images, indices)`` with uint8 images ``[B, 3, H, W]`` on ``device``.

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
            partners = partners.detach().to("cpu", torch.long)
        self.partners = partners
        if not self.cached:
            self.items.partners = partners

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
        if self.loader is not None:
            for images, others, indices in self.loader:
                partnered = self.partners is not None
                yield (images.to(self.device, non_blocking=True),
                       others.to(self.device, non_blocking=True) if partnered else None, indices)
            return
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            where = indices.to(self.images.device)
            images = self.images[where].to(self.device, non_blocking=True)
            others = None
            if self.partners is not None:
                others = self.images[self.partners[indices].to(self.images.device)].to(self.device, non_blocking=True)
            yield images, others, indices
