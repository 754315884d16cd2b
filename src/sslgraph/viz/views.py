"""The augmented views the loop trains on, drawn as a grid: what a user should look at before trusting a run."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from sslgraph.data.batch_aug import BatchAugment
from sslgraph.utils.io import atomic_save_figure

DPI = 120


def plot_views(images: Tensor, indices: Tensor, augment: BatchAugment, path: str | Path, *, epoch: int = 0) -> Path:
    """One column per image: the image, then each of ``augment``'s views of it at ``epoch`` (de-normalised)."""
    if images.dim() != 4 or images.shape[0] != indices.shape[0]:
        raise ValueError(f"plot_views: images [B, 3, H, W] and indices [B] must match, got "
                         f"{list(images.shape)} and {list(indices.shape)}")
    views = augment(images, indices, epoch=epoch)
    mean, std = augment.mean.to(images.device), augment.std.to(images.device)
    rows = [images.float() / 255] + [(v * std + mean).clamp(0, 1) for v in views]
    names = ["image"] + [f"view {v + 1}" if v < 2 else f"local {v - 1} ({views[v].shape[-1]} px)"
                         for v in range(len(views))]
    fig = Figure(figsize=(1.1 * images.shape[0], 1.15 * len(rows)))
    axes = fig.subplots(len(rows), images.shape[0], squeeze=False)
    for r, (row, name) in enumerate(zip(rows, names)):
        for c in range(images.shape[0]):
            ax = axes[r][c]
            ax.imshow(row[c].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"augmented views (epoch {epoch}), as the training loop makes them", fontsize=9)
    fig.tight_layout()
    return atomic_save_figure(fig, Path(path), dpi=DPI)


def sample_indices(num: int, count: int, *, seed: int) -> Tensor:
    """``count`` distinct indices out of ``num``, fixed by ``seed``."""
    return torch.randperm(num, generator=torch.Generator().manual_seed(seed))[:count]
