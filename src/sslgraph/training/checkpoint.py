"""Pretraining checkpoints: what one holds, writing it, reading it back, and the networks it contains.

A checkpoint is a plain dict of tensors and plain values (loadable with ``weights_only=True``) written
atomically after every epoch: ``epoch`` (epochs finished, where a resumed run starts), the resolved
``config``, the ``student`` and ``teacher`` state dicts, and the rest of what
:meth:`sslgraph.training.trainer.Trainer.state_dict` holds (optimiser, objective and method state, RNG states);
this module checks the entries every pretraining checkpoint has and leaves the rest to the trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sslgraph.config import Config, config_from_dict
from sslgraph.errors import CheckpointError
from sslgraph.models.backbones import Backbone
from sslgraph.models.network import build_network
from sslgraph.utils.io import atomic_save, safe_load

CHECKPOINT_KEYS = ("epoch", "config", "student", "teacher")
NETWORK_KEYS = ("config", "teacher", "student")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic_save(state, path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    keys: tuple[str, ...] = CHECKPOINT_KEYS, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path``, after checking it holds ``keys`` (what every pretraining checkpoint has)."""
    state = safe_load(path, map_location=map_location, mmap=mmap)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of checkpoint entries, found {type(state).__name__}")
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(f"{path}: missing entries {', '.join(missing)}; is it a pretraining checkpoint?")
    return state


def checkpoint_finished(path: str | os.PathLike) -> bool:
    """Whether the run behind the checkpoint trained its last iteration (with a wall-clock budget that is
    before ``optim.epochs``); a checkpoint from before the flag existed is finished when it has every epoch."""
    state = load_checkpoint(path, keys=("epoch",), mmap=True)
    if "finished" in state:
        return bool(state["finished"])
    epochs = state.get("config", {}).get("optim", {}).get("epochs")
    return epochs is not None and int(state["epoch"]) >= int(epochs) and not state.get("step", 0)


def pretrained_backbones(state: dict[str, Any], *, device: torch.device) -> tuple[Config, Backbone, Backbone]:
    """A checkpoint's config and its teacher and student backbones (eval mode) on ``device``."""
    cfg = config_from_dict(state["config"])
    backbones = []
    for stream in ("teacher", "student"):
        network = build_network(cfg, drop_path_rate=0.0).to(device)
        network.load_state_dict(state[stream])
        backbones.append(network.backbone.eval())
    return cfg, backbones[0], backbones[1]
