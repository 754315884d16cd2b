"""Stage A without files: the pretraining loop (:mod:`.trainer`), where its results go (:mod:`.outputs`) and the
checkpoint format (:mod:`.checkpoint`)."""

from sslgraph.training.checkpoint import load_checkpoint, pretrained_backbones, save_checkpoint
from sslgraph.training.outputs import MemorySink, TrainingSink
from sslgraph.training.trainer import NonFiniteLossError, Trainer

__all__ = ["MemorySink", "NonFiniteLossError", "Trainer", "TrainingSink", "load_checkpoint", "pretrained_backbones",
           "save_checkpoint"]
