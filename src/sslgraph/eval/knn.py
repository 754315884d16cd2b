"""Weighted k-nearest-neighbour classifier on frozen features (the DINO protocol).

Every test row votes with its ``k`` most cosine-similar training rows; a neighbour's vote weighs
``exp(sim / T)``, so close neighbours dominate and ``T`` sets how sharply. Test rows are processed in chunks,
so memory stays ``O(chunk_size * N_train)`` however large the held-out set is, and one similarity pass serves
every requested ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_ks(k: int | Sequence[int]) -> list[int]:
    ks = [int(k)] if isinstance(k, int) else [int(v) for v in k]
    if not ks or any(v < 1 for v in ks):
        raise ValueError(f"knn: k must be a positive int or a non-empty list of them, got {k!r}")
    return ks


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int | Sequence[int],
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[int, Tensor]:
    """Predicted class of every test row for each ``k``, as ``{k: LongTensor[N_test]}``.

    Features are L2-normalised here, so raw backbone outputs can be passed. A ``k`` larger than the training
    set uses every training row. Ties between class scores go to the lower class index.
    """
    ks = _as_ks(k)
    if train_features.dim() != 2 or test_features.dim() != 2:
        raise ValueError(
            f"knn: features must be 2-D [N, D], got train {tuple(train_features.shape)}, "
            f"test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"knn: train and test feature widths differ ({train_features.shape[1]} vs {test_features.shape[1]})"
        )
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(
            f"knn: train_labels must have shape [{train_features.shape[0]}], got {tuple(train_labels.shape)}"
        )
    if train_features.shape[0] == 0:
        raise ValueError("knn: the training set is empty")
    if temperature <= 0:
        raise ValueError(f"knn: temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"knn: chunk_size must be >= 1, got {chunk_size}")

    device = train_features.device
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.to(device=device, dtype=torch.float32), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    classes = int(labels.max().item()) + 1 if num_classes is None else int(num_classes)
    k_max = min(max(ks), train.shape[0])

    predictions: dict[int, list[Tensor]] = {kk: [] for kk in ks}
    for start in range(0, test.shape[0], chunk_size):
        sim, idx = (test[start:start + chunk_size] @ train.T).topk(k_max, dim=1)
        weights = (sim / temperature).exp()
        votes = labels[idx]
        for kk in ks:
            used = min(kk, k_max)
            scores = torch.zeros(sim.shape[0], classes, device=device)
            scores.scatter_add_(1, votes[:, :used], weights[:, :used])
            predictions[kk].append(scores.argmax(dim=1))
    empty = torch.empty(0, dtype=torch.long, device=device)
    return {kk: torch.cat(chunks) if chunks else empty for kk, chunks in predictions.items()}


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    ks: int | Sequence[int],
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy in percent for each ``k``."""
    if test_labels.shape != (test_features.shape[0],):
        raise ValueError(
            f"knn: test_labels must have shape [{test_features.shape[0]}], got {tuple(test_labels.shape)}"
        )
    num_classes = int(train_labels.max().item()) + 1
    if test_labels.numel():
        num_classes = max(num_classes, int(test_labels.max().item()) + 1)
    predictions = knn_predict(
        train_features, train_labels, test_features,
        k=ks, temperature=temperature, num_classes=num_classes, chunk_size=chunk_size,
    )
    truth = test_labels.to(train_features.device, dtype=torch.long)
    if not truth.numel():
        return {kk: float("nan") for kk in predictions}
    return {kk: 100.0 * int((pred == truth).sum().item()) / truth.numel() for kk, pred in predictions.items()}
