"""In-degree histograms of the exported graphs as small bar charts, so a reader sees the degree spread at a
glance instead of reading a list of counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from sslgraph.utils.io import atomic_save_figure

DPI = 110
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def plot_degree_histograms(histograms: Mapping[str, Mapping[str, Sequence[int]]], path: str | Path) -> Path:
    """One panel per node group, one bar series per graph: ``histograms[group][graph][d]`` is the number of
    nodes of ``group`` (e.g. "training nodes") with in-degree ``d`` in ``graph`` (e.g. "teacher").

    The count axis is logarithmic when the counts span more than two decades, since a kNN graph puts almost
    every node at the full degree and the few short ones would otherwise be invisible.
    """
    panels = [(group, {name: list(counts) for name, counts in series.items() if sum(counts) > 0})
              for group, series in histograms.items()]
    panels = [(group, series) for group, series in panels if series]
    if not panels:
        raise ValueError("plot_degree_histograms: no histogram has any node")
    fig = Figure(figsize=(4.2 * len(panels), 2.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (group, series) in zip(axes, panels):
        nonzero = [d for counts in series.values() for d, c in enumerate(counts) if c > 0]
        low, high = min(nonzero), max(nonzero)
        width = 0.8 / len(series)
        for i, (name, counts) in enumerate(series.items()):
            degrees = list(range(low, high + 1))
            values = [counts[d] if d < len(counts) else 0 for d in degrees]
            offsets = [d + (i - (len(series) - 1) / 2) * width for d in degrees]
            ax.bar(offsets, values, width=width, label=name, color=COLOURS[i % len(COLOURS)])
        counts_seen = [c for counts in series.values() for c in counts if c > 0]
        if max(counts_seen) / min(counts_seen) > 100:
            ax.set_yscale("log")
            ax.set_ylim(top=max(counts_seen) * 20)  # room for the legend above the tallest bar
        else:
            ax.set_ylim(top=max(counts_seen) * 1.3)
        if high - low < 4:  # a kNN graph's test nodes all have one degree: keep the bars slim
            ax.set_xlim(low - 2, high + 2)
        ax.set_title(f"in-degree of {group}", fontsize=10)
        ax.set_xlabel("in-degree")
        ax.set_ylabel("nodes")
        if high - low <= 20:
            ax.set_xticks(range(low, high + 1))
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=DPI)
