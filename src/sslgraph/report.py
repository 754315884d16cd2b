"""A run's report as Markdown and as a self-contained HTML page, from its metrics, config, logs and figures.

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures) and rendered twice,
so the Markdown and the HTML always say the same thing. A summary table puts every feature set's kNN and
linear accuracy side by side; a final table lists every measured number with its full key, so nothing
measured is left out of the report. The run layer (:mod:`sslgraph.run.report`) gathers the inputs from a run
directory and writes the two files.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


CONFIG_SUMMARY_KEYS = (
    "data.dataset", "data.train_subset", "data.test_subset", "data.image_size",
    "model.backbone", "model.patch_size", "model.out_dim",
    "optim.epochs", "optim.batch_size", "optim.lr",
    "method.name", "method.topk", "method.vote_window", "method.edges_per_node", "method.sampling_temperature",
    "method.export_features", "method.export_edge_weight",
    "refine.encoder", "refine.num_layers", "refine.hidden_dim", "refine.jk", "refine.epochs", "refine.lr",
    "refine.mode", "refine.output",
    "seed",
)
FEATURE_SET_TITLES = {
    ("backbones", "teacher"): "backbone: teacher",
    ("backbones", "student"): "backbone: student",
    ("nodes", "raw"): "nodes: raw [teacher; student]",
    ("nodes", "teacher"): "nodes: teacher features",
    ("nodes", "student"): "nodes: student features",
    ("nodes", "refined"): "nodes: refined (GNN)",
}
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class FigureBlock:
    path: Path  # relative to the directory the report is written to
    caption: str


Block = Heading | Paragraph | Table | FigureBlock


@dataclass
class ReportInputs:
    """Everything a report shows; absent parts are said to be absent."""

    title: str
    metrics: dict[str, Any] | None = None
    # The run's configuration as nested plain values.
    config: dict[str, Any] | None = None
    # Seconds per pipeline stage, in run order.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    pretrain_log: list[dict[str, Any]] = field(default_factory=list)
    refine_log: list[dict[str, Any]] = field(default_factory=list)
    # Figure files, relative to the directory the Markdown is written to.
    figures: list[Path] = field(default_factory=list)


def exact(value: Any) -> str:
    """A value as written in the metrics (lists joined), so the report shows every digit."""
    if isinstance(value, list):
        return ", ".join(exact(v) for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.key, leaf)`` pairs of a nested dict; lists are leaves."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    pairs: list[tuple[str, Any]] = []
    for key, value in tree.items():
        pairs.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return pairs


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "n/a" if value is None else str(value)


def _config_blocks(config: dict[str, Any] | None) -> list[Block]:
    if config is None:
        return [Heading("Configuration"), Paragraph("No saved configuration in the run directory.")]
    values = dict(flatten(config))
    rows = [[key, exact(values[key])] for key in CONFIG_SUMMARY_KEYS if key in values]
    return [Heading("Configuration"),
            Paragraph("Main settings; the run's saved configuration holds every value and reproduces the run."),
            Table(["key", "value"], rows)]


def _timing_blocks(inputs: ReportInputs) -> list[Block]:
    rows: list[list[str]] = [[f"stage {name}", f"{seconds:.1f} s"] for name, seconds in inputs.stage_seconds.items()]
    pretrain = [r for r in inputs.pretrain_log if r.get("epoch", -1) >= 0]
    if pretrain:
        seconds = sum(r.get("epoch_seconds", 0.0) for r in pretrain)
        rows.append(["pretraining epochs logged", str(len(pretrain))])
        rows.append(["pretraining time (sum of epochs)", f"{seconds:.1f} s ({seconds / len(pretrain):.1f} s/epoch)"])
        speeds = [r["images_per_sec"] for r in pretrain if "images_per_sec" in r]
        if speeds:
            rows.append(["pretraining throughput (mean)", f"{sum(speeds) / len(speeds):.1f} images/s"])
        rows.append(["final pretraining loss", _short(pretrain[-1].get("loss"))])
    knn = [r for r in inputs.pretrain_log if "knn_top1" in r]
    if knn:
        rows.append(["online kNN top-1: first / last", f"{_short(knn[0]['knn_top1'])} / {_short(knn[-1]['knn_top1'])}"])
    refine = inputs.refine_log
    if refine:
        seconds = sum(r.get("seconds", 0.0) for r in refine)
        rows.append(["refinement epochs logged", str(len(refine))])
        rows.append(["refinement time (sum of epochs)", f"{seconds:.1f} s"])
        rows.append(["final refinement loss", _short(refine[-1].get("loss"))])
    if not rows:
        return [Heading("Timings"), Paragraph("No training logs or stage timings found.")]
    return [Heading("Timings"), Table(["item", "value"], rows)]


def _linear_cell(entry: dict[str, Any]) -> str:
    if "linear_probe" in entry:
        return f"{_short(entry['linear_probe'].get('top1'))} (SGD probe)"
    if "logistic_regression" in entry:
        probe = entry["logistic_regression"]
        seeds = len(probe.get("accuracies", []))
        return f"{_short(probe.get('mean'))} ± {_short(probe.get('std'))} (logistic, {seeds} seeds)"
    return ""


def _summary_blocks(metrics: dict[str, Any]) -> list[Block]:
    ks: list[str] = []
    entries: list[tuple[str, dict[str, Any]]] = []
    for part in ("backbones", "nodes"):
        for name, entry in metrics.get(part, {}).get("feature_sets", {}).items():
            entries.append((FEATURE_SET_TITLES.get((part, name), f"{part}: {name}"), entry))
            ks += [k for k in entry.get("knn", {}) if k not in ks]
    blocks: list[Block] = [Heading("Results")]
    if entries:
        ks.sort(key=int)
        rows = [[title, str(entry.get("dim", "")), *(_short(entry.get("knn", {}).get(k)) for k in ks),
                 _linear_cell(entry)] for title, entry in entries]
        blocks.append(Table(["features", "dim", *(f"kNN k={k}" for k in ks), "linear top-1 (%)"], rows))
        blocks.append(Paragraph("Top-1 accuracy in percent. Backbone rows: clean training images vote for / train a "
                                "classifier for clean held-out images. Node rows: training nodes -> held-out nodes; "
                                "raw and refined use identical settings (the refinement ablation)."))
    for part in ("backbones", "nodes"):
        info = metrics.get(part, {})
        if "skipped" in info:
            blocks.append(Paragraph(f"{part}: skipped ({info['skipped']})."))
    return blocks


def _graph_blocks(metrics: dict[str, Any]) -> list[Block]:
    graphs = metrics.get("nodes", {}).get("graphs", {})
    if not graphs:
        return []
    streams = list(graphs)
    flat = {stream: dict(flatten(stats)) for stream, stats in graphs.items()}
    keys = list(flat[streams[0]])
    rows = [[key, *(exact(flat[s].get(key, "")) for s in streams)] for key in keys]
    return [Heading("Graph statistics"),
            Paragraph("Edges run from a neighbour (source) to the node that aggregates it (target); "
                      "histogram[d] counts nodes with in-degree d."),
            Table(["statistic", *streams], rows)]


def _figure_blocks(figures: list[Path]) -> list[Block]:
    if not figures:
        return []
    return [Heading("Figures"), *(FigureBlock(path, path.stem.replace("_", " ")) for path in figures)]


def report_blocks(inputs: ReportInputs) -> list[Block]:
    """Everything the report says, in order."""
    metrics: dict[str, Any] = inputs.metrics or {}
    blocks: list[Block] = [Heading(f"sslgraph run: {inputs.title}", level=1)]
    if metrics:
        dataset = metrics.get("dataset", {})
        blocks.append(Paragraph(f"Data set: {dataset.get('name', 'unknown')}; "
                                f"backbone: {metrics.get('backbone', '?')}; seed: {metrics.get('seed', '?')}."))
    blocks += _config_blocks(inputs.config) + _timing_blocks(inputs)
    if not metrics:
        blocks += [Heading("Results"), Paragraph("No metrics yet: run `sslgraph evaluate` first.")]
    else:
        blocks += _summary_blocks(metrics) + _graph_blocks(metrics)
    blocks += _figure_blocks(inputs.figures)
    if metrics:
        blocks += [Heading("All metrics"),
                   Paragraph("Every measured value, with its key."),
                   Table(["key", "value"], [[key, exact(value)] for key, value in flatten(metrics)])]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Paragraph):
            out.append(f"{block.text}\n")
        elif isinstance(block, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            out.append("|" + "---|" * len(block.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
        else:
            out.append(f"![{block.caption}]({block.path.as_posix()})\n")
            out.append(f"*{block.caption}*\n")
    return "\n".join(out)


def _html_text(text: str) -> str:
    """Escape, then show `code` spans as in the Markdown."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block], base_dir: Path) -> str:
    """A standalone page: figures (paths relative to ``base_dir``) are embedded as base64 data URIs."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_html_text(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_html_text(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode((Path(base_dir) / block.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    title = blocks[0].text if blocks and isinstance(blocks[0], Heading) else "sslgraph report"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
