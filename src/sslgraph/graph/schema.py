"""The one schema of node data: a stream's graph (a PyG ``Data``) and the refined embeddings of its nodes.

Every reader checks here, whether it loads a file (:mod:`sslgraph.graph.export`) or is handed ``Data`` objects
(:func:`sslgraph.refine.train.refine_graphs`), and every violation is a :class:`GraphFileError` that names the
file or graph and the field at fault.

A graph holds ``x`` (float ``[N, d]``, finite), ``edge_index`` (int64 ``[2, M]``, ``M >= 1``, node ids in
``[0, N)``), optionally ``edge_weight`` (float ``[M]``), ``y`` (integer ``[N]``), ``train_mask`` and
``test_mask`` (bool ``[N]``, at least one training node) and optionally ``num_train`` (the number of training
nodes, which come first). The teacher and student graphs of a run describe the same nodes: equal ``y`` and
masks. Refined embeddings are float ``[N, d']`` rows over those same nodes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.errors import GraphFileError

REQUIRED_FIELDS = ("x", "edge_index", "y", "train_mask", "test_mask")
NODE_FIELDS = ("y", "train_mask", "test_mask")
REFINED_FIELDS = ("embeddings", *NODE_FIELDS)


def _tensor_fields(data: Any, names: tuple[str, ...], where: str) -> None:
    missing = [name for name in names if getattr(data, name, None) is None]
    if missing:
        raise GraphFileError(f"{where}: missing field(s) {', '.join(missing)}; need {', '.join(names)}")
    for name in names:
        if not isinstance(getattr(data, name), Tensor):
            raise GraphFileError(f"{where}: field {name!r} is not a tensor")


def _node_fields(values: dict[str, Tensor], num_nodes: int, where: str) -> None:
    for key in NODE_FIELDS:
        if tuple(values[key].shape) != (num_nodes,):
            raise GraphFileError(f"{where}: field {key!r} has shape {tuple(values[key].shape)}, expected "
                                 f"({num_nodes},) to match the {num_nodes} nodes")
    if values["y"].is_floating_point() or values["y"].dtype == torch.bool:
        raise GraphFileError(f"{where}: field 'y' has dtype {values['y'].dtype}, expected an integer dtype")
    for key in ("train_mask", "test_mask"):
        if values[key].dtype != torch.bool:
            raise GraphFileError(f"{where}: field {key!r} has dtype {values[key].dtype}, expected torch.bool")


def check_graph(data: Data, *, where: str) -> None:
    """Raise :class:`GraphFileError` unless ``data`` follows the graph schema; ``where`` names it in messages."""
    _tensor_fields(data, REQUIRED_FIELDS, where)
    x, edge_index = data.x, data.edge_index
    if x.dim() != 2 or not x.is_floating_point():
        raise GraphFileError(f"{where}: field 'x' must be a float [num_nodes, d] tensor, got {x.dtype} "
                             f"{tuple(x.shape)}")
    num_nodes = x.shape[0]
    if num_nodes == 0:
        raise GraphFileError(f"{where}: empty graph (x has no rows)")
    bad_rows = (~torch.isfinite(x)).any(dim=1)
    if bool(bad_rows.any()):
        first = bad_rows.nonzero()[:5].flatten().tolist()
        raise GraphFileError(f"{where}: x has {int(bad_rows.sum())} of {num_nodes} rows with NaN/inf values "
                             f"(first rows: {first})")
    _node_fields({key: getattr(data, key) for key in NODE_FIELDS}, num_nodes, where)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise GraphFileError(f"{where}: field 'edge_index' must be an int64 [2, M] tensor, got {edge_index.dtype} "
                             f"{tuple(edge_index.shape)}")
    if edge_index.shape[1] == 0:
        raise GraphFileError(f"{where}: no edges; export the graphs again after pretraining")
    if int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes:
        raise GraphFileError(f"{where}: field 'edge_index' refers to nodes outside [0, {num_nodes})")
    weight = getattr(data, "edge_weight", None)
    if weight is not None:
        if not isinstance(weight, Tensor) or not weight.is_floating_point():
            raise GraphFileError(f"{where}: field 'edge_weight' must be a float tensor")
        if tuple(weight.shape) != (edge_index.shape[1],):
            raise GraphFileError(f"{where}: field 'edge_weight' has shape {tuple(weight.shape)}, expected "
                                 f"({edge_index.shape[1]},) to match edge_index")
    num_train = int(data.train_mask.sum())
    if num_train == 0:
        raise GraphFileError(f"{where}: train_mask selects no nodes")
    declared = getattr(data, "num_train", None)
    if declared is not None and (not isinstance(declared, int) or declared != num_train):
        raise GraphFileError(f"{where}: field 'num_train' ({declared!r}) does not match train_mask ({num_train})")


def check_graph_pair(teacher: Data, student: Data, *, where: tuple[str, str] = ("teacher graph", "student graph")
                     ) -> None:
    """Both graphs follow the schema and describe the same labelled nodes."""
    check_graph(teacher, where=where[0])
    check_graph(student, where=where[1])
    if teacher.x.shape[0] != student.x.shape[0]:
        raise GraphFileError(f"node counts differ between views: {where[0]} has {teacher.x.shape[0]} nodes, "
                             f"{where[1]} has {student.x.shape[0]}")
    for key in NODE_FIELDS:
        if not torch.equal(getattr(teacher, key).cpu(), getattr(student, key).cpu()):
            raise GraphFileError(f"{where[0]} and {where[1]} disagree on {key}; they must describe the same nodes")


def check_refined(refined: dict[str, Any], reference: Data, *, where: str) -> None:
    """Refined embeddings are float rows over exactly the nodes (labels and masks) of ``reference``."""
    if not isinstance(refined, dict):
        raise GraphFileError(f"{where}: expected a dict of refined-embedding fields, found {type(refined).__name__}")
    missing = [key for key in REFINED_FIELDS if not isinstance(refined.get(key), Tensor)]
    if missing:
        raise GraphFileError(f"{where}: missing field(s) {', '.join(missing)}; need {', '.join(REFINED_FIELDS)}")
    embeddings, num_nodes = refined["embeddings"], reference.x.shape[0]
    if embeddings.dim() != 2 or not embeddings.is_floating_point() or embeddings.shape[0] != num_nodes:
        raise GraphFileError(f"{where}: field 'embeddings' must be a float [{num_nodes}, d] tensor, got "
                             f"{embeddings.dtype} {tuple(embeddings.shape)}")
    _node_fields(refined, num_nodes, where)
    for key in NODE_FIELDS:
        if not torch.equal(refined[key].cpu(), getattr(reference, key).cpu()):
            raise GraphFileError(f"{where}: field {key!r} differs from the graphs' {key}; refine again after "
                                 "exporting the graphs")
