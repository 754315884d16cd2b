"""Stand-ins for the trainer's context in method tests: fixed clean features on clustered toy data."""

from __future__ import annotations

from pathlib import Path

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

    def embed(self, stream: str, split: str) -> torch.Tensor:
        self.calls.append((stream, split))
        return self.features[(stream, split)]

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        self.graphs.update(graphs)
        return []
