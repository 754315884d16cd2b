"""Memory banks, AdaSim bootstrapping and the per-stream kNN graphs built during pretraining."""

from sslgraph.graph.bank import MemoryBank, topk_cosine
from sslgraph.graph.bootstrap import sample_partners, vote
from sslgraph.graph.export import build_graph_data, load_graph, rebuild_edges, save_graph
from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self

__all__ = [
    "KNNGraph",
    "MemoryBank",
    "build_graph_data",
    "load_graph",
    "nearest_non_self",
    "rebuild_edges",
    "sample_partners",
    "save_graph",
    "topk_cosine",
    "vote",
]
