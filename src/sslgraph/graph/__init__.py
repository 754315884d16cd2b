"""Memory banks, AdaSim bootstrapping, the per-stream kNN graphs built during pretraining, and their files."""

from sslgraph.graph.bank import MemoryBank, topk_cosine
from sslgraph.graph.bootstrap import sample_partners, vote
from sslgraph.graph.export import (build_graph_data, load_graph, load_graph_pair, load_refined, rebuild_edges,
                                   save_graph, save_refined)
from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self
from sslgraph.graph.schema import check_graph, check_graph_pair, check_refined

__all__ = [
    "KNNGraph",
    "MemoryBank",
    "build_graph_data",
    "check_graph",
    "check_graph_pair",
    "check_refined",
    "load_graph",
    "load_graph_pair",
    "load_refined",
    "nearest_non_self",
    "rebuild_edges",
    "sample_partners",
    "save_graph",
    "save_refined",
    "topk_cosine",
    "vote",
]
