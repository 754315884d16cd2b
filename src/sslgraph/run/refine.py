"""Stage B in a run directory: ``graphs/*.pt`` -> ``refined.pt`` (+ ``refine_log.jsonl``; a refinement
checkpoint while it runs, so an interrupted refinement resumes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from sslgraph.config import Config
from sslgraph.graph.export import save_refined
from sslgraph.refine.train import refine_graphs
from sslgraph.run.rundir import RunDir


def run_refine(run: RunDir, cfg: Config, *, device: torch.device) -> Path:
    """Refine the run's two graphs with ``cfg.refine`` and write the embeddings atomically."""
    graphs = run.read_graphs()
    teacher, student = graphs["teacher"], graphs["student"]
    result = refine_graphs(teacher, student, cfg.refine, device=device, checkpoint_path=run.refine_checkpoint,
                           log_path=run.refine_log)
    save_refined(run.refined, embeddings=result.embeddings, reference=teacher, losses=result.losses,
                 gnn_state=result.state_dict, refine_config=dataclasses.asdict(cfg.refine))
    run.refine_checkpoint.unlink(missing_ok=True)
    return run.refined
