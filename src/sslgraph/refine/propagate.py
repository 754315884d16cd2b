"""Parameter-free propagation over a kNN graph: APPNP / personalised PageRank, sparse products only.

``h_0 = x``, ``h_{t+1} = (1 - alpha) * A_hat @ h_t + alpha * x`` for ``hops`` steps. ``alpha`` (the teleport
probability) is the share of a node's *own* feature that is put back at every hop: ``alpha = 1`` returns the
raw features, ``alpha = 0`` is plain multi-hop smoothing (SGC without the weights), which on noisy kNN graphs
averages a node's identity away. There is nothing to train, so this is both the baseline every trained
refinement is compared with and the fast path at ImageNet-1K scale: one hop is one sparse-dense product,
``O(num_edges * d)``, done in chunks of columns so memory stays ``O(num_nodes * chunk)`` above the input.

``A_hat`` follows the export's edge convention (``edge_index`` is ``[source, target]`` and node ``i`` reads
from its in-neighbours): ``sym`` is ``D^-1/2 A D^-1/2`` with the (weighted) in-degree ``D`` (``gcn_norm``
without self-loops, so the self term is ``alpha`` alone; a node with no in-edges counts its out-degree),
``row`` the mean over in-neighbours. Optionally,
training edges are made symmetric first (``j -> i`` adds ``i -> j``), which lets a training node also hear
from the nodes that chose it; held-out nodes keep receiving only.

:func:`select_alpha` picks ``alpha`` (and the hop count) without labels: the features of one stream,
propagated over its graph, should predict the other stream's k-means clusters better than the raw features
do (the two streams see the images through different networks, so their errors are partly independent and
the other stream's clusters are a noisy label that no propagation of this stream can fit by itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sslgraph.choices import PropagationNorm, SearchPrecision, options
from sslgraph.graph.bank import topk_cosine_search

NORMALISATIONS = options(PropagationNorm)


def _check_graph(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> None:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"propagation: edge_index must be [2, M], got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"propagation: edge_index refers to nodes outside [0, {num_nodes})")
    if edge_weight is not None:
        if edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"propagation: edge_weight must be [{edge_index.shape[1]}], "
                             f"got {tuple(edge_weight.shape)}")
        if edge_weight.numel() and float(edge_weight.min()) < 0:
            raise ValueError("propagation: edge weights must be >= 0")


def symmetrise_train_edges(edge_index: Tensor, edge_weight: Tensor | None, num_train: int | None
                           ) -> tuple[Tensor, Tensor | None]:
    """Add ``i -> j`` for every training edge ``j -> i`` (both ends training nodes); a pair present in both
    directions keeps the larger weight once. Edges into held-out nodes are kept as they are."""
    num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if num_train is None:
        num_train = num_nodes
    weight = torch.ones(edge_index.shape[1]) if edge_weight is None else edge_weight.float()
    train = (edge_index[0] < num_train) & (edge_index[1] < num_train)
    both = torch.cat([edge_index, edge_index[:, train].flip(0)], dim=1)
    weights = torch.cat([weight, weight[train]])
    key = both[0] * max(num_nodes, 1) + both[1]
    unique, inverse = torch.unique(key, return_inverse=True)
    merged = torch.zeros(unique.numel(), dtype=weights.dtype).scatter_reduce_(0, inverse, weights, "amax",
                                                                              include_self=False)
    out = torch.stack([unique // max(num_nodes, 1), unique % max(num_nodes, 1)])
    return out, (None if edge_weight is None else merged)


def propagation_matrix(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, *,
                       normalization: str = "sym", symmetric: bool = False,
                       num_train: int | None = None) -> Tensor:
    """The normalised adjacency ``A_hat`` as a sparse CSR ``[num_nodes, num_nodes]`` (rows = targets), no
    self-loops. Nodes without in-edges get an empty row (propagation then keeps their own feature)."""
    if normalization not in NORMALISATIONS:
        raise ValueError(f"propagation: normalization must be one of {', '.join(NORMALISATIONS)}, "
                         f"got {normalization!r}")
    _check_graph(edge_index, edge_weight, num_nodes)
    edge_index = edge_index.long().cpu()
    edge_weight = None if edge_weight is None else edge_weight.float().cpu()
    # Self-loops are not edges of a kNN graph; the self term is alpha's job.
    keep = edge_index[0] != edge_index[1]
    edge_index = edge_index[:, keep]
    edge_weight = None if edge_weight is None else edge_weight[keep]
    if symmetric:
        edge_index, edge_weight = symmetrise_train_edges(edge_index, edge_weight, num_train)
    weight = torch.ones(edge_index.shape[1]) if edge_weight is None else edge_weight
    source, target = edge_index
    degree = torch.zeros(num_nodes).index_add_(0, target, weight)
    if normalization == "row":
        value = weight / degree[target].clamp_min(1e-12)
    else:
        # A node that only sends (no in-edges) is normalised by its out-degree instead.
        out_degree = torch.zeros(num_nodes).index_add_(0, source, weight)
        degree = torch.where(degree > 0, degree, out_degree)
        inv_sqrt = degree.clamp_min(1e-12).pow(-0.5) * (degree > 0)
        value = inv_sqrt[target] * weight * inv_sqrt[source]
    matrix = torch.sparse_coo_tensor(torch.stack([target, source]), value, (num_nodes, num_nodes))
    return matrix.coalesce().to_sparse_csr()


def _orphans(matrix: Tensor) -> Tensor:
    """Rows with no in-edges."""
    rowptr = matrix.crow_indices()
    return (rowptr[1:] - rowptr[:-1]) == 0


@torch.no_grad()
def appnp(x: Tensor, matrix: Tensor, *, alpha: float, hops: int, chunk_size: int = 256) -> Tensor:
    """``hops`` steps of ``h <- (1 - alpha) * A_hat @ h + alpha * x`` from ``h = x``.

    Columns are processed ``chunk_size`` at a time (each column propagates independently), so the working
    memory is a few ``[num_nodes, chunk_size]`` blocks. A node without in-edges keeps its own feature.
    """
    if hops < 0:
        raise ValueError(f"appnp: hops must be >= 0, got {hops}")
    return appnp_hops(x, matrix, alpha=alpha, hops=[hops], chunk_size=chunk_size)[hops]


@torch.no_grad()
def appnp_hops(x: Tensor, matrix: Tensor, *, alpha: float, hops: Sequence[int],
               chunk_size: int = 256) -> dict[int, Tensor]:
    """:func:`appnp` at several hop counts in one pass: hop ``t`` is a prefix of hop ``t + 1``'s iteration."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"appnp: alpha must be in [0, 1], got {alpha}")
    if not hops or min(hops) < 0:
        raise ValueError(f"appnp: hops must be >= 0, got {list(hops)}")
    if x.dim() != 2 or x.shape[0] != matrix.shape[0]:
        raise ValueError(f"appnp: x must be [{matrix.shape[0]}, d], got {tuple(x.shape)}")
    x = x.float()
    wanted = sorted(set(int(h) for h in hops))
    if alpha == 1.0 or wanted[-1] == 0:
        return {h: x.clone() for h in wanted}
    orphan = _orphans(matrix).to(x.device)
    outs = {h: torch.empty_like(x) for h in wanted}
    for start in range(0, x.shape[1], chunk_size):
        x0 = x[:, start:start + chunk_size].contiguous()
        h = x0
        for step in range(wanted[-1] + 1):
            if step > 0:
                h = torch.addcmul(alpha * x0, matrix @ h, torch.tensor(1.0 - alpha))
                h[orphan] = x0[orphan]
            if step in outs:
                outs[step][:, start:start + chunk_size] = h
    return outs


def _kmeans(x: Tensor, k: int, *, iters: int, seed: int) -> Tensor:
    """Spherical k-means (cosine) on the rows of ``x``; returns the cluster of each row."""
    gen = torch.Generator().manual_seed(seed)
    z = F.normalize(x.float(), dim=1)
    centres = z[torch.randperm(z.shape[0], generator=gen)[:k]].clone()
    for _ in range(iters):
        assign = (z @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, z)
        empty = sums.norm(dim=1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=1))
    return (z @ centres.T).argmax(dim=1)


def _knn_agreement(features: Tensor, targets: Tensor, query: Tensor, reference: Tensor, *, k: int,
                   temperature: float, num_classes: int, precision: SearchPrecision = "auto") -> float:
    """Share of ``query`` rows whose weighted-kNN vote among ``reference`` rows equals their target. The
    neighbours are searched as the memory banks search (``precision`` bf16: a bfloat16 product whose candidates
    are re-scored exactly), which halves the rule's cost where bfloat16 is native."""
    z = F.normalize(features.float(), dim=1)
    bank, labels = z[reference], targets[reference]
    # One search for every query (it goes in chunks itself), so the bank's bf16 copy is made once.
    sim, idx = topk_cosine_search(z[query], bank, min(k, bank.shape[0]), precision=precision)
    scores = torch.zeros(query.numel(), num_classes).scatter_add_(1, labels[idx], (sim / temperature).exp())
    correct = int((scores.argmax(dim=1) == targets[query]).sum())
    return correct / max(query.numel(), 1)


@torch.no_grad()
def select_alpha(views: Sequence[tuple[Tensor, Tensor]], *, alphas: Sequence[float], hops: Sequence[int],
                 num_train: int, clusters: int = 100, sample: int = 5000, reference_sample: int = 50_000, k: int = 20,
                 temperature: float = 0.07, seed: int = 0, kmeans_iters: int = 20, margin: float = 2.0
                 ) -> dict[str, Any]:
    """Label-free choice of ``(alpha, hops)`` by cross-view cluster prediction.

    ``views`` holds ``(x, A_hat)`` per stream (at least two). Each stream's raw features are clustered by
    spherical k-means into ``clusters`` groups; for every setting, every stream is propagated over its own
    graph and a weighted kNN (``k``, ``temperature``) of ``sample`` training nodes against (at most
    ``reference_sample`` of) the other training nodes predicts the *other* streams' clusters; the cap keeps the
    rule at a fixed cost per setting on ImageNet-scale graphs (the vote over all 1.3 M nodes would cost ~2
    TFLOP per setting) and leaves CIFAR-scale graphs untouched. The setting with the best mean agreement wins
    if it beats the raw features (``alpha = 1``, always a candidate) by more than ``margin`` standard errors of
    the raw score; otherwise the raw features are kept, so a graph that does not clearly help is not used.
    Labels are never read.

    The rule is safe but conservative: its targets are clusters of *features*, so edges that carry what the
    features lack (measured on oracle-rewired CIFAR-10 graphs, ``benchmarks/refine_vs_purity.py``) pull a node
    away from its feature cluster and are declined even where propagation gains 6-13 kNN points (70-90 %
    same-class edges); set ``refine.alpha``/``refine.hops`` when the graph is known to be pure.
    """
    if len(views) < 2:
        raise ValueError("select_alpha: needs at least two views (one stream's clusters grade the other)")
    if not alphas or not hops:
        raise ValueError("select_alpha: alphas and hops must be non-empty")
    if num_train < 4:
        raise ValueError(f"select_alpha: needs at least 4 training nodes, got {num_train}")
    clusters = max(2, min(clusters, num_train // 4))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_train, generator=gen)
    query = order[:min(sample, num_train // 2)]
    reference = order[min(sample, num_train // 2):][:reference_sample]
    targets = [_kmeans(x[:num_train], clusters, iters=kmeans_iters, seed=seed + i) for i, (x, _) in enumerate(views)]
    settings = sorted({(1.0, 0)} | {(float(a), int(h)) for a in alphas for h in hops if a < 1.0 and h > 0})
    scores: dict[str, float] = {}
    for alpha in sorted({a for a, _ in settings}):
        counts = [h for a, h in settings if a == alpha]
        agreement: dict[int, list[float]] = {h: [] for h in counts}
        for i, (x, matrix) in enumerate(views):
            for num_hops, h in appnp_hops(x, matrix, alpha=alpha, hops=counts).items():
                for j in range(len(views)):
                    if j != i:
                        agreement[num_hops].append(_knn_agreement(h[:num_train], targets[j], query, reference, k=k,
                                                                  temperature=temperature, num_classes=clusters))
        for num_hops, values in agreement.items():
            scores[f"alpha={alpha:g},hops={num_hops}"] = sum(values) / len(values)
    raw = scores["alpha=1,hops=0"]
    # Standard error of the raw agreement (a share over query.numel() * len(agreement) votes).
    stderr = (raw * (1 - raw) / max(query.numel() * len(views) * (len(views) - 1), 1)) ** 0.5
    best, best_score = (1.0, 0), raw
    for (alpha, num_hops) in settings:
        score = scores[f"alpha={alpha:g},hops={num_hops}"]
        if score > best_score + 1e-12 and score > raw + margin * stderr:
            best, best_score = (alpha, num_hops), score
    return {"alpha": best[0], "hops": best[1], "score": best_score, "scores": scores, "raw_stderr": stderr,
            "rule": f"cross-view k-means ({clusters} clusters) agreement of a {k}-NN vote over "
                    f"{query.numel()} training nodes; propagate only when it beats the raw features by "
                    f"> {margin} standard errors"}
