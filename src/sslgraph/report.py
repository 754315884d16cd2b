"""A run's report as Markdown and as a self-contained HTML page, from its metrics, config, logs and figures.

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures) and rendered twice,
so the Markdown and the HTML always say the same thing. It leads with the answer a reader came for: raw
versus propagated versus trained node features on kNN and the probe, the gain of each over raw with its
spread, the purity of the graphs and a verdict computed from those numbers. Backbone results, pictures,
configuration, timings and graph statistics follow; a final table lists every measured number with its key,
so nothing measured is left out. Numbers are rounded for reading (accuracies to 2 decimals, shares in [0, 1]
as percentages, other floats to 4 significant digits). The run layer (:mod:`sslgraph.run.report`) gathers
the inputs from a run directory and writes the two files.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_SUMMARY_KEYS = (
    "data.dataset", "data.train_subset", "data.test_subset", "data.image_size",
    "model.backbone", "model.patch_size", "model.out_dim",
    "optim.epochs", "optim.batch_size", "optim.lr",
    "method.name", "method.topk", "method.vote_window", "method.edges_per_node", "method.sampling_temperature",
    "method.export_features", "method.export_edges", "method.export_edge_weight",
    "refine.encoder", "refine.edges", "refine.num_layers", "refine.hidden_dim", "refine.jk", "refine.epochs",
    "refine.lr", "refine.alpha", "refine.seeds", "refine.mode", "refine.output",
    "seed",
)
FEATURE_SET_TITLES = {
    ("backbones", "teacher"): "backbone: teacher",
    ("backbones", "student"): "backbone: student",
    ("nodes", "raw"): "nodes: raw [teacher; student]",
    ("nodes", "teacher"): "nodes: teacher features",
    ("nodes", "student"): "nodes: student features",
    ("nodes", "propagated"): "nodes: propagated (parameter-free)",
    ("nodes", "refined"): "nodes: refined (GNN)",
}
# Pipeline stages in the order they run; stages not listed follow in the order given.
STAGE_ORDER = ("pretrain", "export", "refine", "evaluate", "visualize", "report")
# The kNN column of the headline: the k the paper reports.
HEADLINE_K = "20"
# A difference within this many points counts as a tie when no spread was measured (a single kNN run).
TIE_POINTS = 0.1
# Where per-refinement-seed results may sit inside a feature set's entry (see :func:`refinement_seeds`).
PER_SEED_KEYS = ("refinement_seeds", "per_seed", "refine_seeds", "seeds", "runs")
# File stem of the in-degree bar charts, which the report shows with the graph statistics.
DEGREE_FIGURE = "degree_histograms"
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222;
       line-height: 1.45; }
h1 { margin-bottom: 0.3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td { overflow-wrap: break-word; max-width: 40em; font-variant-numeric: tabular-nums; }
td.short { white-space: nowrap; }
th { background: #f2f2f2; }
p.verdict { font-size: 1.15em; background: #f4f8fc; border-left: 4px solid #3a78b5; padding: 0.6em 0.9em; }
figure { margin: 1.5em 0; }
figure.half { display: inline-block; vertical-align: top; width: calc(50% - 1.3em); margin-right: 1em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
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
    # The verdict: bold in Markdown, highlighted in HTML.
    emphasis: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class FigureBlock:
    path: Path  # relative to the directory the report is written to
    caption: str
    # Half the page width in HTML, so pairs (a node in the teacher and the student graph) sit side by side.
    half: bool = False


Block = Heading | Paragraph | Table | FigureBlock


@dataclass
class ReportInputs:
    """Everything a report shows; absent parts are said to be absent."""

    title: str
    metrics: dict[str, Any] | None = None
    # The run's configuration as nested plain values.
    config: dict[str, Any] | None = None
    # Seconds per pipeline stage.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    pretrain_log: list[dict[str, Any]] = field(default_factory=list)
    refine_log: list[dict[str, Any]] = field(default_factory=list)
    # Figure files, relative to the directory the Markdown is written to.
    figures: list[Path] = field(default_factory=list)
    # Whether the refined features come from parameter-free propagation rather than a trained GNN
    # (None: unknown, then read from the refinement log).
    refined_parameter_free: bool | None = None


# ---------------------------------------------------------------------------------------------- numbers


def fmt_number(value: Any) -> str:
    """A value for reading: floats to 4 significant digits, integers whole, lists joined."""
    if isinstance(value, list):
        return ", ".join(fmt_number(v) for v in value)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return json.dumps(value)


def fmt_accuracy(value: Any) -> str:
    """An accuracy already in percent, to 2 decimals."""
    return f"{value:.2f}" if _is_number(value) else "n/a"


def fmt_share(value: Any) -> str:
    """A share in [0, 1] as a percentage with 1 decimal."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %"


def fmt_seconds(seconds: float | None) -> str:
    """Seconds as a reader counts them: 0.42 s, 12.3 s, 10 min 44 s, 2 h 05 min."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest:02d} min"


def fmt_points(value: float) -> str:
    """A signed difference in accuracy points: 1 decimal from one point up, 2 below (so small ties show)."""
    return f"{value:+.1f}" if abs(value) >= 0.95 else f"{value:+.2f}"


def sub(tree: Any, *keys: str) -> dict[str, Any]:
    """The dict at ``tree[k1][k2]...``, or {} where a level is missing or not a dict, so metrics of older or
    partial runs render instead of raising."""
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree if isinstance(tree, dict) else {}


def leaf(tree: Any, *keys: str) -> Any:
    """The value at ``tree[k1]...[kn]``, or None where a level is missing."""
    parent = sub(tree, *keys[:-1])
    return parent.get(keys[-1])


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.key, leaf)`` pairs of a nested dict; lists are leaves."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    pairs: list[tuple[str, Any]] = []
    for key, value in tree.items():
        pairs.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return pairs


# ---------------------------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A measured accuracy (percent): the mean, and the population std over ``count`` seeds of ``over``
    (std None: a single measurement)."""

    mean: float
    std: float | None = None
    count: int = 1
    over: str = ""
    # The feature set whose very measurement this is (the probe of unpropagated features is the raw one).
    same_as: str = ""

    def text(self) -> str:
        if self.std is None:
            return fmt_accuracy(self.mean)
        return f"{fmt_accuracy(self.mean)} ± {fmt_accuracy(self.std)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_values(values: list[float], over: str) -> Estimate | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if len(values) > 1 else None
    return Estimate(mean, std, len(values), over)


def estimate(value: Any, *, over: str) -> Estimate | None:
    """An :class:`Estimate` from what the metrics hold: a number, a list of per-seed numbers, or a dict with
    ``mean`` (and ``std``, with the per-seed values under ``accuracies``/``values``/``per_seed``)."""
    if _is_number(value):
        return Estimate(float(value))
    if isinstance(value, list):
        return _from_values([float(v) for v in value if _is_number(v)], over)
    if isinstance(value, dict) and _is_number(value.get("mean")):
        values = next((value[key] for key in ("accuracies", "values", "per_seed") if isinstance(value.get(key), list)),
                      [])
        std = value.get("std")
        return Estimate(float(value["mean"]), float(std) if _is_number(std) else None, max(len(values), 1), over)
    return None


def knn_estimate(entry: dict[str, Any], k: str = HEADLINE_K) -> Estimate | None:
    return estimate(leaf(entry, "knn", k), over="seeds")


def probe_estimate(entry: dict[str, Any]) -> Estimate | None:
    """The standardised logistic probe (or, on backbones, the SGD linear probe)."""
    if "logistic_regression" in entry:
        found = estimate(entry["logistic_regression"], over="probe seeds")
        same = leaf(entry, "logistic_regression", "same_input_as")
        return dataclasses.replace(found, same_as=same) if found is not None and isinstance(same, str) else found
    if isinstance(entry.get("linear_probe"), dict):
        return estimate(leaf(entry, "linear_probe", "top1"), over="probe seeds")
    return None


def refinement_seeds(entry: dict[str, Any], k: str = HEADLINE_K) -> tuple[Estimate | None, Estimate | None]:
    """kNN and probe over refinement seeds, where the entry holds them; (None, None) otherwise.

    Accepted under any of :data:`PER_SEED_KEYS`: a list of per-seed entries (each with ``knn`` and
    ``logistic_regression`` as a plain feature set has), or one entry whose ``knn[k]`` and
    ``logistic_regression`` hold per-seed lists or ``{mean, std, values}`` dicts.
    """
    for key in PER_SEED_KEYS:
        runs = entry.get(key)
        if isinstance(runs, list) and runs and all(isinstance(r, dict) for r in runs):
            knn = [e.mean for e in (knn_estimate(r, k) for r in runs) if e is not None]
            probe = [e.mean for e in (probe_estimate(r) for r in runs) if e is not None]
            return _from_values(knn, "refinement seeds"), _from_values(probe, "refinement seeds")
        if isinstance(runs, dict) and ("knn" in runs or "logistic_regression" in runs):
            return (estimate(leaf(runs, "knn", k), over="refinement seeds"),
                    estimate(runs.get("logistic_regression"), over="refinement seeds"))
    return None, None


def measured(entry: dict[str, Any], k: str = HEADLINE_K) -> tuple[Estimate | None, Estimate | None]:
    """kNN and probe of one feature set: over refinement seeds where present, else as evaluated once."""
    knn, probe = refinement_seeds(entry, k)
    return knn or knn_estimate(entry, k), probe or probe_estimate(entry)


@dataclass(frozen=True)
class Gain:
    """Difference of means against raw, and its spread (root of the summed variances; None: none measured)."""

    value: float
    spread: float | None
    # True when both sides are one measurement (the same probe input): the difference is exactly 0.
    same: bool = False

    @property
    def outcome(self) -> str:
        """"gain", "loss" or "tie" (within the spread, or :data:`TIE_POINTS` without one)."""
        tolerance = max(self.spread or 0.0, TIE_POINTS)
        if self.value > tolerance:
            return "gain"
        if self.value < -tolerance:
            return "loss"
        return "tie"

    @property
    def note(self) -> str:
        return "the same probe input" if self.same else ""

    def text(self) -> str:
        if self.spread is None:
            return fmt_points(self.value)
        return f"{fmt_points(self.value)} ± {fmt_accuracy(self.spread)}"


def gain(value: Estimate | None, raw: Estimate | None, *, raw_name: str = "raw") -> Gain | None:
    if value is None or raw is None:
        return None
    if value.same_as == raw_name or (value.same_as and value.same_as == raw.same_as):
        return Gain(0.0, None, same=True)
    stds = [e.std for e in (value, raw) if e.std is not None]
    return Gain(value.mean - raw.mean, math.sqrt(sum(s * s for s in stds)) if stds else None)


# ---------------------------------------------------------------------------------------------- headline


def graph_streams(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-graph statistics (teacher, student) under ``nodes.graphs``, without other entries there."""
    graphs = sub(metrics, "nodes", "graphs")
    return {name: stats for name, stats in graphs.items()
            if isinstance(stats, dict) and ("edges" in stats or "train_to_train" in stats)}


def purity(metrics: dict[str, Any]) -> dict[str, float]:
    """Same-class share of the edges between training nodes, per graph (the edges refinement trains on)."""
    shares = {stream: leaf(stats, "train_to_train", "same_class_share")
              for stream, stats in graph_streams(metrics).items()}
    return {stream: float(share) for stream, share in shares.items() if _is_number(share)}


def edge_variants(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{variant: {stream: same-class share}}`` of the candidate edge sets (exported, mutual, union, ...),
    from ``nodes.graphs.edge_variants`` (or ``graphs.edge_variants``); empty where the metrics have none."""
    found = (sub(metrics, "nodes", "graphs", "edge_variants") or sub(metrics, "nodes", "edge_variants")
             or sub(metrics, "graphs", "edge_variants"))
    table: dict[str, dict[str, float | None]] = {}
    for variant, streams in found.items():
        if not isinstance(streams, dict):
            continue
        row: dict[str, float | None] = {}
        for stream, stats in streams.items():
            share = stats
            if isinstance(stats, dict):
                share = stats.get("same_class_share", leaf(stats, "train_to_train", "same_class_share"))
            row[str(stream)] = float(share) if _is_number(share) else None
        table[str(variant)] = row
    return table


def _used_edges(inputs: ReportInputs) -> str | None:
    """The edge variant the refinement read (``refine.edges``), where the config or metrics say."""
    used = leaf(inputs.config, "refine", "edges") or leaf(inputs.metrics, "nodes", "propagation", "edges")
    return used if isinstance(used, str) else None


def _purity_text(inputs: ReportInputs) -> str:
    """"graphs 24.5 % / 24.3 % same-class, teacher / student", of the edges the refinement read."""
    shares, what = purity(inputs.metrics or {}), "graphs"
    used = _used_edges(inputs)
    variant = edge_variants(inputs.metrics or {}).get(used or "", {})
    if used != "exported" and variant and all(v is not None for v in variant.values()):
        shares, what = {stream: float(v) for stream, v in variant.items() if v is not None}, f"{used} edges"
    if not shares:
        return ""
    if len(shares) == 1:
        return f"{next(iter(shares))} {what} {fmt_share(next(iter(shares.values())))} same-class"
    return f"{what} {' / '.join(fmt_share(s) for s in shares.values())} same-class, {' / '.join(shares)}"


def _parameter_free(inputs: ReportInputs) -> bool | None:
    if inputs.refined_parameter_free is not None:
        return inputs.refined_parameter_free
    if any("loss" in r for r in inputs.refine_log):
        return False
    if any("alpha" in r for r in inputs.refine_log):
        return True
    return None


def _encoder(config: dict[str, Any] | None) -> str | None:
    encoder = leaf(config, "refine", "encoder")
    return encoder if isinstance(encoder, str) else None


@dataclass(frozen=True)
class Row:
    """One feature set of the headline."""

    name: str  # key under nodes.feature_sets
    label: str
    knn: Estimate | None
    probe: Estimate | None


def headline_rows(inputs: ReportInputs) -> list[Row]:
    """Raw, propagated and refined node features, those the metrics hold, in that order."""
    sets = sub(inputs.metrics, "nodes", "feature_sets")
    encoder = _encoder(inputs.config)
    propagation = sub(inputs.metrics, "nodes", "propagation")
    labels = {"raw": "raw [teacher; student]", "propagated": "propagated (parameter-free)"}
    if _is_number(propagation.get("alpha")) and _is_number(propagation.get("hops")):
        labels["propagated"] = (f"propagated (parameter-free, α = {fmt_number(propagation['alpha'])}, "
                                f"{_hops(propagation['hops'])})")
    if _parameter_free(inputs):
        labels["refined"] = f"refined: parameter-free propagation ({encoder or 'no training'})"
    else:
        labels["refined"] = f"trained GNN ({encoder})" if encoder else "refined (trained GNN)"
    rows = []
    for name in ("raw", "propagated", "refined"):
        if isinstance(sets.get(name), dict):
            knn, probe = measured(sets[name])
            rows.append(Row(name, labels[name], knn, probe))
    if len(rows) == 3 and _parameter_free(inputs) and (rows[1].knn, rows[1].probe) == (rows[2].knn, rows[2].probe):
        # The run's refinement is the propagation baseline itself: one row says so.
        rows[1:] = [Row("refined", labels["propagated"].replace("propagated", "propagated = refined", 1),
                        rows[2].knn, rows[2].probe)]
    return rows


def _hops(count: Any) -> str:
    return f"{fmt_number(count)} hop{'' if count == 1 else 's'}"


def _gain_phrase(gains: dict[str, Gain]) -> str:
    return " / ".join(f"{g.text()} {metric} points" + (f" ({g.note})" if g.note else "") for metric, g in gains.items())


def verdict(inputs: ReportInputs) -> str:
    """One line that answers "does refinement help here?", computed from the headline numbers."""
    metrics = inputs.metrics or {}
    nodes = sub(metrics, "nodes")
    if not metrics:
        return "No metrics yet: run `sslgraph evaluate` first."
    if "skipped" in nodes or not sub(nodes, "feature_sets"):
        reason = nodes.get("skipped", "the metrics have no node features")
        return f"No graph refinement to judge in this run ({reason}); the backbone results below are the answer."
    rows = {row.name: row for row in headline_rows(inputs)}
    if "raw" not in rows:
        return "No verdict: the metrics have no raw node features to compare with."
    target = rows.get("refined") or rows.get("propagated")
    if target is None:
        return "No refinement in this run: only the raw node features were evaluated."
    trained = target.name == "refined" and not _parameter_free(inputs)
    subject = "Refinement (trained GNN)" if trained else "Parameter-free propagation"
    k = f"kNN{HEADLINE_K}"
    gains = {metric: g for metric, g in ((k, gain(target.knn, rows["raw"].knn)),
                                         ("probe", gain(target.probe, rows["raw"].probe))) if g is not None}
    if not gains:
        return f"No verdict: {target.label} has no kNN or probe accuracy to compare with the raw features."
    purity_text = _purity_text(inputs)
    suffix = f" ({purity_text})" if purity_text else ""
    outcomes = {g.outcome for g in gains.values()}
    if outcomes == {"gain"}:
        line = f"{subject} gains {_gain_phrase(gains)} over raw features{suffix}."
    elif outcomes == {"loss"}:
        line = f"{subject} does not help on these graphs: {_gain_phrase(gains)} against raw features{suffix}."
    elif outcomes == {"tie"}:
        line = (f"{subject} makes no difference beyond the spread on these graphs: {_gain_phrase(gains)} "
                f"against raw features{suffix}.")
    else:
        words = {"gain": "a gain", "loss": "a loss", "tie": "within the spread"}
        parts = " / ".join(f"{g.text()} {metric} points ({g.note or words[g.outcome]})" for metric, g in gains.items())
        line = f"{subject} is mixed on these graphs: {parts} against raw features{suffix}."
    propagation = sub(nodes, "propagation")
    if not trained and (propagation.get("alpha") == 1.0 or propagation.get("hops") == 0):
        line = line[:-1] + ("; the label-free rule kept the raw features (alpha 1, no hop), so the difference is "
                            "their standardisation alone.")
    if trained and "propagated" in rows:
        versus = {metric: g for metric, g in ((k, gain(target.knn, rows["propagated"].knn, raw_name="propagated")),
                                              ("probe", gain(target.probe, rows["propagated"].probe,
                                                             raw_name="propagated")))
                  if g is not None}
        if versus:
            line = line[:-1] + f"; against parameter-free propagation it is {_gain_phrase(versus)}."
    return line


def _spread_note(rows: list[Row]) -> str:
    overs: dict[str, list[str]] = {}
    for row in rows:
        for e in (row.knn, row.probe):
            if e is not None and e.std is not None and row.name not in overs.setdefault(f"{e.count} {e.over}", []):
                overs[f"{e.count} {e.over}"].append(row.name)
    spread = ""
    if overs:
        parts = [f"{over} ({', '.join(names)})" if len(overs) > 1 else over for over, names in overs.items()]
        spread = f"± is the population std over {' and over '.join(parts)}. "
    return (f"Top-1 accuracy (%) on the held-out nodes: kNN{HEADLINE_K} is the weighted {HEADLINE_K}-NN vote of "
            f"the training nodes, the probe a logistic regression on standardised features. {spread}A gain is "
            f"the difference of means against raw, its spread the root of the summed variances; differences "
            f"within the spread (or {TIE_POINTS} points where none is measured) count as ties.")


def _backbone_headline(metrics: dict[str, Any]) -> list[Block]:
    rows = []
    for name, entry in sub(metrics, "backbones", "feature_sets").items():
        if not isinstance(entry, dict):
            continue
        knn, probe = knn_estimate(entry), probe_estimate(entry)
        rows.append([FEATURE_SET_TITLES.get(("backbones", name), name), knn.text() if knn else "n/a",
                     probe.text() if probe else "n/a"])
    if not rows:
        return [Paragraph("No backbone results either.")]
    return [Table(["features", f"kNN{HEADLINE_K} (%)", "linear probe (%)"], rows)]


def headline_blocks(inputs: ReportInputs) -> list[Block]:
    """The answer first: verdict, raw vs propagated vs trained, gains, graph purity, edge variants."""
    metrics = inputs.metrics or {}
    blocks: list[Block] = [Heading("Headline"), Paragraph(verdict(inputs), emphasis=True)]
    if not metrics:
        return blocks
    rows = headline_rows(inputs)
    if not rows:
        return blocks + _backbone_headline(metrics)
    raw = next((row for row in rows if row.name == "raw"), None)
    table = []
    for row in rows:
        cells = [row.label, row.knn.text() if row.knn else "n/a", row.probe.text() if row.probe else "n/a"]
        for value, base in ((row.knn, raw.knn if raw else None), (row.probe, raw.probe if raw else None)):
            g = gain(value, base) if row.name != "raw" else None
            cells.append((g.text() + (" (same input)" if g.same else "")) if g else "")
        table.append(cells)
    k = f"kNN{HEADLINE_K}"
    blocks.append(Table(["node features", f"{k} (%)", "probe (%)", f"{k} gain", "probe gain"], table))
    blocks.append(Paragraph(_spread_note(rows)))
    streams = graph_streams(metrics)
    shares = purity(metrics)
    if shares:
        line = ("Purity of the exported graphs, the same-class share of the edges between training nodes: "
                + ", ".join(f"{stream} {fmt_share(share)}" for stream, share in shares.items()))
        into_test = {s: leaf(stats, "train_to_test", "same_class_share") for s, stats in streams.items()}
        if any(_is_number(v) for v in into_test.values()):
            line += "; edges into test nodes: " + ", ".join(f"{s} {fmt_share(v)}" for s, v in into_test.items())
        blocks.append(Paragraph(line + "."))
    selection = sub(metrics, "nodes", "propagation")
    if _is_number(selection.get("alpha")) and selection.get("selection"):
        note = (f"The propagation setting (α = {fmt_number(selection['alpha'])}, the share of a node's own feature "
                f"kept per hop; {_hops(selection.get('hops'))}) was chosen without labels")
        if selection.get("alpha") == 1 or selection.get("hops") == 0:
            note += ": no setting beat the raw features, so the propagated row is the standardised raw features"
        blocks.append(Paragraph(note + "."))
    variants = edge_variants(metrics)
    if variants:
        names = list(dict.fromkeys(stream for row in variants.values() for stream in row))
        used = _used_edges(inputs)
        counts = _variant_edge_counts(metrics)
        variant_rows = []
        for variant, shares_by_stream in variants.items():
            cells = []
            for stream in names:
                edges = counts.get(variant, {}).get(stream)
                cells.append(fmt_share(shares_by_stream.get(stream))
                             + (f" of {edges:,} edges" if edges is not None else ""))
            variant_rows.append([f"{variant} (used by the refinement)" if variant == used else variant, *cells])
        blocks += [Heading("Edge variants", level=3),
                   Paragraph("Same-class share of the edges between training nodes in each label-free edge set the "
                             "refinement can read, per graph."),
                   Table(["edges", *names], variant_rows)]
    return blocks


def _variant_edge_counts(metrics: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Edge counts per variant and stream where the metrics give them (``edges`` beside the share)."""
    counts: dict[str, dict[str, int]] = {}
    for variant, streams in sub(metrics, "nodes", "graphs", "edge_variants").items():
        for stream, stats in (streams.items() if isinstance(streams, dict) else ()):
            if isinstance(stats, dict) and isinstance(stats.get("edges"), int):
                counts.setdefault(str(variant), {})[str(stream)] = stats["edges"]
    return counts


# ---------------------------------------------------------------------------------------------- details


def _linear_cell(entry: dict[str, Any]) -> str:
    if "linear_probe" in entry:
        return f"{fmt_accuracy(leaf(entry, 'linear_probe', 'top1'))} (SGD probe)"
    if "logistic_regression" in entry:
        probe = estimate(entry["logistic_regression"], over="probe seeds")
        return f"{probe.text()} (logistic, {probe.count} seeds)" if probe else "n/a"
    return ""


def _knn_ks(entries: list[dict[str, Any]]) -> list[str]:
    ks: list[str] = []
    for entry in entries:
        ks += [k for k in sub(entry, "knn") if k not in ks]
    return sorted(ks, key=lambda k: int(k) if k.isdigit() else math.inf)


def _knn_cell(entry: dict[str, Any], k: str) -> str:
    value = estimate(leaf(entry, "knn", k), over="seeds")
    return value.text() if value else ""


def backbone_blocks(metrics: dict[str, Any]) -> list[Block]:
    """Teacher and student backbones on clean images: kNN at every k and the teacher's linear probe."""
    part = sub(metrics, "backbones")
    blocks: list[Block] = [Heading("Backbone results")]
    sets = {name: entry for name, entry in sub(part, "feature_sets").items() if isinstance(entry, dict)}
    if sets:
        ks = _knn_ks(list(sets.values()))
        rows = [[FEATURE_SET_TITLES.get(("backbones", name), name), fmt_number(entry.get("dim", "")),
                 *(_knn_cell(entry, k) for k in ks), _linear_cell(entry)] for name, entry in sets.items()]
        blocks += [Table(["features", "dim", *(f"kNN k={k}" for k in ks), "linear top-1 (%)"], rows),
                   Paragraph("Top-1 accuracy (%): clean training images vote for / train a classifier for clean "
                             "held-out images.")]
    for key in ("skipped", "linear_probe_skipped"):
        if key in part:
            blocks.append(Paragraph(f"{'Backbones' if key == 'skipped' else 'Linear probe'}: skipped ({part[key]})."))
    if len(blocks) == 1:
        blocks.append(Paragraph("No backbone results in the metrics."))
    return blocks


def node_detail_blocks(metrics: dict[str, Any], *, parameter_free: bool | None = None) -> list[Block]:
    """Every node feature set at every k, with the collapse measures, and how propagation was chosen."""
    nodes = sub(metrics, "nodes")
    sets = {name: entry for name, entry in sub(nodes, "feature_sets").items() if isinstance(entry, dict)}
    titles = dict(FEATURE_SET_TITLES)
    if parameter_free:
        titles[("nodes", "refined")] = "nodes: refined (parameter-free propagation)"
    blocks: list[Block] = []
    if sets:
        ks = _knn_ks(list(sets.values()))
        rows = []
        for name, entry in sets.items():
            collapse = sub(entry, "collapse")
            rows.append([titles.get(("nodes", name), f"nodes: {name}"), fmt_number(entry.get("dim", "")),
                         *(_knn_cell(entry, k) for k in ks), _linear_cell(entry),
                         f"{collapse['mean_cosine']:.2f}" if "mean_cosine" in collapse else "",
                         f"{collapse['effective_rank']:.1f}" if "effective_rank" in collapse else ""])
        blocks += [Heading("Node features in detail"),
                   Table(["features", "dim", *(f"kNN k={k}" for k in ks), "linear top-1 (%)", "mean cosine",
                          "effective rank"], rows),
                   Paragraph("Training nodes -> held-out nodes, identical settings for every row. Mean cosine: mean "
                             "pairwise cosine of the L2-normalised features (collapse -> 1); effective rank: of "
                             "their covariance.")]
    for key in ("skipped", "refined_skipped"):
        if key in nodes:
            blocks.append(Paragraph(f"{'Node features' if key == 'skipped' else 'Refined features'}: skipped "
                                    f"({nodes[key]})."))
    selection = leaf(nodes, "propagation", "selection")
    scores = selection.get("scores") if isinstance(selection, dict) else None
    grid = _selection_grid(scores) if isinstance(scores, dict) else None
    if grid is not None:
        text = f"Score of each setting ({selection.get('rule', 'label-free rule')})"
        if "alpha=1,hops=0" in scores:
            text += f"; the raw features score {fmt_number(scores['alpha=1,hops=0'])}"
        blocks += [Heading("Propagation setting, chosen without labels", level=3), Paragraph(text + "."), grid]
    return blocks


def _selection_grid(scores: dict[str, Any]) -> Table | None:
    """``{"alpha=0.1,hops=2": score}`` as an α x hops table; None when the keys are not of that form."""
    cells: dict[tuple[float, int], Any] = {}
    for key, score in scores.items():
        match = re.fullmatch(r"alpha=([0-9.eE+-]+),hops=(\d+)", key)
        if match is None:
            return None
        cells[(float(match.group(1)), int(match.group(2)))] = score
    hops = sorted({h for _, h in cells if h > 0})
    alphas = sorted({a for a, h in cells if h > 0})
    if not hops or not alphas:
        return None
    rows = [[fmt_number(a), *(fmt_number(cells[(a, h)]) if (a, h) in cells else "" for h in hops)] for a in alphas]
    return Table(["α", *(f"{h} hop{'s' if h > 1 else ''}" for h in hops)], rows)


CAPTIONS = {
    "training_curves": "Training curves: pretraining loss and online kNN accuracy per epoch, and what the refinement "
                       "logged per epoch",
    "augmented_views": "Training images and the augmented views pretraining made of them in its first epoch",
    DEGREE_FIGURE: "In-degree of the training and test nodes in each graph",
}
EMBEDDING_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}


def figure_caption(path: Path, *, num_train: int | None = None) -> str:
    """A caption a reader understands, from the figure's file name."""
    stem = path.stem
    if stem in CAPTIONS:
        return CAPTIONS[stem]
    match = re.fullmatch(r"two_hop_(.+)_(\d+)", stem)
    if match:
        node = int(match.group(2))
        kind = "node" if num_train is None else ("training node" if node < num_train else "test node")
        return f"Two-hop neighbourhood of {kind} {node} in the {match.group(1)} graph"
    match = re.fullmatch(r"embedding_(.+)", stem)
    if match:
        method = EMBEDDING_METHODS.get(match.group(1), match.group(1))
        return f"{method} of the held-out nodes' features, raw (left) and refined (right), coloured by class"
    return stem.replace("_", " ").capitalize()


def _figure_order(path: Path) -> tuple[int, str, str]:
    stem = path.stem
    match = re.fullmatch(r"two_hop_(.+)_(\d+)", stem)
    if match:  # each centre's graphs side by side, teacher first
        return 2, f"{int(match.group(2)):012d}", "0" if match.group(1) == "teacher" else match.group(1)
    ranks = {"training_curves": 0, "augmented_views": 3}
    return (1 if stem.startswith("embedding_") else ranks.get(stem, 4)), stem, ""


def _num_train(metrics: dict[str, Any]) -> int | None:
    value = leaf(metrics, "nodes", "splits", "train")
    if value is None:
        value = next((s.get("train_nodes") for s in graph_streams(metrics).values()), None)
    return int(value) if _is_number(value) else None


def figure_blocks(figures: list[Path], metrics: dict[str, Any]) -> list[Block]:
    shown = sorted((p for p in figures if p.stem != DEGREE_FIGURE), key=_figure_order)
    if not shown:
        return []
    num_train = _num_train(metrics)
    return [Heading("Figures"), *(FigureBlock(path, figure_caption(path, num_train=num_train),
                                              half=path.stem.startswith("two_hop_")) for path in shown)]


def _config_value(value: Any) -> str:
    return "null" if value is None else fmt_number(value)


def config_blocks(config: dict[str, Any] | None) -> list[Block]:
    if config is None:
        return [Heading("Configuration"), Paragraph("No saved configuration in the run directory.")]
    values = dict(flatten(config))
    rows = [[key, _config_value(values[key])] for key in CONFIG_SUMMARY_KEYS if key in values]
    return [Heading("Configuration"),
            Paragraph("Main settings; the run's saved configuration holds every value and reproduces the run."),
            Table(["key", "value"], rows)]


def _stage_rank(name: str) -> int:
    return STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER)


def timing_blocks(inputs: ReportInputs) -> list[Block]:
    stages = sorted(inputs.stage_seconds.items(), key=lambda item: _stage_rank(item[0]))
    rows: list[list[str]] = [[f"stage {name}", fmt_seconds(seconds)] for name, seconds in stages]
    pretrain = [r for r in inputs.pretrain_log if r.get("epoch", -1) >= 0]
    if pretrain:
        seconds = sum(r.get("epoch_seconds", 0.0) for r in pretrain)
        rows.append(["pretraining epochs logged", str(len(pretrain))])
        rows.append(["pretraining time (sum of epochs)",
                     f"{fmt_seconds(seconds)} ({fmt_seconds(seconds / len(pretrain))}/epoch)"])
        speeds = [r["images_per_sec"] for r in pretrain if "images_per_sec" in r]
        if speeds:
            rows.append(["pretraining throughput (mean)", f"{sum(speeds) / len(speeds):.1f} images/s"])
        rows.append(["final pretraining loss", fmt_number(pretrain[-1].get("loss"))])
    knn = [r for r in inputs.pretrain_log if "knn_top1" in r]
    if knn:
        rows.append(["online kNN top-1 (%): first / last",
                     f"{fmt_accuracy(knn[0]['knn_top1'])} / {fmt_accuracy(knn[-1]['knn_top1'])}"])
    refine = inputs.refine_log
    if refine:
        seconds = sum(r.get("seconds", 0.0) for r in refine)
        trained = [r for r in refine if "loss" in r]
        if trained:
            rows.append(["refinement epochs logged", str(len(trained))])
        elif "alpha" in refine[-1]:
            setting = f"α = {fmt_number(refine[-1]['alpha'])}, {_hops(refine[-1].get('hops'))}"
            rows.append(["refinement", f"parameter-free propagation, {setting}"])
        rows.append(["refinement time", fmt_seconds(seconds)])
        if trained:
            rows.append(["final refinement loss", fmt_number(trained[-1].get("loss"))])
        for key, label in (("mean_cosine", "final mean pairwise cosine"), ("effective_rank", "final effective rank")):
            if key in refine[-1]:
                rows.append([label, fmt_number(refine[-1][key])])
    if not rows:
        return [Heading("Timings"), Paragraph("No training logs or stage timings found.")]
    return [Heading("Timings"), Table(["item", "value"], rows)]


GRAPH_KEY_WORDS = {
    "train_nodes": "training nodes", "test_nodes": "test nodes", "self_loops": "self-loops",
    "in_degree_train": "in-degree of training nodes", "in_degree_test": "in-degree of test nodes",
    "train_to_train": "edges training -> training", "train_to_test": "edges training -> test",
    "from_test": "edges from test nodes", "same_class": "same-class", "same_class_share": "same-class share",
    "largest_component": "largest component (nodes)",
}


def _graph_label(key: str) -> str:
    """``train_to_train.same_class_share`` -> ``edges training -> training: same-class share``."""
    return ": ".join(GRAPH_KEY_WORDS.get(part, part.replace("_", " ")) for part in key.split("."))


def _graph_cell(key: str, value: Any) -> str:
    if key.endswith("share"):
        return fmt_share(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return fmt_number(value)


def graph_blocks(metrics: dict[str, Any], figures: list[Path]) -> list[Block]:
    """Counts, degrees (as bar charts when the figure exists) and same-class shares of each graph."""
    streams = graph_streams(metrics)
    if not streams:
        return []
    flat = {stream: dict(flatten(stats)) for stream, stats in streams.items()}
    keys = list(dict.fromkeys(key for values in flat.values() for key in values if not key.endswith("histogram")))
    rows = [[_graph_label(key), *(_graph_cell(key, flat[s][key]) if key in flat[s] else "" for s in streams)]
            for key in keys]
    blocks: list[Block] = [
        Heading("Graph statistics"),
        Paragraph("Edges run from a neighbour (source) to the node that aggregates it (target); a same-class "
                  "share is the share of such edges that join two nodes of the same class."),
        Table(["statistic", *streams], rows)]
    degrees = [p for p in figures if p.stem == DEGREE_FIGURE]
    if degrees:
        blocks.append(FigureBlock(degrees[0], CAPTIONS[DEGREE_FIGURE]))
    return blocks


def report_blocks(inputs: ReportInputs) -> list[Block]:
    """Everything the report says, in order: the answer, the backbones, pictures, then how the run was made."""
    metrics: dict[str, Any] = inputs.metrics or {}
    blocks: list[Block] = [Heading(f"sslgraph run: {inputs.title}", level=1)]
    blocks += headline_blocks(inputs)
    if metrics:
        blocks.append(Paragraph(f"Data set: {leaf(metrics, 'dataset', 'name') or 'unknown'}; "
                                f"backbone: {metrics.get('backbone', '?')}; seed: {metrics.get('seed', '?')}."))
        blocks += backbone_blocks(metrics) + node_detail_blocks(metrics, parameter_free=_parameter_free(inputs))
    blocks += figure_blocks(inputs.figures, metrics)
    blocks += config_blocks(inputs.config) + timing_blocks(inputs)
    if metrics:
        blocks += graph_blocks(metrics, inputs.figures)
        blocks += [Heading("All metrics"),
                   Paragraph("Every measured value, with its key (floats to 4 significant digits)."),
                   Table(["key", "value"], [[key, _config_value(value)] for key, value in flatten(metrics)])]
    return blocks


# ---------------------------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Paragraph):
            out.append(f"**{block.text}**\n" if block.emphasis else f"{block.text}\n")
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


def _html_cell(text: str) -> str:
    """Short cells (numbers like "51.26 ± 0.17") never wrap; a narrow page scrolls the table instead."""
    return f'<td class="short">{html.escape(text)}</td>' if len(text) <= 16 else f"<td>{html.escape(text)}</td>"


def render_html(blocks: list[Block], base_dir: Path) -> str:
    """A standalone page: figures (paths relative to ``base_dir``) are embedded as base64 data URIs."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_html_text(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f'<p class="verdict"><strong>{_html_text(block.text)}</strong></p>' if block.emphasis
                        else f"<p>{_html_text(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows)
            body.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
                        f"</table></div>")
        else:
            data = base64.b64encode((Path(base_dir) / block.path).read_bytes()).decode("ascii")
            css_class = ' class="half"' if block.half else ""
            alt = html.escape(block.caption)
            body.append(f'<figure{css_class}><img src="data:image/png;base64,{data}" alt="{alt}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    title = blocks[0].text if blocks and isinstance(blocks[0], Heading) else "sslgraph report"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
