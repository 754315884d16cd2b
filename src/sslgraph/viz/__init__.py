"""Pictures of a run: training curves, embeddings before/after refinement, two-hop neighbourhoods.

Every figure is a PNG under ``RUN/figures/``; :func:`visualize_run` makes all of those whose inputs exist.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch_geometric.data import Data

from sslgraph.config import Config, ConfigError
from sslgraph.data import build_dataset
from sslgraph.graph.export import load_graph
from sslgraph.utils import dist
from sslgraph.utils.io import read_jsonl, safe_load
from sslgraph.viz.curves import plot_training_curves
from sslgraph.viz.embedding import plot_embeddings_before_after, umap_available
from sslgraph.viz.neighbourhood import plot_two_hop

__all__ = ["plot_embeddings_before_after", "plot_training_curves", "plot_two_hop", "visualize_run"]

FIGURES_DIR = "figures"
STREAMS = ("teacher", "student")


def _embedding_figures(run_dir: Path, graphs: dict[str, Data], class_names: list[str], cfg: Config) -> list[Path]:
    refined_path = run_dir / "refined.pt"
    if not refined_path.is_file():
        return []
    refined = safe_load(refined_path)
    test_mask = graphs["teacher"].test_mask.bool()
    raw = torch.cat([graphs["teacher"].x, graphs["student"].x], dim=1)[test_mask]
    methods = ["tsne"]
    if cfg.viz.umap and umap_available():
        methods.append("umap")
    elif cfg.viz.umap:
        warnings.warn("viz.umap is true but umap-learn is not installed; only the t-SNE figure is made", stacklevel=2)
    return [
        plot_embeddings_before_after(raw, refined["embeddings"][test_mask], graphs["teacher"].y[test_mask],
                                     class_names, run_dir / FIGURES_DIR / f"embedding_{method}.png",
                                     method=method, seed=cfg.seed, max_points=cfg.viz.embed_samples)
        for method in methods
    ]


def _centres(data: Data, cfg: Config) -> list[int]:
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


def visualize_run(run_dir: str | Path, cfg: Config, *, device: torch.device | None = None) -> list[Path]:
    """Make every figure whose inputs the run holds; returns the written paths (empty on non-main processes).

    ``device`` is accepted for the same call shape as the other stages; the figures are computed on the CPU.
    """
    run_dir = Path(run_dir)
    figures = run_dir / FIGURES_DIR
    made: list[Path] = []
    if not dist.is_main():
        return made
    log, refine_log = read_jsonl(run_dir / "log.jsonl"), read_jsonl(run_dir / "refine_log.jsonl")
    if any("loss" in r or "knn_top1" in r for r in log + refine_log):
        made.append(plot_training_curves(log, figures / "training_curves.png", refine_records=refine_log))

    paths = {stream: run_dir / "graphs" / f"{stream}.pt" for stream in STREAMS}
    if not all(p.is_file() for p in paths.values()):
        return made
    graphs = {stream: load_graph(p) for stream, p in paths.items()}
    centres = _centres(graphs["teacher"], cfg)
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    class_names = list(train_set.classes)
    made.extend(_embedding_figures(run_dir, graphs, class_names, cfg))

    num_train = int(graphs["teacher"].train_mask.sum().item())

    def image(node: int) -> torch.Tensor:
        return train_set.load(node) if node < num_train else test_set.load(node - num_train)

    for centre in centres:
        for stream, graph in graphs.items():
            made.append(plot_two_hop(
                graph, centre, image, class_names, figures / f"two_hop_{stream}_{centre}.png",
                title=f"{stream} graph: two-hop neighbourhood of node {centre}",
                hop1_max=cfg.viz.hop1_max, hop2_max=cfg.viz.hop2_max))
    return made
