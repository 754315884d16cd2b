"""Shared fixtures: the real CIFAR-10 copy ($SSLGRAPH_DATA) or a synthetic stand-in, and tiny run configurations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from tests.synthetic import cifar_like_tree

torch.set_num_threads(min(2, torch.get_num_threads()))


def _real_data() -> Path | None:
    root = os.environ.get("SSLGRAPH_DATA")
    return Path(root) if root and (Path(root) / "cifar10" / "train").is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding cifar10/ (the image-folder copy); tests that need it skip when it is not configured."""
    root = _real_data()
    if root is None:
        pytest.skip("SSLGRAPH_DATA is not set to a folder holding cifar10/train (see README, Testing)")
    return root


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding cifar10/: the real copy when $SSLGRAPH_DATA is set, else a synthetic tree of ten noisy colour
    classes (120 training, 50 held-out images) in the same layout, so the training loop, resume and the pipeline
    are tested everywhere."""
    return _real_data() or cifar_like_tree(tmp_path_factory.mktemp("synthetic-data"))


@pytest.fixture
def one_openmp_thread() -> Iterator[None]:
    """t-SNE's OpenMP loop on a few dozen points is far slower with threads competing for two busy cores."""
    with threadpool_limits(limits=1):
        yield


def tiny_overrides(*, method: str = "graph", epochs: int = 2, train: int = 64, test: int = 40, batch: int = 16,
                   workers: int = 0) -> list[str]:
    """A ViT small enough to pretrain in seconds on CIFAR-10-sized images."""
    return [
        f"method.name={method}", f"optim.epochs={epochs}", f"optim.batch_size={batch}", "optim.warmup_epochs=1",
        f"data.train_subset={train}", f"data.test_subset={test}", f"data.num_workers={workers}",
        "model.backbone=vit_mini", "model.patch_size=8", "model.drop_path_rate=0.0", "model.out_dim=64",
        "model.head_hidden_dim=32", "model.head_bottleneck_dim=16", "method.topk=6", "method.vote_window=1",
        "method.edges_per_node=2", "monitor.eval_batch_size=64", "device=cpu",
    ]
