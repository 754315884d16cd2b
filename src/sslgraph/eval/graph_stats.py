"""Descriptive statistics of an exported kNN graph.

The share of edges that join two nodes of the same class says how much a GNN can gain from aggregating
neighbours before any training; degrees and connected components say whether messages can reach every node.
Edges follow the export convention: ``source j -> target i`` means ``j`` is one of ``i``'s neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.choices import EdgeVariant, options
from sslgraph.graph.edges import edge_variant


def _degree_summary(degree: Tensor) -> dict[str, Any]:
    if degree.numel() == 0:
        return {"min": 0, "mean": 0.0, "max": 0, "histogram": []}
    return {
        "min": int(degree.min().item()),
        "mean": float(degree.float().mean().item()),
        "max": int(degree.max().item()),
        # histogram[d] = number of nodes with in-degree d
        "histogram": torch.bincount(degree).tolist(),
    }


def _same_class(y: Tensor, source: Tensor, target: Tensor, selected: Tensor) -> dict[str, Any]:
    count = int(selected.sum().item())
    same = int((y[source[selected]] == y[target[selected]]).sum().item())
    return {"edges": count, "same_class": same, "same_class_share": same / count if count else float("nan")}


def graph_statistics(data: Data) -> dict[str, Any]:
    """Node/edge counts, in-degree per split, same-class edge shares and connected components."""
    for key in ("edge_index", "y", "train_mask", "test_mask"):
        if getattr(data, key, None) is None:
            raise ValueError(f"graph_statistics: the graph has no {key!r} attribute")
    num_nodes = int(data.num_nodes)
    edge_index = data.edge_index.cpu().long()
    source, target = edge_index[0], edge_index[1]
    y = data.y.cpu()
    train_mask, test_mask = data.train_mask.cpu().bool(), data.test_mask.cpu().bool()

    in_degree = torch.bincount(target, minlength=num_nodes)
    src_train, dst_train = train_mask[source], train_mask[target]

    adjacency = sp.coo_matrix(
        (np.ones(source.numel(), dtype=np.int8), (source.numpy(), target.numpy())), shape=(num_nodes, num_nodes)
    )
    num_components, component = connected_components(adjacency, directed=False)
    sizes = np.bincount(component) if num_nodes else np.zeros(1, dtype=np.int64)
    return {
        "nodes": num_nodes,
        "train_nodes": int(train_mask.sum().item()),
        "test_nodes": int(test_mask.sum().item()),
        "edges": int(source.numel()),
        "self_loops": int((source == target).sum().item()),
        "in_degree_train": _degree_summary(in_degree[train_mask]),
        "in_degree_test": _degree_summary(in_degree[test_mask]),
        "train_to_train": _same_class(y, source, target, src_train & dst_train),
        "train_to_test": _same_class(y, source, target, src_train & test_mask[target]),
        "from_test": int(test_mask[source].sum().item()),
        "components": int(num_components),
        "largest_component": int(sizes.max()),
    }


def edge_variant_purity(teacher: Data, student: Data) -> dict[str, dict[str, dict[str, Any]]]:
    """Same-class share of the training edges of every label-free edge variant (``refine.edges``), per stream:
    ``{variant: {stream: {"edges", "same_class", "same_class_share"}}}``. Labels are read here only."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in options(EdgeVariant):
        pair = edge_variant(teacher, student, variant)
        out[variant] = {}
        for stream, graph in zip(("teacher", "student"), pair):
            source, target = graph.edge_index.cpu().long()
            train_mask = graph.train_mask.cpu().bool()
            out[variant][stream] = _same_class(graph.y.cpu(), source, target, train_mask[source] & train_mask[target])
    return out
