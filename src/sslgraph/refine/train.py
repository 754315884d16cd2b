"""Stage B: refine node embeddings with graph BYOL over the teacher and student kNN graphs.

``refine_graphs`` trains :class:`~sslgraph.refine.byol.GraphBYOL` on two PyG ``Data`` views and returns the
online encoder's embeddings (the run layer, :mod:`sslgraph.run.refine`, does it for a run directory). Choices:

- ``transductive`` (reference): every node, held-out ones included, is in the graph and the loss.
  ``inductive``: training sees only the train-node subgraph (held-out nodes and all their edges removed);
  held-out nodes are embedded at inference only, so their features cannot influence the weights.
- ``faithful=True`` reverses every edge, as the reference does: each node then sends to its neighbours
  instead of reading from them, and held-out nodes, which only receive edges, get no messages at all.
- Full batch (one step per epoch over the whole graph) or neighbour-sampled mini-batches with a vectorised
  sampler (PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse) and chunked layer-wise inference.

Everything random (dropout, feature masks, batch order, neighbour sampling) follows ``cfg.seed``; on the CPU
two runs give bit-identical embeddings, and a run resumed from a checkpoint matches an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from sslgraph.choices import RefineOutput, check_option
from sslgraph.config import RefineConfig
from sslgraph.errors import GraphFileError, Preempted, RefineError
from sslgraph.graph.edges import edge_variant
from sslgraph.graph.schema import check_graph_pair
from sslgraph.refine.byol import GraphBYOL, GraphView
from sslgraph.refine.collapse import collapse_stats
from sslgraph.refine.encoders import PARAMETER_FREE_KINDS, GNNEncoder
from sslgraph.refine.propagate import appnp, propagation_matrix, select_alpha
from sslgraph.utils import preempt
from sslgraph.utils.io import append_jsonl, atomic_save, read_jsonl, safe_load, write_jsonl
from sslgraph.utils.misc import progress as progress_bar
from sslgraph.utils.misc import rng_state, seed_everything, set_rng_state

CHECKPOINT_VERSION = 1


@dataclass
class RefineResult:
    """Refined embeddings of every node (float32, CPU; train nodes first) and what produced them."""

    embeddings: Tensor
    y: Tensor
    train_mask: Tensor
    test_mask: Tensor
    num_train: int
    losses: list[float]
    state_dict: dict[str, Tensor]


def validate_graphs(teacher: Data, student: Data) -> None:
    """Check that the two views follow the graph schema (:mod:`sslgraph.graph.schema`), describe the same
    labelled nodes, and have features of one width (one encoder embeds both); raises ``GraphFileError``."""
    check_graph_pair(teacher, student)
    if teacher.x.shape[1] != student.x.shape[1]:
        raise GraphFileError(f"feature widths differ between views: teacher {teacher.x.shape[1]}, "
                             f"student {student.x.shape[1]}; one encoder embeds both")


def graph_view(data: Data, *, faithful: bool = False) -> GraphView:
    """The message-passing view of one graph; ``faithful`` flips the edges as the reference does."""
    edge_index = data.edge_index.flip(0) if faithful else data.edge_index
    weight = getattr(data, "edge_weight", None)
    return GraphView(data.x.float(), edge_index, None if weight is None else weight.float())


def node_subgraph(view: GraphView, mask: Tensor) -> GraphView:
    """The view restricted to ``mask`` nodes (renumbered in order); edges touching other nodes are dropped."""
    edge_index, weight = subgraph(mask, view.edge_index, view.edge_weight, relabel_nodes=True,
                                  num_nodes=view.num_nodes)
    return GraphView(view.x[mask], edge_index, weight)


def mask_features(x: Tensor, *, drop_prob: float, generator: torch.Generator) -> Tensor:
    """Zero each feature column with probability ``drop_prob`` (one draw per column, shared by all nodes)."""
    if drop_prob == 0.0:
        return x
    keep = torch.rand(x.shape[1], generator=generator) >= drop_prob
    return x * keep.to(device=x.device, dtype=x.dtype)


def _masked(view: GraphView, *, drop_prob: float, generator: torch.Generator) -> GraphView:
    return view._replace(x=mask_features(view.x, drop_prob=drop_prob, generator=generator))


class NeighbourSampler:
    """Vectorised neighbour sampling over a CSR of incoming edges (no pyg-lib / torch-sparse needed).

    ``sample(seeds)`` returns the nodes of the sampled computation graph (seeds first, then each hop's new
    nodes) and the subgraph view over them: at hop l every frontier node keeps at most ``num_neighbors[l]``
    of its incoming edges, drawn uniformly without replacement (``-1`` keeps all of them).
    """

    def __init__(self, view: GraphView, num_neighbors: list[int]) -> None:
        num_nodes = view.num_nodes
        order = torch.argsort(view.edge_index[1], stable=True)
        self.x = view.x
        self.sources = view.edge_index[0, order]
        self.weights = None if view.edge_weight is None else view.edge_weight[order]
        counts = torch.bincount(view.edge_index[1], minlength=num_nodes)
        self.rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.num_neighbors = list(num_neighbors)
        self._local = torch.full((num_nodes,), -1, dtype=torch.long)

    def _pick(self, frontier: Tensor, fanout: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """CSR positions of the kept incoming edges of ``frontier`` and each one's index in ``frontier``."""
        start = self.rowptr[frontier]
        degree = self.rowptr[frontier + 1] - start
        total = int(degree.sum())
        group = torch.repeat_interleave(torch.arange(frontier.numel()), degree)
        group_start = torch.repeat_interleave(degree.cumsum(0) - degree, degree)
        rank = torch.arange(total) - group_start
        position = start[group] + rank
        if fanout < 0 or total == 0 or int(degree.max()) <= fanout:
            return position, group
        shuffled = torch.randperm(total, generator=generator)
        shuffled = shuffled[torch.argsort(group[shuffled], stable=True)]
        kept = shuffled[rank < fanout]
        return position[kept], group[kept]

    def sample(self, seeds: Tensor, generator: torch.Generator) -> tuple[Tensor, GraphView]:
        local = self._local
        local[seeds] = torch.arange(seeds.numel())
        parts, sources, targets, positions = [seeds], [], [], []
        frontier, count = seeds, seeds.numel()
        for fanout in self.num_neighbors:
            position, group = self._pick(frontier, fanout, generator)
            src = self.sources[position]
            sources.append(src)
            targets.append(frontier[group])
            positions.append(position)
            new = torch.unique(src)
            new = new[local[new] < 0]
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            parts.append(new)
            frontier = new
        nodes = torch.cat(parts)
        edge_index = torch.stack([local[torch.cat(sources)], local[torch.cat(targets)]])
        weights = None if self.weights is None else self.weights[torch.cat(positions)]
        local[nodes] = -1
        view = GraphView(self.x[nodes], edge_index, weights, nodes_per_hop=tuple(p.numel() for p in parts))
        return nodes, view


def build_model(in_dim: int, cfg: RefineConfig) -> GraphBYOL:
    if cfg.encoder in PARAMETER_FREE_KINDS:
        raise RefineError(f"refine.encoder={cfg.encoder} has nothing to train; use propagate_graphs")
    if cfg.alpha is not None and cfg.alpha >= 1.0:
        raise RefineError(f"refine.alpha={cfg.alpha}: a trained encoder needs alpha < 1 (1 ignores the graph)")
    encoder = GNNEncoder(in_dim, kind=cfg.encoder, num_layers=cfg.num_layers, hidden_dim=cfg.hidden_dim,
                         jk=cfg.jk, dropout=cfg.dropout, residual=cfg.residual, norm=cfg.norm,
                         activation=cfg.activation, use_edge_weight=cfg.use_edge_weight, alpha=cfg.alpha)
    return GraphBYOL(encoder, projector_dim=cfg.projector_dim, predictor_dim=cfg.predictor_dim,
                     variance_weight=cfg.variance_weight, spread_weight=cfg.spread_weight)


@dataclass
class PropagationResult:
    """Parameter-free refinement: every node's propagated features and the setting that produced them."""

    embeddings: Tensor
    alpha: float
    hops: int
    selection: dict[str, Any] | None


def _propagation_views(teacher: Data, student: Data, cfg: RefineConfig) -> list[tuple[Tensor, Tensor]]:
    """``(x, A_hat)`` per stream: features standardised with the training nodes' mean and std (so no single
    dimension dominates a cosine), each over its own graph."""
    views = []
    for data in (teacher, student):
        x = data.x.float()
        train = x[data.train_mask]
        std = train.std(dim=0, unbiased=False)
        x = (x - train.mean(dim=0)) / torch.where(std > 1e-12, std, torch.ones_like(std))
        edge_index = data.edge_index.flip(0) if cfg.faithful else data.edge_index
        weight = getattr(data, "edge_weight", None) if cfg.use_edge_weight else None
        matrix = propagation_matrix(edge_index, weight, x.shape[0], normalization=cfg.propagation_norm,
                                    symmetric=cfg.symmetrise, num_train=int(data.train_mask.sum()))
        views.append((x, matrix))
    return views


def propagate_graphs(teacher: Data, student: Data, cfg: RefineConfig) -> PropagationResult:
    """APPNP propagation of each stream over its own graph (:mod:`sslgraph.refine.propagate`), combined per
    ``cfg.output``; ``alpha``/``hops`` from ``cfg`` or, where null, from the label-free rule. No training and
    no labels: the masks only say which nodes are training nodes."""
    validate_graphs(teacher, student)
    check_option(RefineOutput, cfg.output, name="refine.output")
    teacher, student = edge_variant(teacher, student, cfg.edges)
    views = _propagation_views(teacher, student, cfg)
    num_train = int(teacher.train_mask.sum())
    selection = None
    if cfg.alpha is None or cfg.hops is None:
        alphas = [cfg.alpha] if cfg.alpha is not None else list(cfg.alpha_candidates)
        hops = [cfg.hops] if cfg.hops is not None else list(cfg.hops_candidates)
        selection = select_alpha(views, alphas=alphas, hops=hops, num_train=num_train, seed=cfg.seed)
        alpha, num_hops = selection["alpha"], selection["hops"]
    else:
        alpha, num_hops = float(cfg.alpha), int(cfg.hops)
    streams = [appnp(x, matrix, alpha=alpha, hops=num_hops) for x, matrix in views]
    if cfg.output == "teacher":
        embeddings = streams[0]
    elif cfg.output == "student":
        embeddings = streams[1]
    elif cfg.output == "mean":
        embeddings = (streams[0] + streams[1]) / 2
    else:
        embeddings = torch.cat(streams, dim=1)
    return PropagationResult(embeddings=embeddings, alpha=alpha, hops=num_hops, selection=selection)


@torch.no_grad()
def layerwise_embed(encoder: GNNEncoder, view: GraphView, *, chunk_size: int, device: torch.device,
                    progress: bool = True) -> Tensor:
    """E(view) computed layer by layer over chunks of target nodes, holding the full graph on the CPU.

    Every chunk takes its targets and their in-neighbours with all their edges, so the result equals a
    full-graph forward pass (same arithmetic, eval mode) while memory scales with the chunk.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        return _layerwise(encoder, view, chunk_size=chunk_size, device=device, progress=progress)
    finally:
        encoder.train(was_training)


def _layerwise(encoder: GNNEncoder, view: GraphView, *, chunk_size: int, device: torch.device,
               progress: bool) -> Tensor:
    num_nodes = view.num_nodes
    edge_index, weight = encoder.normalize_edges(view.edge_index, view.edge_weight, num_nodes)
    order = torch.argsort(edge_index[1], stable=True)
    sources, targets = edge_index[0, order], edge_index[1, order]
    weight = None if weight is None else weight[order]
    rowptr = torch.cat([targets.new_zeros(1), torch.bincount(targets, minlength=num_nodes).cumsum(0)])
    bounds = list(range(0, num_nodes, chunk_size))

    x0 = torch.cat([encoder.input_features(view.x[a:a + chunk_size].to(device)).cpu() for a in bounds])
    h, outputs = x0, []
    for layer in range(encoder.num_layers):
        out = torch.empty(num_nodes, encoder.hidden_dim)
        for a in progress_bar(bounds, desc=f"refine: embed layer {layer + 1}/{encoder.num_layers}",
                              disable=None if progress else True):
            b = min(a + chunk_size, num_nodes)
            e0, e1 = int(rowptr[a]), int(rowptr[b])
            chunk = torch.arange(a, b)
            nodes = torch.unique(torch.cat([chunk, sources[e0:e1]]))
            sub_edges = torch.stack([torch.searchsorted(nodes, sources[e0:e1]),
                                     torch.searchsorted(nodes, targets[e0:e1])]).to(device)
            sub_weight = None if weight is None else weight[e0:e1].to(device)
            graph, graph_weight = encoder.adjacency(sub_edges, sub_weight, nodes.numel())
            result = encoder.layer(layer, h[nodes].to(device), x0[nodes].to(device), graph, graph_weight)
            out[a:b] = result[torch.searchsorted(nodes, chunk).to(device)].cpu()
        outputs.append(out)
        h = out
    return encoder.jump(outputs)


def embed_views(model: GraphBYOL, teacher: GraphView, student: GraphView, *, output: str, full_batch: bool,
                device: torch.device, chunk_size: int = 4096, progress: bool = True) -> Tensor:
    """Refined embeddings of every node (float32, CPU) from the online encoder, combined per ``output``:
    ``concat`` [E(v1); E(v2)], ``teacher`` E(v1), ``student`` E(v2) or their ``mean``."""
    check_option(RefineOutput, output, name="refine.output")

    def embed(view: GraphView) -> Tensor:
        if full_batch:
            return model.embed(model.prepare(view.to(device))).float().cpu()
        return layerwise_embed(model.encoder, view, chunk_size=chunk_size, device=device, progress=progress).float()

    if output == "teacher":
        return embed(teacher)
    if output == "student":
        return embed(student)
    first, second = embed(teacher), embed(student)
    return torch.cat([first, second], dim=1) if output == "concat" else (first + second) / 2


def _batches(num_nodes: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A random partition of the nodes into batches; a last batch of one node is dropped (batch norm)."""
    batches = list(torch.randperm(num_nodes, generator=generator).split(batch_size))
    return batches if batches[-1].numel() > 1 or len(batches) == 1 else batches[:-1]


def train_step(model: GraphBYOL, optimizer: torch.optim.Optimizer, view1: GraphView, view2: GraphView, *,
               ema: float, feature_mask: float, generator: torch.Generator) -> Tensor:
    """One BYOL step: mask feature columns per view, symmetric loss, optimiser step, EMA of the target."""
    view1 = _masked(view1, drop_prob=feature_mask, generator=generator)
    view2 = _masked(view2, drop_prob=feature_mask, generator=generator)
    loss = model(view1, view2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(ema)
    return loss.detach()


def _fingerprint(cfg: RefineConfig, teacher: GraphView, student: GraphView) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "epochs"}
    return {"config": settings, "num_nodes": teacher.num_nodes, "in_dim": teacher.x.shape[1],
            "num_edges": [teacher.edge_index.shape[1], student.edge_index.shape[1]]}


def _resume(path: Path, fingerprint: dict[str, Any], epochs: int, model: GraphBYOL,
            optimizer: torch.optim.Optimizer, generator: torch.Generator) -> tuple[int, list[float]]:
    state = safe_load(path)
    if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != fingerprint:
        raise RefineError(f"refinement checkpoint {path} was written for other graphs or refine settings; "
                          "delete it to start over")
    if state["epoch"] > epochs:
        raise RefineError(f"refinement checkpoint {path} is at epoch {state['epoch']}, past refine.epochs={epochs}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    generator.set_state(state["generator"])
    return int(state["epoch"]), [float(v) for v in state["losses"]]


def refine_graphs(teacher: Data, student: Data, cfg: RefineConfig, *, device: torch.device,
                  progress: bool = True, checkpoint_path: Path | None = None, log_path: Path | None = None,
                  checkpoint_every: int = 10) -> RefineResult:
    """Train graph BYOL on the two views and return every node's refined embedding.

    With ``checkpoint_path`` the state is saved every ``checkpoint_every`` epochs and training resumes from
    it when the file exists; with ``log_path`` one ``{"epoch", "loss", "seconds"}`` line is appended per epoch
    (lines past a resumed checkpoint are dropped first).
    """
    validate_graphs(teacher, student)
    if cfg.encoder in PARAMETER_FREE_KINDS:
        started = time.perf_counter()
        propagated = propagate_graphs(teacher, student, cfg)
        if log_path is not None:
            write_jsonl(log_path, [{"epoch": 0, "alpha": propagated.alpha, "hops": propagated.hops,
                                    "seconds": round(time.perf_counter() - started, 4),
                                    **collapse_stats(propagated.embeddings, seed=cfg.seed)}])
        return RefineResult(embeddings=propagated.embeddings, y=teacher.y.clone(),
                            train_mask=teacher.train_mask.clone(), test_mask=teacher.test_mask.clone(),
                            num_train=int(teacher.train_mask.sum()), losses=[],
                            state_dict={"alpha": torch.tensor(propagated.alpha),
                                        "hops": torch.tensor(propagated.hops)})
    teacher, student = edge_variant(teacher, student, cfg.edges)
    device = torch.device(device)
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    views = (graph_view(teacher, faithful=cfg.faithful), graph_view(student, faithful=cfg.faithful))
    train_views = views
    if cfg.mode == "inductive":
        train_views = tuple(node_subgraph(v, teacher.train_mask) for v in views)
    if train_views[0].num_nodes < 2:
        raise RefineError(f"refinement needs at least 2 training nodes, got {train_views[0].num_nodes}")
    full_batch = cfg.batching == "full" or (cfg.batching == "auto" and views[0].num_nodes <= cfg.full_batch_max_nodes)

    model = build_model(teacher.x.shape[1], cfg).to(device)
    optimizer = torch.optim.Adam(model.online_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fingerprint = _fingerprint(cfg, *views)
    start_epoch, losses = 0, []
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        start_epoch, losses = _resume(Path(checkpoint_path), fingerprint, cfg.epochs, model, optimizer, generator)
    if log_path is not None:
        write_jsonl(log_path, [r for r in read_jsonl(log_path) if r.get("epoch", math.inf) < start_epoch])

    if full_batch:
        prepared = tuple(model.prepare(v.to(device)) for v in train_views)
    else:
        samplers = tuple(NeighbourSampler(v, cfg.num_neighbors) for v in train_views)

    model.train()
    warned_collapse = False
    epochs = progress_bar(range(start_epoch, cfg.epochs), desc="refine", total=cfg.epochs - start_epoch,
                          disable=None if progress else True)
    for epoch in epochs:
        started = time.perf_counter()
        if full_batch:
            pairs: Iterable[tuple[GraphView, ...]] = [prepared] * cfg.steps_per_epoch
        else:
            batches = progress_bar(_batches(train_views[0].num_nodes, cfg.batch_size, generator),
                                   desc="refine: batches", disable=None if progress else True)
            pairs = (tuple(s.sample(seeds, generator)[1].to(device) for s in samplers) for seeds in batches)
        epoch_losses = [train_step(model, optimizer, view1, view2, ema=cfg.ema, feature_mask=cfg.feature_mask,
                                   generator=generator) for view1, view2 in pairs]
        epoch_loss = float(torch.stack(epoch_losses).mean())
        if not math.isfinite(epoch_loss):
            raise RefineError(f"refinement loss became {epoch_loss} at epoch {epoch}; lower refine.lr "
                              f"(now {cfg.lr}) or check the graph features")
        losses.append(epoch_loss)
        # Collapse diagnostics on the online embeddings of the last step's first view.
        stats = collapse_stats(model.last_embeddings, seed=cfg.seed)
        if stats["mean_cosine"] > cfg.collapse_cosine and not warned_collapse:
            warned_collapse = True  # once per run: the log records every epoch's statistics
            warnings.warn(f"refinement epoch {epoch}: the embeddings are collapsing (mean pairwise cosine "
                          f"{stats['mean_cosine']:.2f} > refine.collapse_cosine={cfg.collapse_cosine}, effective "
                          f"rank {stats['effective_rank']:.1f}); raise refine.spread_weight, refine.variance_weight "
                          f"or refine.alpha",
                          RuntimeWarning, stacklevel=2)
        if log_path is not None:
            append_jsonl(log_path, {"epoch": epoch, "loss": epoch_loss,
                                    "seconds": round(time.perf_counter() - started, 4), **stats})
        done = epoch + 1
        # A stop signal (pre-emption) saves the state after this epoch and stops; a rerun continues from it.
        stop = preempt.requested() if checkpoint_path is not None and done < cfg.epochs else None
        if checkpoint_path is not None and done < cfg.epochs and (done % checkpoint_every == 0 or stop):
            atomic_save({"version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "epoch": done,
                         "losses": losses, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": rng_state(), "generator": generator.get_state()}, checkpoint_path)
        if stop is not None:
            raise Preempted(f"refinement stopped by {preempt.signal_name(stop)} after epoch {epoch}; its state is "
                            f"saved in {checkpoint_path}: rerun the same command to continue", signum=stop)

    embeddings = embed_views(model, *views, output=cfg.output, full_batch=full_batch, device=device,
                             chunk_size=cfg.batch_size, progress=progress)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RefineResult(embeddings=embeddings, y=teacher.y.clone(), train_mask=teacher.train_mask.clone(),
                        test_mask=teacher.test_mask.clone(), num_train=int(teacher.train_mask.sum()),
                        losses=losses, state_dict=state)
