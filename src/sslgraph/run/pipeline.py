"""``sslgraph run``: pretrain -> export graphs -> refine -> evaluate -> visualize -> report.

A stage is done when its outputs are in the run directory and none is older than the newest of its inputs
(so redoing a stage by hand, e.g. ``sslgraph export-graphs``, makes the pipeline redo every stage that reads
its outputs); pretraining is done when its checkpoint says it trained its last iteration. Whether a stage is
done is read from these files alone (``pipeline.json`` only keeps timings), so a run started with ``sslgraph
pretrain`` continues without redoing anything. Done stages are skipped, interrupted ones resumed (pretraining
and refinement checkpoint as they go), and ``from_stage`` redoes a stage and every stage after it. The seconds
each stage took are kept in ``pipeline.json`` for the report. The run's lock file is held throughout.

``pipeline.time_limit_minutes`` bounds the whole command, counted from ``started_at``: pretraining is the one
stage whose length is a choice (its wall-clock budget), so it ends by the limit less
``pipeline.later_stages_minutes``, if its own budget would end it later.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sslgraph.config import Config
from sslgraph.errors import ConfigError
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
    # (run, cfg, device, deadline): a deadline (a time.time(), or None) is honoured by pretraining, which can
    # shorten itself; the other stages do a fixed amount of work.
    run: Callable[[RunDir, Config, torch.device, float | None], object]


def _figures(run: RunDir) -> list[Path]:
    # The newest figure stands for the set: older figures of other centres may stay in the folder.
    figures = run.figure_paths
    return [max(figures, key=lambda p: p.stat().st_mtime_ns)] if figures else [run.figure("training_curves")]


PIPELINE: tuple[Stage, ...] = (
    Stage("pretrain", lambda r: [], lambda r: [r.checkpoint],
          lambda r, cfg, device, deadline: pretrain.pretrain(cfg, resume="auto", deadline=deadline)),
    Stage("export", lambda r: [r.checkpoint], lambda r: r.graph_paths,
          lambda r, cfg, device, deadline: export.export_graphs(r, cfg, device=device)),
    Stage("refine", lambda r: r.graph_paths, lambda r: [r.refined],
          lambda r, cfg, device, deadline: refine.run_refine(r, cfg, device=device)),
    Stage("evaluate", lambda r: [r.checkpoint, *r.graph_paths, r.refined], lambda r: [r.metrics],
          lambda r, cfg, device, deadline: evaluate.evaluate_run(r, cfg, device=device)),
    Stage("visualize", lambda r: [r.log, r.refine_log, *r.graph_paths, r.refined], _figures,
          lambda r, cfg, device, deadline: visualize.visualize_run(r, cfg)),
    Stage("report", lambda r: [r.metrics, r.log, r.refine_log, *r.figure_paths],
          lambda r: [r.report_md, r.report_html], lambda r, cfg, device, deadline: report.write_report(r)),
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


# Less than this left for pretraining under the time limit is a setting that cannot work, not a short run.
MIN_PRETRAIN_SECONDS = 60.0


def pretrain_deadline(cfg: Config, *, started_at: float, now: float) -> float | None:
    """When pretraining must end under ``pipeline.time_limit_minutes`` counted from ``started_at`` (None: no
    limit); a limit that leaves pretraining less than a minute is refused."""
    limit = cfg.pipeline.time_limit_minutes
    if limit is None:
        return None
    deadline = started_at + (limit - cfg.pipeline.later_stages_minutes) * 60
    if deadline - now < MIN_PRETRAIN_SECONDS:
        raise ConfigError(f"pipeline.time_limit_minutes: {limit:g} min from the start, {(now - started_at) / 60:.1f} "
                          f"of them gone and {cfg.pipeline.later_stages_minutes:g} kept for the later stages "
                          f"(pipeline.later_stages_minutes), leave pretraining {max(deadline - now, 0) / 60:.1f} "
                          f"min; raise the limit or set it to null")
    return deadline


def run_pipeline(cfg: Config, *, from_stage: str | None = None, started_at: float | None = None) -> RunDir:
    """Run every stage that is not done (and every stage from ``from_stage`` on) in ``cfg.out_dir``.

    ``started_at`` (a ``time.time()``; default: now) is where ``pipeline.time_limit_minutes`` counts from.
    """
    require_graphs(cfg, purpose="`sslgraph run`")
    now = time.time()
    started = now if started_at is None else started_at
    if started > now + 1.0:
        raise ConfigError(f"--started-at: {started:.0f} is {started - now:.0f} s in the future; give the moment the "
                          f"run began as seconds since the epoch (date +%s)")
    run = RunDir(cfg.out_dir)
    forced = STAGES[STAGES.index(from_stage):] if from_stage is not None else ()
    device = resolve_device(cfg.device)
    limit = cfg.pipeline.time_limit_minutes
    with run_lock(run):
        state = run.read_pipeline_state()
        for stage in PIPELINE:
            if stage.name not in forced and stage_done(stage, run, cfg):
                print(f"[sslgraph] stage {stage.name}: done already, skipped", flush=True)
                continue
            deadline = pretrain_deadline(cfg, started_at=started, now=time.time()) if stage.name == "pretrain" else None
            print(f"[sslgraph] stage {stage.name}: running", flush=True)
            start = time.perf_counter()
            stage.run(run, cfg, device, deadline)
            state["stages"][stage.name] = {"seconds": round(time.perf_counter() - start, 2), "finished": time.time()}
            run.write_pipeline_state(state)
        minutes = (time.time() - started) / 60
        state["last_run"] = {"minutes": round(minutes, 2), "time_limit_minutes": limit}
        run.write_pipeline_state(state)
    within = "" if limit is None else f" (time limit {limit:g} min)"
    print(f"[sslgraph] pipeline finished in {minutes:.1f} min{within}", flush=True)
    if limit is not None and minutes > limit:
        print(f"[sslgraph] warning: the run took {minutes - limit:.1f} min more than pipeline.time_limit_minutes; "
              f"the stages after pretraining took longer than pipeline.later_stages_minutes="
              f"{cfg.pipeline.later_stages_minutes:g} (see pipeline.json)", file=sys.stderr, flush=True)
    return run
