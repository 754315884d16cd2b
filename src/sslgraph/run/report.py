"""Report stage: ``report.md`` (figures linked) and ``report.html`` (figures embedded) from a run's files.

The in-degree bar charts are drawn here from ``metrics.json`` (a second or less), so the report can show
them without rerunning the figures stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslgraph.refine.encoders import PARAMETER_FREE_KINDS
from sslgraph.report import (
    DEGREE_FIGURE,
    ReportInputs,
    graph_streams,
    render_html,
    render_markdown,
    report_blocks,
)
from sslgraph.run.rundir import RunDir
from sslgraph.utils.io import atomic_write_text
from sslgraph.viz import plot_degree_histograms

DEGREE_GROUPS = (("in_degree_train", "training nodes"), ("in_degree_test", "test nodes"))


def degree_histograms(metrics: dict[str, Any] | None) -> dict[str, dict[str, list[int]]]:
    """``{node group: {graph: counts by in-degree}}`` from the metrics' graph statistics; empty without them."""
    histograms: dict[str, dict[str, list[int]]] = {}
    for stream, stats in graph_streams(metrics or {}).items():
        for key, group in DEGREE_GROUPS:
            counts = stats.get(key, {}).get("histogram") if isinstance(stats.get(key), dict) else None
            if isinstance(counts, list) and counts:
                histograms.setdefault(group, {})[stream] = [int(c) for c in counts]
    return histograms


def degree_figure(run: RunDir, metrics: dict[str, Any] | None) -> Path | None:
    """Write ``figures/degree_histograms.png`` when the metrics hold in-degree histograms; returns its path."""
    histograms = degree_histograms(metrics)
    if not any(sum(counts) for series in histograms.values() for counts in series.values()):
        return None
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    return plot_degree_histograms(histograms, run.figure(DEGREE_FIGURE))


def report_inputs(run: RunDir) -> ReportInputs:
    stages = run.read_pipeline_state().get("stages", {})
    metrics, config = run.read_metrics(), run.saved_config()
    degree_figure(run, metrics)
    encoder = (config or {}).get("refine", {}).get("encoder")
    return ReportInputs(
        title=run.root.resolve().name,
        metrics=metrics,
        config=config,
        stage_seconds={name: float(info.get("seconds", 0.0)) for name, info in stages.items()},
        pretrain_log=run.read_log(),
        refine_log=run.read_refine_log(),
        figures=[path.relative_to(run.root) for path in run.figure_paths],
        refined_parameter_free=encoder in PARAMETER_FREE_KINDS if isinstance(encoder, str) else None,
    )


def write_report(run: RunDir) -> tuple[Path, Path]:
    """Write both renderings of the report atomically; returns their paths."""
    blocks = report_blocks(report_inputs(run.require()))
    md_path = atomic_write_text(run.report_md, render_markdown(blocks))
    html_path = atomic_write_text(run.report_html, render_html(blocks, run.root))
    return md_path, html_path
