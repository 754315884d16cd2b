"""Shared fixtures: the real CIFAR-10 copy (from $SSLGRAPH_DATA) and tiny run configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding cifar10/ (the image-folder copy); tests that need it skip when it is not configured."""
    root = os.environ.get("SSLGRAPH_DATA")
    if not root or not (Path(root) / "cifar10" / "train").is_dir():
        pytest.skip("SSLGRAPH_DATA is not set to a folder holding cifar10/train (see README, Testing)")
    return Path(root)


def tiny_overrides(*, method: str = "graph", epochs: int = 2, train: int = 64, test: int = 40, batch: int = 16,
                   workers: int = 0) -> list[str]:
    """A ViT small enough to pretrain in seconds on real CIFAR-10 images."""
    return [
        f"method.name={method}", f"optim.epochs={epochs}", f"optim.batch_size={batch}", "optim.warmup_epochs=1",
        f"data.train_subset={train}", f"data.test_subset={test}", f"data.num_workers={workers}",
        "model.backbone=vit_mini", "model.patch_size=8", "model.drop_path_rate=0.0", "model.out_dim=64",
        "model.head_hidden_dim=32", "model.head_bottleneck_dim=16", "method.topk=6", "method.vote_window=1",
        "method.edges_per_node=2", "monitor.eval_batch_size=64", "device=cpu",
    ]
