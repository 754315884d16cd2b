"""The augmented-views grid: a PNG with one column per image and one row per view (plus the image)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sslgraph.data.batch_aug import BatchAugment, ViewRecipe
from sslgraph.viz.views import plot_views, sample_indices


def test_views_grid_is_written(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment = BatchAugment([ViewRecipe(size=16), ViewRecipe(size=16, solarize_p=1.0)], mean=[0.5] * 3,
                           std=[0.2] * 3, seed=0)
    path = plot_views(images, torch.arange(4), augment, tmp_path / "views.png")
    with Image.open(path) as picture:
        width, height = picture.size
    assert path.is_file() and width > height  # 4 columns, 3 rows
    with pytest.raises(ValueError, match="must match"):
        plot_views(images, torch.arange(3), augment, tmp_path / "bad.png")


def test_sample_indices_are_distinct_and_fixed_by_the_seed() -> None:
    a, b = sample_indices(100, 10, seed=1), sample_indices(100, 10, seed=1)
    assert torch.equal(a, b) and len(set(a.tolist())) == 10 and int(a.max()) < 100
