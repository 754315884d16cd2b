"""Export of one stream's kNN graphs as a ``torch_geometric.data.Data`` over training and held-out nodes.

Node numbering: training nodes ``0 .. N_train - 1``, then held-out node ``t`` is ``N_train + t``.

Edge convention: ``edge_index`` is PyG's ``[source, target]`` and messages flow from source to target. For
every node ``i`` and every neighbour ``j`` in ``i``'s FIFO there is one edge ``j -> i``, so ``i`` aggregates
from its own nearest neighbours. A held-out node's neighbours are training nodes, so held-out nodes receive
messages and never send any (the reference stored ``i -> j`` and its held-out nodes received nothing).
There are no self loops and no placeholder edges.

Edge weights: ``multiplicity`` is the number of FIFO slots (visits) in which ``j`` appeared among ``i``'s
neighbours (1 .. V); ``similarity`` is the mean cosine similarity over those slots.

Files hold a plain dict of tensors and integers, read back with ``torch.load(weights_only=True)``; the
refined-embedding file of the same nodes is written and read here too. Every load checks the one schema of
:mod:`sslgraph.graph.schema` and raises :class:`~sslgraph.errors.GraphFileError` naming the file and field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.choices import EdgeWeight, SearchPrecision
from sslgraph.errors import GraphFileError
from sslgraph.graph.bank import topk_cosine_search
from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self
from sslgraph.graph.schema import check_graph, check_graph_pair, check_refined
from sslgraph.utils.io import atomic_save, safe_load

__all__ = ["GraphFileError", "build_graph_data", "load_graph", "load_graph_pair", "load_refined", "rebuild_edges",
           "save_graph", "save_refined"]

FORMAT_VERSION = 1
_TENSOR_FIELDS = {
    "x": torch.float32,
    "edge_index": torch.long,
    "edge_weight": torch.float32,
    "y": torch.long,
    "train_mask": torch.bool,
    "test_mask": torch.bool,
}


def build_graph_data(*, train_x: Tensor, test_x: Tensor, train_graph: KNNGraph, test_graph: KNNGraph,
                     train_y: Tensor, test_y: Tensor, edge_weight: EdgeWeight = "multiplicity") -> Data:
    """One stream's graph: features, ``j -> i`` edges, weights, labels, masks and ``num_train``."""
    num_train, num_test = train_x.shape[0], test_x.shape[0]
    if train_graph.num_nodes != num_train or train_graph.neighbour_nodes is not None:
        raise ValueError(f"build_graph_data: train_graph must be a graph over the {num_train} training nodes, got "
                         f"{train_graph.num_nodes} nodes (neighbour_nodes={train_graph.neighbour_nodes})")
    if test_graph.num_nodes != num_test or test_graph.neighbour_nodes != num_train:
        raise ValueError(f"build_graph_data: test_graph must link the {num_test} held-out nodes to the {num_train} "
                         f"training nodes, got {test_graph.num_nodes} nodes -> {test_graph.neighbour_nodes}")
    if train_y.shape != (num_train,) or test_y.shape != (num_test,):
        raise ValueError(f"build_graph_data: labels must be [{num_train}] and [{num_test}], got "
                         f"{tuple(train_y.shape)} and {tuple(test_y.shape)}")
    device = train_x.device
    src_train, dst_train, w_train = (t.to(device) for t in train_graph.edges(weight=edge_weight))
    src_test, dst_test, w_test = (t.to(device) for t in test_graph.edges(weight=edge_weight))
    edge_index = torch.stack([torch.cat([src_train, src_test]), torch.cat([dst_train, dst_test + num_train])])
    num_nodes = num_train + num_test
    node = torch.arange(num_nodes, device=device)
    return Data(
        x=torch.cat([train_x, test_x.to(device)]).float(),
        edge_index=edge_index,
        edge_weight=torch.cat([w_train, w_test]).float(),
        y=torch.cat([train_y.to(device), test_y.to(device)]).long(),
        train_mask=node < num_train,
        test_mask=node >= num_train,
        num_train=num_train,
    )


def save_graph(data: Data, path: str | os.PathLike) -> Path:
    """Write ``data`` atomically as a plain dict (CPU tensors + ``num_train``) loadable with weights_only."""
    payload: dict[str, object] = {name: getattr(data, name).detach().cpu().to(dtype)
                                  for name, dtype in _TENSOR_FIELDS.items()}
    payload["num_train"] = int(data.num_train)
    payload["format_version"] = FORMAT_VERSION
    return atomic_save(payload, path)


def load_graph(path: str | os.PathLike) -> Data:
    """Read a file written by :func:`save_graph` and check its schema, naming the file and field at fault."""
    payload = safe_load(path)
    if not isinstance(payload, dict):
        raise GraphFileError(f"{path}: expected a dict of graph fields, found {type(payload).__name__}")
    for name in _TENSOR_FIELDS:
        if not isinstance(payload.get(name), Tensor):
            raise GraphFileError(f"{path}: field {name!r} is missing or not a tensor")
    if not isinstance(payload.get("num_train"), int):
        raise GraphFileError(f"{path}: field 'num_train' is missing or not an integer")
    data = Data(**{name: payload[name] for name in _TENSOR_FIELDS}, num_train=payload["num_train"])
    check_graph(data, where=str(path))
    return data


def load_graph_pair(teacher_path: str | os.PathLike, student_path: str | os.PathLike) -> tuple[Data, Data]:
    """The teacher and student graphs of one run, checked to describe the same nodes."""
    teacher, student = load_graph(teacher_path), load_graph(student_path)
    check_graph_pair(teacher, student, where=(str(teacher_path), str(student_path)))
    return teacher, student


def save_refined(path: str | os.PathLike, *, embeddings: Tensor, reference: Data, **extra: Any) -> Path:
    """Write refined ``embeddings`` of ``reference``'s nodes (with its labels and masks) and ``extra`` plain
    values (losses, GNN state, settings) atomically."""
    payload = {"embeddings": embeddings.detach().cpu().float(), "y": reference.y.cpu().clone(),
               "train_mask": reference.train_mask.cpu().clone(), "test_mask": reference.test_mask.cpu().clone(),
               "num_train": int(reference.train_mask.sum()), **extra}
    check_refined(payload, reference, where=str(path))
    return atomic_save(payload, path)


def load_refined(path: str | os.PathLike, reference: Data) -> dict[str, Any]:
    """The refined-embedding file, after checking it describes the same nodes as ``reference`` (a run's graph)."""
    payload = safe_load(path)
    check_refined(payload, reference, where=str(path))
    return payload


def rebuild_edges(x: Tensor, num_train: int, *, k_edges: int, chunk_size: int = 65_536,
                  search_precision: SearchPrecision = "fp32",
                  search_dim: int | None = None) -> tuple[KNNGraph, KNNGraph]:
    """Fresh single-visit graphs from features ``x`` (training rows first): each training node's ``k_edges``
    nearest other training nodes, each held-out node's ``k_edges`` nearest training nodes (cosine).
    ``search_precision`` and ``search_dim`` as for the memory banks
    (:func:`~sslgraph.graph.bank.topk_cosine_search`)."""
    if not 1 <= k_edges < num_train:
        raise ValueError(f"rebuild_edges: k_edges={k_edges} must be in [1, num_train={num_train})")
    x = F.normalize(x.float(), dim=1)
    train, test = x[:num_train], x[num_train:]
    train_graph = KNNGraph(num_train, edges_per_node=k_edges, visits=1, device=x.device)
    test_graph = KNNGraph(test.shape[0], edges_per_node=k_edges, visits=1, neighbour_nodes=num_train, device=x.device)
    own = torch.arange(num_train, device=x.device)
    # One search of every node against the training nodes (the search copy of the keys is made once): a
    # training node drops itself from its k + 1 nearest, a held-out node keeps its k nearest.
    sim, idx = topk_cosine_search(x, train, k_edges + 1, precision=search_precision, chunk_size=chunk_size,
                                  search_dim=search_dim)
    neighbours, neighbour_sim = nearest_non_self(idx[:num_train], sim[:num_train], own, k_edges)
    train_graph.add(own, neighbours, neighbour_sim)
    if test.shape[0]:
        test_graph.add(torch.arange(test.shape[0], device=x.device), idx[num_train:, :k_edges],
                       sim[num_train:, :k_edges])
    return train_graph, test_graph
