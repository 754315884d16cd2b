"""Stage B in a run directory: ``graphs/*.pt`` -> ``refined.pt`` (+ ``refine_log.jsonl``; a refinement
checkpoint while it runs, so an interrupted refinement resumes).

With ``refine.seeds > 1`` the refinement is repeated with seeds ``seed + 1, ...`` after the first one; their
embeddings go into ``refined.pt`` as ``seed_embeddings`` (float16: they serve the spread in metrics.json,
the first seed's float32 embeddings serve everything else).
"""

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
    seed_embeddings = {}
    for offset in range(1, cfg.refine.seeds):
        seed = cfg.refine.seed + offset
        extra = refine_graphs(teacher, student, dataclasses.replace(cfg.refine, seed=seed), device=device)
        seed_embeddings[seed] = extra.embeddings.half()
    save_refined(run.refined, embeddings=result.embeddings, reference=teacher, losses=result.losses,
                 gnn_state=result.state_dict, refine_config=dataclasses.asdict(cfg.refine),
                 seed_embeddings=seed_embeddings)
    run.refine_checkpoint.unlink(missing_ok=True)
    return run.refined
