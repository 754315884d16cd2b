"""``sslgraph run``: pretrain -> export graphs -> refine -> evaluate -> visualize -> report.

Each stage is skipped when its outputs exist and resumed when it was interrupted (pretraining and refinement
checkpoint as they go). ``from_stage`` redoes a stage and every stage after it. Stage timings are kept in
``pipeline.json`` for the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslgraph.config import Config
from sslgraph.utils.io import atomic_write_text, safe_load
from sslgraph.utils.misc import resolve_device

STAGES = ("pretrain", "export", "refine", "evaluate", "visualize", "report")
STATE_NAME = "pipeline.json"


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_NAME
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def _pretraining_finished(run_dir: Path, cfg: Config) -> bool:
    path = run_dir / "checkpoint.pt"
    return path.is_file() and int(safe_load(path)["epoch"]) >= cfg.optim.epochs


def stage_done(stage: str, run_dir: Path, cfg: Config, state: dict[str, Any]) -> bool:
    """A stage is done when the pipeline recorded it and its outputs are still there."""
    if stage not in state["stages"]:
        return False
    outputs = {
        "pretrain": lambda: _pretraining_finished(run_dir, cfg),
        "export": lambda: all((run_dir / "graphs" / f"{s}.pt").is_file() for s in ("teacher", "student")),
        "refine": lambda: (run_dir / "refined.pt").is_file(),
        "evaluate": lambda: (run_dir / "metrics.json").is_file(),
        "visualize": lambda: any((run_dir / "figures").glob("*.png")),
        "report": lambda: (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file(),
    }
    return outputs[stage]()


def run_pipeline(cfg: Config, *, from_stage: str | None = None) -> Path:
    from sslgraph.eval.evaluate import evaluate_run
    from sslgraph.methods.base import export_graphs, pretrain
    from sslgraph.refine.train import run_refine
    from sslgraph.report import write_report
    from sslgraph.viz import visualize_run

    if cfg.method.name != "graph":
        raise ValueError("method.name: the pipeline refines the kNN graphs, so it needs method.name=graph")
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(run_dir)
    if from_stage is not None:
        for stage in STAGES[STAGES.index(from_stage):]:
            state["stages"].pop(stage, None)
    device = resolve_device(cfg.device)

    actions: dict[str, Callable[[], object]] = {
        "pretrain": lambda: pretrain(cfg, resume=True),
        "export": lambda: export_graphs(run_dir, device=device),
        "refine": lambda: run_refine(run_dir, cfg, device=device),
        "evaluate": lambda: evaluate_run(run_dir, cfg, device=device),
        "visualize": lambda: visualize_run(run_dir, cfg, device=device),
        "report": lambda: write_report(run_dir),
    }
    for stage in STAGES:
        if stage_done(stage, run_dir, cfg, state):
            print(f"[sslgraph] stage {stage}: done already, skipped", flush=True)
            continue
        print(f"[sslgraph] stage {stage}: running", flush=True)
        start = time.perf_counter()
        actions[stage]()
        state["stages"][stage] = {"seconds": round(time.perf_counter() - start, 2), "finished": time.time()}
        if stage == "pretrain":
            # Pretraining exports the graphs as its last step; a separate export is only needed to redo it.
            state["stages"]["export"] = {"seconds": 0.0, "finished": time.time(), "by": "pretrain"}
        atomic_write_text(run_dir / STATE_NAME, json.dumps(state, indent=2, sort_keys=True))
    return run_dir
