"""Stand-ins for the trainer's context in method tests: fixed clean features on clustered toy data."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from sslgraph.config import Config


def clustered(num: int, seed: int, *, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tight clusters (labels 0 and 1, alternating) of L2-normalised features."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 2
    centres = F.normalize(torch.randn(2, dim, generator=gen), dim=1)
    return F.normalize(centres[labels] + 0.1 * torch.randn(num, dim, generator=gen), dim=1), labels


class FakeContext:
    """Returns fixed clean features per (stream, split), as the trainer's ``embed`` would, records calls and keeps
    the graphs a method saves."""

    def __init__(self, cfg: Config, features: dict[tuple[str, str], torch.Tensor]) -> None:
        self.cfg, self.device, self.features, self.calls = cfg, torch.device("cpu"), features, []
        self.graphs: dict[str, Data] = {}
        self.epochs = cfg.optim.epochs  # as planned; a test may shorten it, as a budget does

    def embed(self, stream: str, split: str) -> torch.Tensor:
        self.calls.append((stream, split))
        return self.features[(stream, split)]

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        self.graphs.update(graphs)
        return []


def trained_and_restored(build: Callable[[Config], tuple[Any, FakeContext]], cfg: Config,
                         run_epoch: Callable[[Any, FakeContext, int], object], *, epochs: int = 3) -> tuple[Any, Any]:
    """A method trained ``epochs`` epochs and a fresh one restored from its state dict through ``torch.save``
    and ``weights_only`` loading, as a checkpoint does."""
    method, ctx = build(cfg)
    method.on_train_start(ctx)
    for epoch in range(epochs):
        run_epoch(method, ctx, epoch)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored, _ = build(cfg)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    return method, restored


def assert_same_state(original: dict[str, Any], loaded: dict[str, Any]) -> None:
    for key, value in original.items():
        assert torch.equal(loaded[key], value) if isinstance(value, torch.Tensor) else loaded[key] == value, key
