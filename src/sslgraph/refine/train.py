"""Stage B: refine node embeddings with graph BYOL over the teacher and student kNN graphs.

``refine_graphs`` trains :class:`~sslgraph.refine.byol.GraphBYOL` on two PyG ``Data`` views and returns the
online encoder's embeddings; ``run_refine`` does it for a run directory. Choices:

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from sslgraph.config import Config, RefineConfig
from sslgraph.graph.export import load_graph
from sslgraph.refine.byol import GraphBYOL, GraphView
from sslgraph.refine.encoders import GNNEncoder
from sslgraph.utils.io import append_jsonl, atomic_save, read_jsonl, safe_load, write_jsonl
from sslgraph.utils.misc import progress as progress_bar
from sslgraph.utils.misc import rng_state, seed_everything, set_rng_state

REQUIRED_FIELDS = ("x", "edge_index", "y", "train_mask", "test_mask")
CHECKPOINT_VERSION = 1


class RefineError(ValueError):
    """The graphs or a refinement checkpoint cannot be used; the message says which and why."""


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
    """Check that the two views describe the same labelled nodes and hold finite features and valid edges."""
    for name, data in (("teacher", teacher), ("student", student)):
        missing = [key for key in REQUIRED_FIELDS if getattr(data, key, None) is None]
        if missing:
            raise RefineError(f"{name} graph: missing field(s) {', '.join(missing)}; need {', '.join(REQUIRED_FIELDS)}")
        x, edge_index = data.x, data.edge_index
        if x.dim() != 2 or not x.is_floating_point():
            raise RefineError(f"{name} graph: x must be a float [N, d] tensor, got {x.dtype} {tuple(x.shape)}")
        num_nodes = x.shape[0]
        if num_nodes == 0:
            raise RefineError(f"{name} graph: empty graph (x has no rows)")
        bad_rows = (~torch.isfinite(x)).any(dim=1)
        if bad_rows.any():
            first = bad_rows.nonzero()[:5].flatten().tolist()
            raise RefineError(f"{name} graph: x has {int(bad_rows.sum())} of {num_nodes} rows with NaN/inf "
                              f"values (first rows: {first})")
        for key in ("y", "train_mask", "test_mask"):
            value = getattr(data, key)
            if value.shape != (num_nodes,):
                raise RefineError(f"{name} graph: {key} has shape {tuple(value.shape)}, expected ({num_nodes},) "
                                  f"to match x")
        if data.train_mask.dtype != torch.bool or data.test_mask.dtype != torch.bool:
            raise RefineError(f"{name} graph: train_mask and test_mask must be bool tensors")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
            raise RefineError(f"{name} graph: edge_index must be an int64 [2, M] tensor, "
                              f"got {edge_index.dtype} {tuple(edge_index.shape)}")
        if edge_index.shape[1] == 0:
            raise RefineError(f"{name} graph: no edges; export the graphs again after pretraining")
        if int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes:
            raise RefineError(f"{name} graph: edge_index refers to nodes outside 0..{num_nodes - 1}")
        weight = getattr(data, "edge_weight", None)
        if weight is not None and weight.shape != (edge_index.shape[1],):
            raise RefineError(f"{name} graph: edge_weight has shape {tuple(weight.shape)}, "
                              f"expected ({edge_index.shape[1]},) to match edge_index")
    if teacher.x.shape[0] != student.x.shape[0]:
        raise RefineError(f"node counts differ between views: teacher graph has {teacher.x.shape[0]} nodes, "
                          f"student graph has {student.x.shape[0]}")
    if teacher.x.shape[1] != student.x.shape[1]:
        raise RefineError(f"feature widths differ between views: teacher {teacher.x.shape[1]}, "
                          f"student {student.x.shape[1]}; one encoder embeds both")
    for key in ("y", "train_mask", "test_mask"):
        if not torch.equal(getattr(teacher, key), getattr(student, key)):
            raise RefineError(f"teacher and student graphs disagree on {key}; they must describe the same nodes")
    if not teacher.train_mask.any():
        raise RefineError("teacher graph: train_mask selects no nodes")


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
    encoder = GNNEncoder(in_dim, kind=cfg.encoder, num_layers=cfg.num_layers, hidden_dim=cfg.hidden_dim,
                         jk=cfg.jk, dropout=cfg.dropout, residual=cfg.residual, norm=cfg.norm,
                         activation=cfg.activation, use_edge_weight=cfg.use_edge_weight)
    return GraphBYOL(encoder, projector_dim=cfg.projector_dim, predictor_dim=cfg.predictor_dim)


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
    if output not in ("concat", "teacher", "student", "mean"):
        raise ValueError(f"refine.output must be concat, teacher, student or mean, got {output!r}")

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
    epochs = progress_bar(range(start_epoch, cfg.epochs), desc="refine", total=cfg.epochs - start_epoch,
                          disable=None if progress else True)
    for epoch in epochs:
        started = time.perf_counter()
        if full_batch:
            pairs: Iterable[tuple[GraphView, ...]] = [prepared]
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
        if log_path is not None:
            append_jsonl(log_path, {"epoch": epoch, "loss": epoch_loss,
                                    "seconds": round(time.perf_counter() - started, 4)})
        done = epoch + 1
        if checkpoint_path is not None and done % checkpoint_every == 0 and done < cfg.epochs:
            atomic_save({"version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "epoch": done,
                         "losses": losses, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": rng_state(), "generator": generator.get_state()}, checkpoint_path)

    embeddings = embed_views(model, *views, output=cfg.output, full_batch=full_batch, device=device,
                             chunk_size=cfg.batch_size, progress=progress)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RefineResult(embeddings=embeddings, y=teacher.y.clone(), train_mask=teacher.train_mask.clone(),
                        test_mask=teacher.test_mask.clone(), num_train=int(teacher.train_mask.sum()),
                        losses=losses, state_dict=state)


def run_refine(run_dir: Path, cfg: Config, *, device: torch.device) -> Path:
    """Refine ``RUN/graphs/{teacher,student}.pt`` into ``RUN/refined.pt`` (+ ``RUN/refine_log.jsonl``)."""
    run_dir = Path(run_dir)
    paths = [run_dir / "graphs" / f"{name}.pt" for name in ("teacher", "student")]
    for path in paths:
        if not path.is_file():
            raise RefineError(f"graph file not found: {path}; it is written by `sslgraph pretrain` with "
                              f"method.name=graph, or by `sslgraph export-graphs` from a pretraining checkpoint")
    teacher, student = (load_graph(path) for path in paths)
    checkpoint_path = run_dir / "refine_checkpoint.pt"
    result = refine_graphs(teacher, student, cfg.refine, device=device, checkpoint_path=checkpoint_path,
                           log_path=run_dir / "refine_log.jsonl")
    out = run_dir / "refined.pt"
    atomic_save({"embeddings": result.embeddings, "y": result.y, "train_mask": result.train_mask,
                 "test_mask": result.test_mask, "num_train": result.num_train, "losses": result.losses,
                 "gnn_state": result.state_dict, "refine_config": dataclasses.asdict(cfg.refine)}, out)
    checkpoint_path.unlink(missing_ok=True)
    return out
