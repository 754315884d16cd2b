"""Where the pretraining loop's results go: the :class:`TrainingSink` protocol and an in-memory sink.

The loop produces four things: one log record per epoch (plus one at initialisation), a checkpoint state
after every epoch, and at the end the kNN graphs a method builds and the final networks' clean features. It
hands them to a sink on the main process and never names a file; :mod:`sslgraph.run.pretrain` writes them into
a run directory, :class:`MemorySink` keeps them for library use and tests.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Protocol

from torch_geometric.data import Data


class TrainingSink(Protocol):
    def write_record(self, record: dict[str, Any]) -> None:
        """One epoch's log record (``epoch`` -1: at initialisation)."""
        ...

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """The state after an epoch (tensors and plain values; see :mod:`sslgraph.training.checkpoint`)."""
        ...

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        """The kNN graph of each stream; returns where they were written (empty when kept in memory)."""
        ...

    def save_features(self, record: dict[str, Any]) -> None:
        """The final networks' clean features (:func:`sslgraph.eval.features.feature_record`)."""
        ...


class MemorySink:
    """Keeps the records, the latest checkpoint state and the graphs in memory."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.checkpoint: dict[str, Any] | None = None
        self.graphs: dict[str, Data] = {}
        self.features: dict[str, Any] | None = None

    def write_record(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        # A state dict holds views of the live parameters: keep a snapshot, as a file would.
        self.checkpoint = copy.deepcopy(state)

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        self.graphs.update(graphs)
        return []

    def save_features(self, record: dict[str, Any]) -> None:
        self.features = record
