from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sslgraph.config import AugConfig
from sslgraph.data import EvalDataset, ImageDataset, PretrainDataset, TwoCropTransform, item_seed

MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]


def tiny_base(n: int = 4, size: int = 16) -> ImageDataset:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    return ImageDataset(root=Path("."), split="train", classes=["a", "b"], targets=torch.arange(n) % 2,
                        images=images)


def pretrain_set(base: ImageDataset, aug: AugConfig | None = None, seed: int = 0) -> PretrainDataset:
    return PretrainDataset(base, TwoCropTransform(aug or AugConfig(), image_size=16, mean=MEAN, std=STD), seed=seed)


def test_item_layout():
    data = pretrain_set(tiny_base())
    crop1, crop2, index, label = data[3]
    assert crop1.shape == crop2.shape == (3, 16, 16) and crop1.dtype == torch.float32
    assert index == 3 and label == 1 and len(data) == 4


def test_item_seed_mixes_each_input():
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27 and all(0 <= s < 2**64 for s in seeds)
    assert item_seed(1, 2, 3) == item_seed(1, 2, 3)


def test_same_seed_epoch_index_same_crops_regardless_of_global_rng():
    data = pretrain_set(tiny_base())
    data.set_epoch(5)
    first = data[2]
    torch.manual_seed(123)
    random.seed(456)
    torch.rand(10)
    again = pretrain_set(tiny_base())
    again.set_epoch(5)
    second = again[2]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_crops_change_with_epoch_index_and_seed():
    base = tiny_base()
    base.images[1] = base.images[0]
    data = pretrain_set(base)
    epoch0 = data[0]
    assert not torch.equal(data[1][0], epoch0[0])
    data.set_epoch(1)
    assert not torch.equal(data[0][0], epoch0[0])
    assert not torch.equal(pretrain_set(base, seed=7)[0][0], epoch0[0])


def test_global_rng_untouched():
    data = pretrain_set(tiny_base())
    torch.manual_seed(99)
    state = torch.get_rng_state()
    data[1]
    assert torch.equal(torch.get_rng_state(), state)


def test_independent_of_order_batch_size_and_workers():
    data = pretrain_set(tiny_base(n=6))
    data.set_epoch(3)
    data.set_partners(torch.tensor([1, 0, 2, 3, 5, 4]))
    reference = {i: data[i] for i in range(6)}
    for batch_size, workers in ((4, 0), (1, 2)):
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(batch_size))
        for crop1, crop2, index, _ in loader:
            for row, i in enumerate(index.tolist()):
                assert torch.equal(crop1[row], reference[i][0]) and torch.equal(crop2[row], reference[i][1])


def test_crop2_comes_from_partner():
    base = tiny_base(n=3)
    base.images[2] = torch.tensor([10, 200, 30], dtype=torch.uint8)[:, None, None]
    aug = AugConfig(jitter_p=0.0, grayscale_p=0.0, blur_p2=0.0, solarize_p2=0.0)
    data = pretrain_set(base, aug)
    colour = (torch.tensor([10, 200, 30]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    data.set_partners(torch.tensor([2, 1, 2]))
    crop1, crop2, index, label = data[0]
    torch.testing.assert_close(crop2, colour[:, None, None].expand(3, 16, 16))
    assert crop1.std() > 0.1 and index == 0 and label == 0
    data.set_partners(None)
    assert data[0][1].std() > 0.1


def test_partner_crop_keeps_the_item_random_stream():
    """Crop 1 of an item does not depend on which partner crop 2 comes from."""
    data = pretrain_set(tiny_base())
    alone = data[0][0]
    data.set_partners(torch.tensor([3, 1, 2, 0]))
    assert torch.equal(data[0][0], alone)


@pytest.mark.parametrize(("partners", "message"), [
    (torch.tensor([0, 1, 2]), r"shape \[4\]"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), r"integer tensor"),
    (torch.tensor([0, 1, 2, 4]), r"\[0, 4\)"),
    (torch.tensor([-1, 1, 2, 3]), r"\[0, 4\)"),
])
def test_set_partners_rejects_bad_input(partners, message):
    with pytest.raises(ValueError, match=message):
        pretrain_set(tiny_base()).set_partners(partners)


def test_eval_dataset():
    base = tiny_base()
    data = EvalDataset(base, lambda x: x.float() / 255)
    image, index, label = data[3]
    assert torch.equal(image, base.images[3].float() / 255) and index == 3 and label == 1 and len(data) == 4
