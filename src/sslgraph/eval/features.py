"""Batched feature extraction in eval mode, sharded over processes when distributed; and the record of a
finished pretraining's clean features, which evaluation reuses when the networks are the same."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sslgraph.config import DataConfig
from sslgraph.data import EvalDataset, ImageDataset, eval_transform
from sslgraph.data.datasets import split_fingerprints
from sslgraph.utils import dist
from sslgraph.utils.misc import progress as progress_bar


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
    limit: int | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to every item ``(image, index, label)`` of ``dataset`` (its first ``limit`` items with
    ``limit``); returns ``[N, D]`` float32 on ``device``.

    Under ``torch.distributed`` each process embeds one contiguous shard and the shards are all-gathered,
    so every process returns the full, identically ordered matrix. ``fn`` should already be in eval mode.
    """
    total = len(dataset) if limit is None else min(limit, len(dataset))  # type: ignore[arg-type]
    per_rank = math.ceil(total / dist.world_size())
    start = min(dist.rank() * per_rank, total)
    stop = min(start + per_rank, total)
    chunks: list[torch.Tensor] = []
    batches = _image_batches(dataset, start, stop, batch_size=batch_size, device=device, num_workers=num_workers)
    for images in progress_bar(batches, desc=desc, total=math.ceil((stop - start) / batch_size),
                               disable=None if progress else True):
        out = fn(images.to(device, non_blocking=True))
        chunks.append(out.float())
    if chunks:
        local = torch.cat(chunks)
    else:
        probe = fn(dataset[0][0].unsqueeze(0).to(device))
        local = probe.new_zeros((0, probe.shape[1])).float()
    return dist.all_gather_cat(local)


def _image_batches(dataset: Dataset, start: int, stop: int, *, batch_size: int, device: torch.device,
                   num_workers: int) -> Iterator[torch.Tensor]:
    """The images of items ``start .. stop - 1`` in batches: sliced from memory and transformed a batch at a
    time where the split is held in memory (per-item indexing and collation cost a quarter of a CPU embedding
    pass at 32 px), else through a ``DataLoader``."""
    if isinstance(dataset, EvalDataset) and dataset.in_memory:
        for first in range(start, stop, batch_size):
            yield dataset.image_slice(first, min(first + batch_size, stop), device=device)
        return
    loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    for images, _, _ in loader:
        yield images


# ---------------------------------------------------------------------------------------------------------------
# The final networks' clean features, kept from pretraining so that evaluation does not embed the data set again

FEATURES_FORMAT = 1


def network_fingerprint(module: torch.nn.Module) -> str:
    """A hash of ``module``'s parameters and buffers (names, dtypes, shapes and bytes): equal fingerprints mean
    the same weights, so features computed with one network stand for the other's."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def feature_settings(data_cfg: DataConfig, *, train_set: ImageDataset, test_set: ImageDataset,
                     amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What besides the weights decides a network's clean features: the images, the eval transform and the
    autocast precision."""
    return {**split_fingerprints(train_set, test_set), "transform": repr(eval_transform(data_cfg)),
            "autocast": str(amp_dtype)}


def feature_record(features: Mapping[str, Mapping[str, torch.Tensor]], *, networks: Mapping[str, str],
                   settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a features file holds: ``features[stream][split]`` (unnormalised backbone outputs on clean
    images, float32 on the CPU), the fingerprint of each stream's network and the ``settings`` that decide the
    features (:func:`feature_settings`: images, eval transform, precision)."""
    return {
        "format": FEATURES_FORMAT,
        "networks": dict(networks),
        "settings": dict(settings),
        "features": {stream: {split: t.detach().float().cpu() for split, t in splits.items()}
                     for stream, splits in features.items() if splits},
    }


def matching_features(record: Any, *, networks: Mapping[str, str],
                      settings: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The streams of ``record`` computed by exactly these networks under these settings (others are dropped):
    ``{stream: {split: features}}``, empty when nothing matches or the record is not a features record."""
    if not isinstance(record, dict) or record.get("format") != FEATURES_FORMAT:
        return {}
    if record.get("settings") != dict(settings):
        return {}
    saved, kept = record.get("networks") or {}, {}
    for stream, splits in (record.get("features") or {}).items():
        if stream in networks and saved.get(stream) == networks[stream] and isinstance(splits, dict):
            kept[stream] = {split: t for split, t in splits.items() if isinstance(t, torch.Tensor) and t.dim() == 2}
    return kept
