"""2-D maps of node embeddings before and after graph refinement, side by side.

Both panels show the same sampled nodes with the same colours, so any change in how the classes separate is
due to the refinement alone. Rows are L2-normalised first because every evaluation compares them by cosine.
Figures are built as bare ``Figure`` objects (rendered by Agg when saved), so plotting never switches the
caller's pyplot backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from sslgraph.utils.io import atomic_save_figure

DPI = 120
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}
# Above this many classes a legend would cover the plot; colours alone remain.
MAX_LEGEND_CLASSES = 20


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def class_colours(num_classes: int) -> np.ndarray:
    """One RGBA colour per class: qualitative palettes when they suffice, else a continuous map."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= 20:
        return colormaps["tab20"](np.arange(num_classes))
    return colormaps["turbo"](np.linspace(0.0, 1.0, num_classes))


def sample_indices(num: int, max_points: int, *, seed: int) -> Tensor:
    """At most ``max_points`` row indices, drawn uniformly without replacement, in ascending order."""
    if num <= max_points:
        return torch.arange(num)
    return torch.randperm(num, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def project_2d(features: Tensor, *, method: str, seed: int) -> np.ndarray:
    """t-SNE (PCA init, perplexity 30, lowered for tiny inputs) or UMAP (cosine, 15 neighbours) to two dimensions."""
    x = F.normalize(features.detach().float().cpu(), dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (x.shape[0] - 1) / 3)
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    if method == "umap":
        if not umap_available():
            raise RuntimeError("method='umap' needs umap-learn (pip install 'sslgraph[umap]'); use method='tsne'")
        import umap

        # A fixed random_state makes UMAP single-threaded anyway; saying so avoids its warning.
        return umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), metric="cosine", random_state=seed,
                         n_jobs=1).fit_transform(x)
    raise ValueError(f"method: must be 'tsne' or 'umap', got {method!r}")


def plot_embeddings_before_after(
    raw: Tensor,
    refined: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    path: str | Path,
    *,
    method: str = "tsne",
    seed: int = 0,
    max_points: int = 2000,
) -> Path:
    """Scatter the same (sampled) nodes embedded raw and refined; returns the PNG path."""
    if not raw.shape[0] == refined.shape[0] == labels.shape[0]:
        raise ValueError(
            f"plot_embeddings_before_after: raw, refined and labels need the same number of rows, got "
            f"{raw.shape[0]}, {refined.shape[0]}, {labels.shape[0]}"
        )
    if raw.shape[0] < 5:
        raise ValueError(f"plot_embeddings_before_after: need at least 5 points, got {raw.shape[0]}")
    keep = sample_indices(raw.shape[0], max_points, seed=seed)
    y = labels.cpu()[keep].numpy()
    num_classes = max(len(class_names), int(y.max()) + 1)
    colours = class_colours(num_classes)
    names = list(class_names) + [str(c) for c in range(len(class_names), num_classes)]

    fig = Figure(figsize=(13, 6.2))
    axes = fig.subplots(1, 2)
    for ax, feats, title in ((axes[0], raw, "before refinement (raw)"), (axes[1], refined, "after refinement")):
        points = project_2d(feats.cpu()[keep], method=method, seed=seed)
        ax.scatter(points[:, 0], points[:, 1], c=colours[y], s=8, linewidths=0)
        ax.set_title(f"{title}: {METHOD_NAMES.get(method, method)}, {len(keep)} nodes")
        ax.set_xticks([])
        ax.set_yticks([])
    if num_classes <= MAX_LEGEND_CLASSES:
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], label=names[c])
                   for c in np.unique(y)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=DPI)
