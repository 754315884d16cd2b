"""uint8 pretraining batches (cache gather or decoding workers) and the evaluation dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from sslgraph.data import EvalDataset, ImageDataset
from sslgraph.data.batches import PretrainBatches


def tiny_base(n: int = 4, size: int = 16) -> ImageDataset:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    return ImageDataset(root=Path("."), split="train", classes=["a", "b"], targets=torch.arange(n) % 2,
                        images=images)


def _sampler(n: int, *, replicas: int = 1, rank: int = 0) -> DistributedSampler:
    return DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=3, drop_last=True)


def test_cached_batches_gather_the_sampler_order():
    base = tiny_base(n=10)
    sampler = _sampler(10)
    sampler.set_epoch(2)
    batches = PretrainBatches(base, sampler=sampler, batch_size=4, device=torch.device("cpu"))
    order = list(iter(sampler))
    got = list(batches)
    assert len(got) == len(batches) == 2  # the last, partial batch is dropped
    for b, (images, partners, indices) in enumerate(got):
        assert indices.tolist() == order[4 * b:4 * b + 4]
        assert torch.equal(images, base.images[indices]) and images.dtype == torch.uint8
        assert partners is None


def test_two_processes_split_one_global_order():
    base = tiny_base(n=12)
    seen = []
    for rank in (0, 1):
        sampler = _sampler(12, replicas=2, rank=rank)
        seen += [i for _, _, idx in PretrainBatches(base, sampler=sampler, batch_size=3,
                                                    device=torch.device("cpu")) for i in idx.tolist()]
    assert sorted(seen) == list(range(12))


def test_partner_images_follow_the_partners():
    base = tiny_base(n=6)
    batches = PretrainBatches(base, sampler=_sampler(6), batch_size=6, device=torch.device("cpu"))
    partners = torch.tensor([1, 0, 2, 3, 5, 4])
    batches.set_partners(partners)
    images, others, indices = next(iter(batches))
    assert others is not None and torch.equal(others, base.images[partners[indices]])
    batches.set_partners(None)
    assert next(iter(batches))[1] is None


def test_uncached_datasets_are_decoded_to_fixed_size_by_workers(tmp_path: Path):
    from PIL import Image

    paths = []
    for i, size in enumerate([(20, 30), (40, 24), (32, 32), (50, 50)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (10 * i, 50, 200)).save(path)
        paths.append(str(path))
    base = ImageDataset(root=tmp_path, split="train", classes=["a"], targets=torch.zeros(4, dtype=torch.long),
                        paths=paths)
    batches = PretrainBatches(base, sampler=_sampler(4), batch_size=2, device=torch.device("cpu"),
                              num_workers=0, storage_size=16)
    shapes = [tuple(images.shape) for images, _, _ in batches]
    assert shapes == [(2, 3, 16, 16)] * 2
    with pytest.raises(ValueError, match="storage_size"):
        PretrainBatches(base, sampler=_sampler(4), batch_size=2, device=torch.device("cpu"))


@pytest.mark.parametrize(("partners", "message"), [
    (torch.tensor([0, 1, 2]), r"shape \[4\]"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), r"integer tensor"),
    (torch.tensor([0, 1, 2, 4]), r"\[0, 4\)"),
    (torch.tensor([-1, 1, 2, 3]), r"\[0, 4\)"),
])
def test_set_partners_rejects_bad_input(partners, message):
    batches = PretrainBatches(tiny_base(), sampler=_sampler(4), batch_size=2, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=message):
        batches.set_partners(partners)


def test_eval_dataset():
    base = tiny_base()
    data = EvalDataset(base, lambda x: x.float() / 255)
    image, index, label = data[3]
    assert torch.equal(image, base.images[3].float() / 255) and index == 3 and label == 1 and len(data) == 4
