"""Figures stage: every picture whose inputs the run holds, under ``figures/``.

Training curves need a log; embeddings before/after need the graphs and ``refined.pt``; two-hop
neighbourhoods need the graphs and the images (the run's data set).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.data import BatchAugment, ImageDataset, build_dataset, view_recipes
from sslgraph.errors import ConfigError
from sslgraph.run.rundir import RunDir
from sslgraph.utils import dist
from sslgraph.viz import plot_embeddings_before_after, plot_training_curves, plot_two_hop, plot_views, umap_available
from sslgraph.viz.views import sample_indices


def embedding_figures(run: RunDir, graphs: dict[str, Data], class_names: list[str], cfg: Config) -> list[Path]:
    if not run.refined.is_file():
        return []
    refined = run.read_refined(graphs["teacher"])
    test_mask = graphs["teacher"].test_mask.bool()
    raw = torch.cat([graphs["teacher"].x, graphs["student"].x], dim=1)[test_mask]
    methods = ["tsne"]
    if cfg.viz.umap and umap_available():
        methods.append("umap")
    elif cfg.viz.umap:
        warnings.warn("viz.umap is true but umap-learn is not installed; only the t-SNE figure is made", stacklevel=2)
    return [
        plot_embeddings_before_after(raw, refined["embeddings"][test_mask], graphs["teacher"].y[test_mask],
                                     class_names, run.figure(f"embedding_{method}"),
                                     method=method, seed=cfg.seed, max_points=cfg.viz.embed_samples)
        for method in methods
    ]


def views_figure(run: RunDir, train_set: ImageDataset, cfg: Config, *, count: int = 10) -> Path:
    """Ten training images and the views the loop makes of them in epoch 0 (same recipe, seed and size)."""
    indices = sample_indices(len(train_set), min(count, len(train_set)), seed=cfg.seed)
    size = cfg.data.image_size
    def resized(index: int) -> torch.Tensor:
        image = train_set.load(index).unsqueeze(0).float()
        image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
        return image.round().clamp(0, 255)[0].to(torch.uint8)

    images = torch.stack([resized(int(i)) for i in indices])
    augment = BatchAugment(view_recipes(cfg.aug, image_size=size), mean=cfg.data.mean, std=cfg.data.std,
                           seed=cfg.seed)
    return plot_views(images, indices, augment, run.figure("augmented_views"))


def centres(data: Data, cfg: Config) -> list[int]:
    """The configured centres, or ``viz.num_centres`` held-out nodes drawn with the run's seed."""
    num_nodes = int(data.num_nodes)
    if cfg.viz.centres:
        bad = [c for c in cfg.viz.centres if not 0 <= c < num_nodes]
        if bad:
            raise ConfigError(f"viz.centres: {bad} are not node ids of the exported graphs (0..{num_nodes - 1})")
        return list(cfg.viz.centres)
    pool = data.test_mask.nonzero().flatten()
    if pool.numel() == 0:
        pool = torch.arange(num_nodes)
    picks = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.viz.num_centres]
    return pool[picks].tolist()


def visualize_run(run: RunDir, cfg: Config) -> list[Path]:
    """Make every figure whose inputs the run holds; returns the written paths (empty on non-main processes)."""
    made: list[Path] = []
    if not dist.is_main():
        return made
    log, refine_log = run.read_log(), run.read_refine_log()
    if any("loss" in r or "knn_top1" in r for r in log + refine_log):
        made.append(plot_training_curves(log, run.figure("training_curves"), refine_records=refine_log))

    train_set = None
    if log:  # the views the pretraining saw
        train_set = build_dataset(cfg.data, "train")
        made.append(views_figure(run, train_set, cfg))
    if not run.has_graphs():
        return made
    graphs = run.read_graphs()
    chosen = centres(graphs["teacher"], cfg)
    train_set = train_set if train_set is not None else build_dataset(cfg.data, "train")
    test_set = build_dataset(cfg.data, "test")
    class_names = list(train_set.classes)
    made.extend(embedding_figures(run, graphs, class_names, cfg))

    num_train = int(graphs["teacher"].train_mask.sum().item())

    def image(node: int) -> torch.Tensor:
        return train_set.load(node) if node < num_train else test_set.load(node - num_train)

    for centre in chosen:
        for stream, graph in graphs.items():
            made.append(plot_two_hop(
                graph, centre, image, class_names, run.figure(f"two_hop_{stream}_{centre}"),
                title=f"{stream} graph: two-hop neighbourhood of node {centre}",
                hop1_max=cfg.viz.hop1_max, hop2_max=cfg.viz.hop2_max))
    return made
