"""The hooks through which a pretraining method extends the DINO loop, and the context the loop passes them.

The loop (:class:`sslgraph.training.trainer.Trainer`) owns everything methods share: data, networks,
optimiser, schedules, mixed precision, DDP, the online kNN monitor, checkpoints and logs. A :class:`Method`
only sees the dataset indices and backbone features of each step, the epoch boundaries and a
:class:`TrainContext` that embeds clean images and keeps what the method produces. ``dino`` uses no hook,
``adasim`` adds a memory bank and neighbour bootstrapping, ``graph`` adds the two kNN graphs and writes them
in :meth:`Method.on_train_end`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch_geometric.data import Data

from sslgraph.config import Config

Stream = Literal["teacher", "student"]
Split = Literal["train", "test"]


class TrainContext(Protocol):
    """What the loop offers a method: the run's config and device, clean embeddings, and a place for graphs."""

    cfg: Config
    device: torch.device

    @property
    def epochs(self) -> int:
        """The run's length in epochs as now planned: ``optim.epochs``, or what a wall-clock budget allows
        (re-planned at each epoch end, before :meth:`Method.on_epoch_end`)."""
        ...

    def embed(self, stream: Stream, split: Split) -> torch.Tensor:
        """``[N, D]`` L2-normalised backbone features of clean images, identical on every process."""
        ...

    def save_graphs(self, graphs: dict[Stream, Data]) -> list[Path]:
        """Keep one kNN graph per stream (every process calls this; the main process writes)."""
        ...


class Method:
    """Plain DINO: every hook is a no-op. Subclasses add banks, bootstrapping and graphs."""

    name: str = "dino"
    # True when on_train_end saves the teacher and student kNN graphs (what refinement and the pipeline need).
    keeps_graphs: bool = False
    # True when after_step reads the backbone features of crop 1 (the loop then computes the teacher's even
    # where the objective does not need them).
    uses_step_features: bool = False

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Reject settings this method cannot use; raise :class:`~sslgraph.errors.ConfigError` naming the key."""

    def __init__(self, cfg: Config, *, num_train: int, num_test: int, embed_dim: int,
                 train_labels: torch.Tensor, test_labels: torch.Tensor, device: torch.device) -> None:
        self.cfg = cfg
        self.num_train = num_train
        self.num_test = num_test
        self.embed_dim = embed_dim
        self.train_labels = train_labels
        self.test_labels = test_labels
        self.device = device

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first epoch of a fresh run (not on resume)."""

    def partners_for_epoch(self, epoch: int) -> torch.Tensor | None:
        """Per training index, the image crop 2 is taken from this epoch (None: the image itself)."""
        return None

    def after_step(self, *, indices: torch.Tensor, teacher_feats: torch.Tensor, student_feats: torch.Tensor) -> None:
        """This process's batch: dataset indices and detached backbone features of crop 1 (image x_i)."""

    def on_epoch_end(self, ctx: TrainContext, *, epoch: int) -> dict[str, float]:
        """End-of-epoch work; returns statistics for the epoch's log record."""
        return {}

    def on_train_end(self, ctx: TrainContext) -> None:
        """Called once after the last epoch (also when a finished run is resumed, or its end is redone to export
        again); a method that keeps graphs builds and saves them here."""

    def final_embeddings(self) -> set[tuple[Stream, Split]]:
        """The clean embeddings the end of training asks :meth:`TrainContext.embed` for (the last epoch's
        :meth:`on_epoch_end` and :meth:`on_train_end`): a budget that covers the whole stage reserves time for
        these passes (``optim.budget_scope=stage``)."""
        return set()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
