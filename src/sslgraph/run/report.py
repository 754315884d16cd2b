"""Report stage: ``report.md`` (figures linked) and ``report.html`` (figures embedded) from a run's files."""

from __future__ import annotations

from pathlib import Path

from sslgraph.report import ReportInputs, render_html, render_markdown, report_blocks
from sslgraph.run.rundir import RunDir
from sslgraph.utils.io import atomic_write_text


def report_inputs(run: RunDir) -> ReportInputs:
    stages = run.read_pipeline_state().get("stages", {})
    return ReportInputs(
        title=run.root.resolve().name,
        metrics=run.read_metrics(),
        config=run.saved_config(),
        stage_seconds={name: float(info.get("seconds", 0.0)) for name, info in stages.items()},
        pretrain_log=run.read_log(),
        refine_log=run.read_refine_log(),
        figures=[path.relative_to(run.root) for path in run.figure_paths],
    )


def write_report(run: RunDir) -> tuple[Path, Path]:
    """Write both renderings of the report atomically; returns their paths."""
    blocks = report_blocks(report_inputs(run.require()))
    md_path = atomic_write_text(run.report_md, render_markdown(blocks))
    html_path = atomic_write_text(run.report_html, render_html(blocks, run.root))
    return md_path, html_path
