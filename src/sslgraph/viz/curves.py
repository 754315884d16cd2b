"""Training curves from the JSON-lines logs: pretraining loss, online kNN accuracy, refinement loss."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sslgraph.utils.io import atomic_save_figure

DPI = 120


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(epochs, values)`` of the records that carry a number under ``key``, in epoch order."""
    points = sorted((r["epoch"], r[key]) for r in records
                    if isinstance(r.get(key), (int, float)) and isinstance(r.get("epoch"), (int, float)))
    return [p[0] for p in points], [p[1] for p in points]


def _panel(ax: Axes, epochs: list[float], values: list[float], *, title: str, ylabel: str, colour: str) -> None:
    ax.plot(epochs, values, marker="o" if len(values) < 40 else None, markersize=3, color=colour)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_training_curves(
    log_records: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    refine_records: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Loss and kNN top-1 per pretraining epoch (epoch -1: at initialisation), and the refinement loss if given."""
    panels: list[tuple[list[float], list[float], str, str, str]] = []
    epochs, loss = _series(log_records, "loss")
    if loss:
        panels.append((epochs, loss, "pretraining loss", "DINO loss", "tab:blue"))
    epochs, knn = _series(log_records, "knn_top1")
    if knn:
        panels.append((epochs, knn, "online kNN top-1 (teacher; epoch -1 = init)", "accuracy (%)", "tab:green"))
    epochs, refine = _series(refine_records or [], "loss")
    if refine:
        panels.append((epochs, refine, "refinement loss (graph BYOL)", "loss", "tab:purple"))
    epochs, cosine = _series(refine_records or [], "mean_cosine")
    if cosine:
        panels.append((epochs, cosine, "refinement: mean pairwise cosine (collapse -> 1)", "cosine", "tab:red"))
    epochs, rank = _series(refine_records or [], "effective_rank")
    if rank:
        panels.append((epochs, rank, "refinement: effective rank", "rank", "tab:orange"))
    if not panels:
        raise ValueError("plot_training_curves: no record has a numeric 'loss' or 'knn_top1' with an 'epoch'")

    fig = Figure(figsize=(5.0 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, values, title, ylabel, colour) in zip(axes, panels):
        _panel(ax, x, values, title=title, ylabel=ylabel, colour=colour)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=DPI)
