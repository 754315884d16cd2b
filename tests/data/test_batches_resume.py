"""A run resumed mid-epoch gets the rest of that epoch batch for batch, from the cache or from decoding workers,
and starting the rest does not move the global RNG an uninterrupted run had already moved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sslgraph.data import ImageDataset
from sslgraph.data.batches import PretrainBatches
from tests.data.test_batches import _sampler, tiny_base


def _files(tmp_path: Path, n: int) -> ImageDataset:
    paths = []
    for i in range(n):
        Image.new("RGB", (16, 16), (20 * i, 3 * i, 200)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    return ImageDataset(root=tmp_path, split="train", classes=["a"], targets=torch.zeros(n, dtype=torch.long),
                        paths=paths)


@pytest.mark.parametrize("cached", [True, False])
def test_start_step_gives_the_rest_of_the_epoch(tmp_path: Path, cached: bool) -> None:
    base = tiny_base(n=10) if cached else _files(tmp_path, 10)
    sampler = _sampler(10)
    sampler.set_epoch(5)
    batches = PretrainBatches(base, sampler=sampler, batch_size=3, device=torch.device("cpu"), storage_size=16)
    full = list(batches)
    assert len(full) == 3

    batches.start_step = 2
    before = torch.get_rng_state()
    rest = list(batches)
    assert torch.equal(torch.get_rng_state(), before), "starting the rest draws nothing from the global RNG"
    assert len(rest) == 1 and torch.equal(rest[0][2], full[2][2]) and torch.equal(rest[0][0], full[2][0])
    assert batches.start_step == 0 and len(list(batches)) == 3, "the skip applies to one epoch only"
