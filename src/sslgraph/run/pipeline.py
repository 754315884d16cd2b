"""``sslgraph run``: pretrain -> export graphs -> refine -> evaluate -> visualize -> report.

A stage is done when its outputs are in the run directory and none is older than the newest of its inputs
(so redoing a stage by hand, e.g. ``sslgraph export-graphs``, makes the pipeline redo every stage that reads
its outputs); pretraining is done when its checkpoint says it trained its last iteration. Whether a stage is
done is read from these files alone (``pipeline.json`` only keeps timings), so a run started with ``sslgraph
pretrain`` continues without redoing anything. Done stages are skipped, interrupted ones resumed (pretraining
and refinement checkpoint as they go), and ``from_stage`` redoes a stage and every stage after it. The seconds
each stage took are kept in ``pipeline.json`` for the report. The run's lock file is held throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sslgraph.config import Config
from sslgraph.methods import require_graphs
from sslgraph.run import evaluate, export, pretrain, refine, report, visualize
from sslgraph.run.lock import run_lock
from sslgraph.run.rundir import RunDir
from sslgraph.training.checkpoint import checkpoint_finished
from sslgraph.utils.misc import resolve_device


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: Callable[[RunDir], list[Path]]
    outputs: Callable[[RunDir], list[Path]]
    run: Callable[[RunDir, Config, torch.device], object]


def _figures(run: RunDir) -> list[Path]:
    # The newest figure stands for the set: older figures of other centres may stay in the folder.
    figures = run.figure_paths
    return [max(figures, key=lambda p: p.stat().st_mtime_ns)] if figures else [run.figure("training_curves")]


PIPELINE: tuple[Stage, ...] = (
    Stage("pretrain", lambda r: [], lambda r: [r.checkpoint],
          lambda r, cfg, device: pretrain.pretrain(cfg, resume="auto")),
    Stage("export", lambda r: [r.checkpoint], lambda r: r.graph_paths,
          lambda r, cfg, device: export.export_graphs(r, cfg, device=device)),
    Stage("refine", lambda r: r.graph_paths, lambda r: [r.refined],
          lambda r, cfg, device: refine.run_refine(r, cfg, device=device)),
    Stage("evaluate", lambda r: [r.checkpoint, *r.graph_paths, r.refined], lambda r: [r.metrics],
          lambda r, cfg, device: evaluate.evaluate_run(r, cfg, device=device)),
    Stage("visualize", lambda r: [r.log, r.refine_log, *r.graph_paths, r.refined], _figures,
          lambda r, cfg, device: visualize.visualize_run(r, cfg)),
    Stage("report", lambda r: [r.metrics, r.log, r.refine_log, *r.figure_paths],
          lambda r: [r.report_md, r.report_html], lambda r, cfg, device: report.write_report(r)),
)
STAGES = tuple(stage.name for stage in PIPELINE)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def stage_done(stage: Stage, run: RunDir, cfg: Config) -> bool:
    """Outputs complete and not older than any existing input (a pretraining checkpoint must have every epoch)."""
    outputs = [_mtime(path) for path in stage.outputs(run)]
    if not outputs or any(t is None for t in outputs):
        return False
    if stage.name == "pretrain" and not checkpoint_finished(run.checkpoint):
        return False
    inputs = [t for t in (_mtime(path) for path in stage.inputs(run)) if t is not None]
    return not inputs or min(outputs) >= max(inputs)  # type: ignore[type-var]


def run_pipeline(cfg: Config, *, from_stage: str | None = None) -> RunDir:
    """Run every stage that is not done (and every stage from ``from_stage`` on) in ``cfg.out_dir``."""
    require_graphs(cfg, purpose="`sslgraph run`")
    run = RunDir(cfg.out_dir)
    forced = STAGES[STAGES.index(from_stage):] if from_stage is not None else ()
    device = resolve_device(cfg.device)
    with run_lock(run):
        state = run.read_pipeline_state()
        for stage in PIPELINE:
            if stage.name not in forced and stage_done(stage, run, cfg):
                print(f"[sslgraph] stage {stage.name}: done already, skipped", flush=True)
                continue
            print(f"[sslgraph] stage {stage.name}: running", flush=True)
            start = time.perf_counter()
            stage.run(run, cfg, device)
            state["stages"][stage.name] = {"seconds": round(time.perf_counter() - start, 2), "finished": time.time()}
            run.write_pipeline_state(state)
    return run
