"""Export stage: rewrite ``graphs/*.pt`` from a finished run's checkpoint, e.g. with other
``method.export_*`` settings. It restores the trainer and runs the method's end-of-training hook again, which
is what writes the graphs (and the clean features evaluation reuses) at the end of pretraining.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sslgraph.config import Config
from sslgraph.methods import require_graphs
from sslgraph.run.pretrain import RunDirSink, restore_state
from sslgraph.run.rundir import RunDir
from sslgraph.training.trainer import Trainer


def export_graphs(run: RunDir, cfg: Config, *, device: torch.device) -> list[Path]:
    """Write the teacher and student graphs of ``run`` as ``cfg.method.export_*`` configures them."""
    require_graphs(cfg, purpose="export-graphs")
    checkpoint = run.require_checkpoint()
    sink = RunDirSink(run)
    try:
        trainer = Trainer(cfg, device=device, sink=sink)
        restore_state(trainer, checkpoint)
        trainer.finish()
    finally:
        sink.close()
    return run.graph_paths
