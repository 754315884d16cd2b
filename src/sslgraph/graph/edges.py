"""Label-free edge variants of an exported kNN graph, for purer graphs before refinement.

All functions take and return PyG ``[source, target]`` edge lists in the export's convention (``j -> i`` when
``j`` is one of ``i``'s neighbours; held-out nodes only receive) and never read labels:

- :func:`mutual_edges` keeps a training edge ``j -> i`` only when ``i -> j`` exists as well (each is among the
  other's neighbours); edges into held-out nodes cannot be mutual and are kept.
- :func:`combine_edges` is the union (weights added) or the intersection (weights added, pairs present in
  both) of two graphs over the same nodes, e.g. the teacher and the student graph.
- :func:`edge_variant` applies one of these to a teacher/student pair of ``Data`` (what ``refine.edges`` picks).
- :func:`similarity_weights` replaces the weights by the cosine similarity of the two end points' features,
  clamped at ``min_weight`` so an edge never carries a negative or zero weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.choices import EdgeVariant, check_option


def _keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    return edge_index[0].long() * num_nodes + edge_index[1].long()


def _coalesce(edge_index: Tensor, weight: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Merge repeated ``(source, target)`` pairs, adding their weights; pairs in sorted order."""
    unique, inverse = torch.unique(_keys(edge_index, num_nodes), return_inverse=True)
    merged = torch.zeros(unique.numel(), dtype=weight.dtype).index_add_(0, inverse, weight)
    return torch.stack([unique // num_nodes, unique % num_nodes]), merged


def _weights(edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edges: edge_index must be [2, M], got {tuple(edge_index.shape)}")
    if edge_weight is None:
        return torch.ones(edge_index.shape[1])
    if edge_weight.shape != (edge_index.shape[1],):
        raise ValueError(f"edges: edge_weight must be [{edge_index.shape[1]}], got {tuple(edge_weight.shape)}")
    return edge_weight.float()


def mutual_edges(edge_index: Tensor, edge_weight: Tensor | None, num_train: int, num_nodes: int
                 ) -> tuple[Tensor, Tensor]:
    """Training edges whose reverse exists too, plus every edge into a held-out node (repeats merged)."""
    edge_index, weight = _coalesce(edge_index.cpu(), _weights(edge_index, edge_weight).cpu(), num_nodes)
    into_test = edge_index[1] >= num_train
    reverse = torch.isin(_keys(edge_index.flip(0), num_nodes), _keys(edge_index, num_nodes))
    keep = into_test | reverse
    return edge_index[:, keep], weight[keep]


def combine_edges(a: tuple[Tensor, Tensor | None], b: tuple[Tensor, Tensor | None], num_nodes: int, *,
                  how: str = "union") -> tuple[Tensor, Tensor]:
    """Union or intersection of two edge sets over the same nodes; a pair's weights are added."""
    if how not in ("union", "intersection"):
        raise ValueError(f"combine_edges: how must be union or intersection, got {how!r}")
    (ea, wa), (eb, wb) = a, b
    ea, wa = _coalesce(ea.cpu(), _weights(ea, wa).cpu(), num_nodes)
    eb, wb = _coalesce(eb.cpu(), _weights(eb, wb).cpu(), num_nodes)
    edge_index, weight = _coalesce(torch.cat([ea, eb], dim=1), torch.cat([wa, wb]), num_nodes)
    if how == "intersection":
        keys = _keys(edge_index, num_nodes)
        keep = torch.isin(keys, _keys(ea, num_nodes)) & torch.isin(keys, _keys(eb, num_nodes))
        edge_index, weight = edge_index[:, keep], weight[keep]
    return edge_index, weight


def similarity_weights(edge_index: Tensor, x: Tensor, *, min_weight: float = 1e-3, chunk_size: int = 1 << 20
                       ) -> Tensor:
    """Cosine similarity of every edge's end points, clamped below at ``min_weight``."""
    if min_weight <= 0:
        raise ValueError(f"similarity_weights: min_weight must be > 0, got {min_weight}")
    z = F.normalize(x.float(), dim=1)
    out = torch.empty(edge_index.shape[1])
    for start in range(0, edge_index.shape[1], chunk_size):
        src, dst = edge_index[:, start:start + chunk_size]
        out[start:start + chunk_size] = (z[src] * z[dst]).sum(dim=1).cpu()
    return out.clamp_min(min_weight)


def same_class_share(edge_index: Tensor, y: Tensor) -> float:
    """Share of edges joining two nodes of the same class (evaluation only: reads labels)."""
    if edge_index.shape[1] == 0:
        return float("nan")
    return float((y[edge_index[0]] == y[edge_index[1]]).float().mean())


def edge_variant(teacher: Data, student: Data, variant: EdgeVariant) -> tuple[Data, Data]:
    """The pair with its edges replaced by ``variant`` (features, labels and masks shared, not copied):
    ``exported`` returns the pair itself, ``mutual`` filters each graph on its own, ``union`` and
    ``intersection`` give both streams the same combined edge set."""
    check_option(EdgeVariant, variant, name="refine.edges")
    if variant == "exported":
        return teacher, student
    num_nodes, num_train = teacher.num_nodes, int(teacher.train_mask.sum())
    pair = [(g.edge_index, getattr(g, "edge_weight", None)) for g in (teacher, student)]
    if variant == "mutual":
        edges = [mutual_edges(*e, num_train, num_nodes) for e in pair]
    else:
        combined = combine_edges(pair[0], pair[1], num_nodes, how=variant)
        edges = [combined, combined]
    out = []
    for graph, (edge_index, weight) in zip((teacher, student), edges):
        copy = Data(**dict(graph.items()))  # a shallow copy: node tensors are shared
        copy.edge_index, copy.edge_weight = edge_index, weight
        out.append(copy)
    return out[0], out[1]
