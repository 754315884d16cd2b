"""A node's two-hop neighbourhood in a kNN graph, drawn with the images themselves.

The centre sits in the middle, the nodes it aggregates from (hop 1: sources of edges into it) on an inner
ring, and the nodes those aggregate from (hop 2) on an outer ring next to their hop-1 node. Borders show
whether a neighbour shares the centre's class, which is what makes neighbour aggregation useful.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.utils.io import atomic_save_figure

DPI = 120
THUMB_HALF = 0.28  # half side of a thumbnail, in layout units (hop rings at radius 1 and 2)
CAPTION_HEIGHT = 0.16  # the two caption lines below a thumbnail, in layout units
SAME_CLASS, OTHER_CLASS, CENTRE = "#1a9641", "#d7191c", "black"


def in_neighbours(data: Data, node: int, *, limit: int, exclude: set[int]) -> list[tuple[int, float]]:
    """Up to ``limit`` sources of edges into ``node`` as ``(source, weight)``, heaviest first.

    Repeated edges are merged and their weights summed (the weight is 1 per edge when the graph has none);
    ties go to the lower node id. Nodes in ``exclude`` are left out.
    """
    target_edges = data.edge_index[1] == node
    sources = data.edge_index[0][target_edges].cpu()
    weights = data.edge_weight[target_edges].cpu().float() if getattr(data, "edge_weight", None) is not None \
        else torch.ones(sources.shape[0])
    unique, inverse = torch.unique(sources, return_inverse=True)
    totals = torch.zeros(unique.shape[0]).scatter_add_(0, inverse, weights)
    order = torch.sort(-totals, stable=True).indices
    picked: list[tuple[int, float]] = []
    for idx in order.tolist():
        source = int(unique[idx])
        if source != node and source not in exclude:
            picked.append((source, float(totals[idx])))
        if len(picked) == limit:
            break
    return picked


def _layout(centre: int, hop1: list[tuple[int, float]], hop2: list[list[tuple[int, float]]]
            ) -> tuple[dict[int, tuple[float, float]], list[tuple[int, int, float]]]:
    """Positions of every drawn node and the drawn edges ``(source, target, weight)``."""
    positions = {centre: (0.0, 0.0)}
    edges: list[tuple[int, int, float]] = []
    sector = 2 * math.pi / max(len(hop1), 1)
    for i, (parent, weight) in enumerate(hop1):
        angle = math.pi / 2 - i * sector
        positions[parent] = (math.cos(angle), math.sin(angle))
        edges.append((parent, centre, weight))
        children = hop2[i]
        spread = min(sector * 0.65, math.pi / 2)
        for j, (child, child_weight) in enumerate(children):
            offset = 0.0 if len(children) == 1 else spread * (j / (len(children) - 1) - 0.5)
            positions[child] = (2.0 * math.cos(angle + offset), 2.0 * math.sin(angle + offset))
            edges.append((child, parent, child_weight))
    return positions, edges


def _exit_distance(ux: float, uy: float) -> float:
    """Distance from a node's position along the unit direction ``(ux, uy)`` to the edge of its thumbnail
    plus caption (the caption hangs below the thumbnail), with a small margin."""
    bounds = [THUMB_HALF / abs(ux)] if ux else []
    if uy:
        bounds.append((THUMB_HALF if uy > 0 else THUMB_HALF + CAPTION_HEIGHT) / abs(uy))
    return 1.08 * min(bounds)


def _shortened(a: tuple[float, float], b: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The segment a -> b with both ends pulled back so it touches neither thumbnail nor caption."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    start, end = _exit_distance(ux, uy), _exit_distance(-ux, -uy)
    return (a[0] + ux * start, a[1] + uy * start), (b[0] - ux * end, b[1] - uy * end)


def plot_two_hop(
    data: Data,
    centre: int,
    image_fn: Callable[[int], Tensor],
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    hop1_max: int = 5,
    hop2_max: int = 3,
) -> Path:
    """Draw ``centre``'s two-hop in-neighbourhood with thumbnails from ``image_fn(node) -> uint8 [3, H, W]``.

    Each node is drawn once: a hop-2 node already shown (the centre, a hop-1 node, or a hop-2 node of an
    earlier hop-1 node) is not repeated. Arrows point along the message flow (neighbour -> node); the number
    on an arrow is the edge weight (e.g. how many visits produced the edge).
    """
    num_nodes = int(data.num_nodes)
    if not 0 <= centre < num_nodes:
        raise ValueError(f"plot_two_hop: centre {centre} is not a node of this graph (0..{num_nodes - 1})")
    num_train = int(data.train_mask.sum().item())
    y = data.y.cpu()
    hop1 = in_neighbours(data, centre, limit=hop1_max, exclude=set())
    shown = {centre, *(n for n, _ in hop1)}
    hop2: list[list[tuple[int, float]]] = []
    for parent, _ in hop1:
        children = in_neighbours(data, parent, limit=hop2_max, exclude=shown)
        shown.update(n for n, _ in children)
        hop2.append(children)
    positions, edges = _layout(centre, hop1, hop2)

    fig = Figure(figsize=(10, 10.6))
    ax = fig.add_axes((0.02, 0.06, 0.96, 0.88))
    for source, target, weight in edges:
        start, end = _shortened(positions[source], positions[target])
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="0.45", lw=1.2,
                                     zorder=1))
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, f"{weight:g}", fontsize=7, color="0.3",
                ha="center", va="center", zorder=2, bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
    centre_class = int(y[centre])
    for node, (x, yy) in positions.items():
        image = image_fn(node)
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"plot_two_hop: image_fn({node}) must return a [3, H, W] tensor, got "
                             f"{tuple(image.shape)}")
        pixels = image.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy().astype(np.uint8)
        extent = (x - THUMB_HALF, x + THUMB_HALF, yy - THUMB_HALF, yy + THUMB_HALF)
        ax.imshow(pixels, extent=extent, zorder=3, interpolation="nearest")
        if node == centre:
            colour, width = CENTRE, 5.0
        else:
            colour, width = (SAME_CLASS if int(y[node]) == centre_class else OTHER_CLASS), 3.0
        ax.add_patch(Rectangle((x - THUMB_HALF, yy - THUMB_HALF), 2 * THUMB_HALF, 2 * THUMB_HALF, fill=False,
                               edgecolor=colour, linewidth=width, zorder=4))
        label = class_names[int(y[node])] if int(y[node]) < len(class_names) else str(int(y[node]))
        split = "train" if node < num_train else "test"
        ax.text(x, yy - THUMB_HALF - 0.04, f"{label}\n{split} #{node}", fontsize=7, ha="center", va="top",
                zorder=4)
    ax.set_xlim(-2.55, 2.55)
    ax.set_ylim(-2.6, 2.5)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.text(0.5, 0.02, "black: centre   green: same class as the centre   red: other class   "
             "arrows: neighbour -> node that aggregates it", ha="center", fontsize=9)
    return atomic_save_figure(fig, path, dpi=DPI)
