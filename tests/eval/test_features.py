"""The features record a finished pretraining leaves for evaluation: network fingerprints and what matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sslgraph.config import DataConfig
from sslgraph.data import EvalDataset, ImageDataset, eval_transform
from sslgraph.eval.features import (FEATURES_FORMAT, extract_features, feature_record, matching_features,
                                    network_fingerprint)

SETTINGS = {"train": {"size": 4}, "test": {"size": 2}, "transform": "Normalize(...)", "autocast": "None"}


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_the_fingerprint_follows_every_weight_and_buffer_and_nothing_else():
    net = _net(0)
    same = _net(0)
    assert network_fingerprint(net) == network_fingerprint(same)
    with torch.no_grad():
        same[0].weight[1, 2] += 1e-7  # one float32 ulp-scale change in one weight
    assert network_fingerprint(net) != network_fingerprint(same)
    buffers = _net(0)
    buffers[1].running_mean.fill_(0.5)
    assert network_fingerprint(net) != network_fingerprint(buffers)
    net.eval()  # the mode is not a weight
    assert network_fingerprint(net) == network_fingerprint(_net(0))


def test_only_the_streams_of_the_same_networks_under_the_same_settings_match():
    teacher, student = _net(0), _net(1)
    prints = {"teacher": network_fingerprint(teacher), "student": network_fingerprint(student)}
    feats = {stream: {"train": torch.randn(4, 4), "test": torch.randn(2, 4)} for stream in prints}
    record = feature_record(feats, networks=prints, settings=SETTINGS)
    assert record["format"] == FEATURES_FORMAT
    found = matching_features(record, networks=prints, settings=SETTINGS)
    assert set(found) == {"teacher", "student"}
    torch.testing.assert_close(found["student"]["test"], feats["student"]["test"])
    # a student trained further: its features are stale, the teacher's still hold
    moved = {**prints, "student": network_fingerprint(_net(2))}
    assert set(matching_features(record, networks=moved, settings=SETTINGS)) == {"teacher"}
    # other images, transform or precision: nothing holds
    for key, value in (("autocast", "torch.bfloat16"), ("train", {"size": 5}), ("transform", "Resize(...)")):
        assert matching_features(record, networks=prints, settings={**SETTINGS, key: value}) == {}
    # not a record of this format (another version, or some other file)
    assert matching_features({**record, "format": FEATURES_FORMAT + 1}, networks=prints, settings=SETTINGS) == {}
    assert matching_features([1, 2], networks=prints, settings=SETTINGS) == {}


@pytest.mark.parametrize("dataset", ["cifar10", "imagefolder"])
def test_in_memory_splits_are_embedded_in_slices_with_the_item_by_item_values(dataset):
    """Slices of the uint8 tensor through the batched transform give what the per-item loader gives, for the
    CIFAR transform (identity resize) and the ImageNet-style resize + centre crop alike."""
    data_cfg = DataConfig(dataset=dataset, image_size=16)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (11, 3, 20, 20), dtype=torch.uint8, generator=gen)
    base = ImageDataset(root=Path("."), split="train", classes=["a"], targets=torch.zeros(11), images=images)
    evaluation = EvalDataset(base, eval_transform(data_cfg))
    assert evaluation.in_memory
    torch.testing.assert_close(evaluation.image_slice(3, 7), torch.stack([evaluation[i][0] for i in range(3, 7)]),
                               atol=1e-6, rtol=0)

    class FromFiles(torch.utils.data.Dataset):  # the same items, but not an in-memory EvalDataset
        def __len__(self) -> int:
            return len(evaluation)

        def __getitem__(self, index: int):
            return evaluation[index]

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    sliced = extract_features(net, evaluation, batch_size=4, device=torch.device("cpu"), progress=False)
    loaded = extract_features(net, FromFiles(), batch_size=4, device=torch.device("cpu"), progress=False)
    assert sliced.shape == (11, 5)
    torch.testing.assert_close(sliced, loaded, atol=1e-5, rtol=0)
