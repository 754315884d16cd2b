"""The features record a finished pretraining leaves for evaluation: network fingerprints and what matches."""

from __future__ import annotations

import torch
from torch import nn

from sslgraph.eval.features import FEATURES_FORMAT, feature_record, matching_features, network_fingerprint

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
