"""AdaSim plus a student bank and two kNN graphs (teacher and student streams), exported for refinement.

Each training step, every visited image gets ``E`` edges per stream to its ``E`` nearest other images in
that stream's bank (searched before the update). Every ``test_graph_every`` epochs each held-out image is
embedded clean by each stream and linked to its ``E`` nearest training images. An export of the accumulated
(FIFO) edges or of the bank features needs the held-out graph of the last ``V`` epochs (a node keeps its last
``V`` visits), so it is always built then, whatever ``test_graph_every`` says; an export of edges rebuilt from
clean features needs none of it, and then only the last epoch visits the held-out images (for the log; the
kNN monitor and the export reuse that embedding). At the end of training
(:meth:`GraphMethod.on_train_end`) each stream's graph is built as a PyG ``Data`` (see
:mod:`sslgraph.graph.export` for the edge convention) and handed to the context to be saved.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.graph.bank import MemoryBank
from sslgraph.graph.export import build_graph_data, rebuild_edges
from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self
from sslgraph.methods.adasim import AdaSim, visit_bank
from sslgraph.methods.hooks import Split, Stream, TrainContext

STREAMS: tuple[Stream, Stream] = ("teacher", "student")


def edge_same_class(slots: Tensor, *, node_labels: Tensor, neighbour_labels: Tensor) -> float | None:
    """Share of filled FIFO slots (so counted with multiplicity) whose neighbour has the node's label."""
    filled = slots >= 0
    if not bool(filled.any()):
        return None
    node = node_labels.view(-1, *([1] * (slots.dim() - 1))).expand_as(slots)
    same = neighbour_labels[slots.clamp_min(0)] == node
    return float(same[filled].float().mean())


class GraphMethod(AdaSim):
    """Teacher and student banks, a training kNN graph and a held-out graph per stream."""

    name = "graph"
    keeps_graphs = True

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        me = cfg.method
        if me.topk < me.edges_per_node + 1:
            raise ConfigError(f"method.topk: must be >= method.edges_per_node + 1 = {me.edges_per_node + 1} (the "
                              f"node itself is among its top-k), got {me.topk}")

    def __init__(self, cfg: Config, *, num_train: int, num_test: int, embed_dim: int,
                 train_labels: Tensor, test_labels: Tensor, device: torch.device) -> None:
        super().__init__(cfg, num_train=num_train, num_test=num_test, embed_dim=embed_dim,
                         train_labels=train_labels, test_labels=test_labels, device=device)
        me = cfg.method
        # Bootstrapping reads the teacher's window only, so the student bank keeps none, and its lists feed only
        # the student graph's E edges: E + 1 entries (the node itself may be among them) give the edges ``topk``
        # would (exactly where the search is exact), for a cheaper search (fewer candidates to pick and re-score).
        self.student_bank = self._new_bank(vote_window=0, topk=me.edges_per_node + 1)
        self.train_graphs = {stream: KNNGraph(num_train, edges_per_node=me.edges_per_node, visits=me.vote_window,
                                              device=device) for stream in STREAMS}
        self.test_graphs = {stream: KNNGraph(num_test, edges_per_node=me.edges_per_node, visits=me.vote_window,
                                             neighbour_nodes=num_train, device=device) for stream in STREAMS}
        self.test_features: dict[str, Tensor | None] = {stream: None for stream in STREAMS}

    @property
    def banks(self) -> dict[str, MemoryBank]:
        return {"teacher": self.teacher_bank, "student": self.student_bank}

    def on_train_start(self, ctx: TrainContext) -> None:
        if self.cfg.method.init_bank_pass:
            for stream in STREAMS:
                self.banks[stream].fill(ctx.embed(stream, "train"))

    def after_step(self, *, indices: Tensor, teacher_feats: Tensor, student_feats: Tensor) -> None:
        edges = self.cfg.method.edges_per_node
        among = None
        for stream, feats in (("teacher", teacher_feats), ("student", student_feats)):
            visit = visit_bank(self.banks[stream], indices=indices, feats=feats, among=among)
            neighbours, sims = nearest_non_self(visit.nn_idx, visit.nn_sim, visit.indices, edges)
            self.train_graphs[stream].add(visit.indices, neighbours, sims)
            if self.cfg.method.student_search == "teacher":
                among = visit.candidates  # the student ranks the teacher's candidates in its own bank

    def visit_test(self, ctx: TrainContext, stream: Stream) -> None:
        """Embed the held-out images clean and give each its ``E`` nearest training nodes in ``stream``'s bank."""
        feats = ctx.embed(stream, "test").to(self.device, torch.float32)
        sim, idx = self.banks[stream].search(feats)
        edges = self.cfg.method.edges_per_node
        nodes = torch.arange(self.num_test, device=self.device)
        self.test_graphs[stream].add(nodes, idx[:, :edges], sim[:, :edges])
        self.test_features[stream] = feats

    def on_epoch_end(self, ctx: TrainContext, *, epoch: int) -> dict[str, float]:
        stats = super().on_epoch_end(ctx, epoch=epoch)
        me = self.cfg.method
        every = me.test_graph_every
        # ctx.epochs, not optim.epochs: under a budget the run ends when the budget does.
        in_last_window = epoch >= ctx.epochs - (me.vote_window if self.exports_held_out_visits else 1)
        train_labels = self.train_labels.to(self.device)
        test_labels = self.test_labels.to(self.device)
        for stream in STREAMS:
            if in_last_window or (every and (epoch + 1) % every == 0):
                self.visit_test(ctx, stream)
            shares = {
                f"{stream}_edge_same_class": edge_same_class(
                    self.train_graphs[stream].slots, node_labels=train_labels, neighbour_labels=train_labels),
                f"{stream}_test_edge_same_class": edge_same_class(
                    self.test_graphs[stream].slots, node_labels=test_labels, neighbour_labels=train_labels),
            }
            stats.update({key: value for key, value in shares.items() if value is not None})
        return stats

    @property
    def exports_held_out_visits(self) -> bool:
        """Whether the export reads what the held-out visits leave: their FIFO edges or their features."""
        return self.cfg.method.export_features == "bank" or self.cfg.method.export_edges == "fifo"

    def on_train_end(self, ctx: TrainContext) -> None:
        ctx.save_graphs(self.build_graphs(ctx))

    def final_embeddings(self) -> set[tuple[Stream, Split]]:
        """The last epoch's held-out visits embed the held-out images of both streams; an export of clean
        features embeds the training images too."""
        splits: tuple[Split, ...] = ("train", "test") if self.cfg.method.export_features == "clean" else ("test",)
        return {(stream, split) for stream in STREAMS for split in splits}

    def build_graphs(self, ctx: TrainContext) -> dict[Stream, Data]:
        """Each stream's graph over training and held-out nodes, as configured by ``cfg.method.export_*``."""
        me = self.cfg.method
        graphs: dict[Stream, Data] = {}
        for stream in STREAMS:
            # Bank features need the latest held-out pass; accumulated edges need a held-out graph at all.
            if self.exports_held_out_visits and self.test_features[stream] is None:
                self.visit_test(ctx, stream)
            if me.export_features == "clean":
                train_x, test_x = ctx.embed(stream, "train"), ctx.embed(stream, "test")
            else:
                train_x, test_x = self.banks[stream].features, self.test_features[stream]
            train_x, test_x = train_x.to(self.device), test_x.to(self.device)
            train_graph, test_graph = self.train_graphs[stream], self.test_graphs[stream]
            if me.export_edges == "rebuilt":
                train_graph, test_graph = rebuild_edges(torch.cat([train_x, test_x]), self.num_train,
                                                        k_edges=me.edges_per_node, chunk_size=me.bank_chunk_size,
                                                        search_precision=me.bank_search_precision,
                                                        search_dim=self.search_dim)
            graphs[stream] = build_graph_data(train_x=train_x, test_x=test_x, train_graph=train_graph,
                                              test_graph=test_graph, train_y=self.train_labels,
                                              test_y=self.test_labels, edge_weight=me.export_edge_weight)
        return graphs

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["student_bank"] = self.student_bank.state_dict()
        for stream in STREAMS:
            state[f"{stream}_graph"] = self.train_graphs[stream].state_dict()
            state[f"{stream}_test_graph"] = self.test_graphs[stream].state_dict()
            if self.test_features[stream] is not None:
                state[f"{stream}_test_features"] = self.test_features[stream]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # Checkpoints written before the student bank kept E + 1 entries hold ``topk``-long lists, sorted best
        # first: their leading columns are this bank's lists (shorter ones stay shorter and are refused).
        length = self.student_bank.topk
        self.student_bank.load_state_dict({name: value[..., :length] if name in MemoryBank.LIST_BUFFERS else value
                                           for name, value in state["student_bank"].items()})
        for stream in STREAMS:
            self.train_graphs[stream].load_state_dict(state[f"{stream}_graph"])
            self.test_graphs[stream].load_state_dict(state[f"{stream}_test_graph"])
            features = state.get(f"{stream}_test_features")
            self.test_features[stream] = None if features is None else features.to(self.device)
