"""The ablation's bar chart: kNN top-1 and linear-probe accuracy of each row's features, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from sslgraph.utils.io import atomic_save_figure

DPI = 120


def plot_ablation(rows: Sequence[str], series: dict[str, Sequence[float | None]], path: str | Path, *,
                  title: str) -> Path:
    """Grouped bars: one group per row, one bar per series (a missing value draws no bar), values printed."""
    fig = Figure(figsize=(1.9 * len(rows) + 2.0, 4.0))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for number, (name, values) in enumerate(series.items()):
        xs = [i + (number - (len(series) - 1) / 2) * width for i in range(len(rows))]
        shown = [(x, v) for x, v in zip(xs, values) if v is not None]
        bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width=width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(rows)), list(rows), fontsize=9)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=DPI)
