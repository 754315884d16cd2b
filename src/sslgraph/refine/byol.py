"""BYOL over two graph views: the teacher kNN graph and the student kNN graph of the same nodes.

The online branch (encoder E, projector P, predictor Q) predicts the target branch's projection of the
*other* view; the target branch (E_t, P_t) is an exponential moving average of the online one and never
receives gradients. The two views share the node set, so node i of one view is the positive of node i of
the other.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslgraph.refine.collapse import batch_mean_cosine
from sslgraph.refine.encoders import GNNEncoder


class GraphView(NamedTuple):
    """Node features and edges of one view; ``prepared`` when ``edge_index`` is the output of the encoder's
    :meth:`~sslgraph.refine.encoders.GNNEncoder.prepare_graph` (done once for a fixed full graph)."""

    x: Tensor
    edge_index: Tensor
    edge_weight: Tensor | None
    prepared: bool = False
    # Set for a neighbour-sampled subgraph (node counts of seeds, hop 1, ...): only seeds are embedded.
    nodes_per_hop: tuple[int, ...] | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device) -> GraphView:
        weight = None if self.edge_weight is None else self.edge_weight.to(device)
        return GraphView(self.x.to(device), self.edge_index.to(device), weight, self.prepared, self.nodes_per_hop)


def variance_covariance_loss(h: Tensor, *, eps: float = 1e-4) -> Tensor:
    """VICReg's anti-collapse terms on one batch of embeddings ``[N, d]``: the mean hinge ``relu(1 - std)``
    over dimensions plus the sum of squared off-diagonal covariances divided by ``d``. Zero for whitened
    embeddings whose every dimension has std >= 1; large when the rows collapse onto a point or a line."""
    if h.shape[0] < 2:
        return h.new_zeros(())
    centred = h - h.mean(dim=0)
    std = (centred.var(dim=0) + eps).sqrt()
    variance = F.relu(1.0 - std).mean()
    cov = centred.T @ centred / (h.shape[0] - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return variance + off_diagonal.pow(2).sum() / h.shape[1]


def spread_loss(h: Tensor, x: Tensor) -> Tensor:
    """``relu(cos(h) - cos(x))^2`` with ``cos`` the batch mean pairwise cosine: zero while the embeddings are
    spread at least as widely as the input features ``x``, growing as they fold onto a common direction."""
    with torch.no_grad():
        target = batch_mean_cosine(x.float())
    return F.relu(batch_mean_cosine(h) - target).pow(2)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Per-row ``2 - 2 cos(p, z)``: 0 for aligned vectors, 2 for orthogonal ones, 4 for opposite ones."""
    return 2.0 - 2.0 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(dim=-1)


class GraphBYOL(nn.Module):
    """Online encoder + projector (Linear-ReLU) + predictor (Linear-BatchNorm-ReLU); EMA target of E and P."""

    def __init__(self, encoder: GNNEncoder, *, projector_dim: int, predictor_dim: int,
                 variance_weight: float = 0.0, spread_weight: float = 0.0) -> None:
        super().__init__()
        if variance_weight < 0 or spread_weight < 0:
            raise ValueError(f"GraphBYOL: variance_weight and spread_weight must be >= 0, got {variance_weight}, "
                             f"{spread_weight}")
        # Weights of :func:`variance_covariance_loss` and :func:`spread_loss` on the online encoder's
        # embeddings of both views.
        self.variance_weight = float(variance_weight)
        self.spread_weight = float(spread_weight)
        # The online embeddings of view 1 in the last forward pass (detached), for collapse monitoring.
        self.last_embeddings: Tensor | None = None
        if predictor_dim != projector_dim:
            raise ValueError(f"GraphBYOL: predictor_dim ({predictor_dim}) must equal projector_dim "
                             f"({projector_dim}): the prediction is compared with the target projection")
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(encoder.out_dim, projector_dim), nn.ReLU())
        self.predictor = nn.Sequential(nn.Linear(projector_dim, predictor_dim), nn.BatchNorm1d(predictor_dim),
                                       nn.ReLU())
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (the target ones follow by EMA)."""
        return [*self.encoder.parameters(), *self.projector.parameters(), *self.predictor.parameters()]

    def prepare(self, view: GraphView) -> GraphView:
        """Normalise a fixed view's graph once so every forward pass over it can skip that step."""
        if view.prepared:
            return view
        edge_index, edge_weight = self.encoder.prepare_graph(view.edge_index, view.edge_weight, view.num_nodes)
        return GraphView(view.x, edge_index, edge_weight, prepared=True)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * online`` for E and P."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        target = [*self.target_encoder.parameters(), *self.target_projector.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - momentum)

    def _encode(self, encoder: GNNEncoder, view: GraphView) -> Tensor:
        return encoder(view.x, view.edge_index, view.edge_weight, prepared=view.prepared,
                       nodes_per_hop=view.nodes_per_hop)

    def forward(self, view1: GraphView, view2: GraphView, *, nodes: Tensor | None = None) -> Tensor:
        """Symmetric BYOL loss, averaged over ``nodes`` (a boolean mask or indices into the embedded rows;
        all rows when None). Row i of both views must be the same node."""
        h1, h2 = self._encode(self.encoder, view1), self._encode(self.encoder, view2)
        if h1.shape[0] != h2.shape[0]:
            raise ValueError(f"GraphBYOL: the views embed {h1.shape[0]} and {h2.shape[0]} nodes; they must "
                             "describe the same nodes in the same order")
        with torch.no_grad():
            t1, t2 = self._encode(self.target_encoder, view1), self._encode(self.target_encoder, view2)
        if nodes is not None:
            h1, h2, t1, t2 = h1[nodes], h2[nodes], t1[nodes], t2[nodes]
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))
        with torch.no_grad():
            z1, z2 = self.target_projector(t1), self.target_projector(t2)
        self.last_embeddings = h1.detach()
        loss = (byol_loss(p1, z2) + byol_loss(p2, z1)).mean()
        if self.variance_weight > 0:
            loss = loss + self.variance_weight * (variance_covariance_loss(h1) + variance_covariance_loss(h2))
        if self.spread_weight > 0:
            # The embedded rows are ``nodes`` of a full view, or the first rows of a sampled subgraph (its seeds).
            def inputs(view: GraphView, h: Tensor) -> Tensor:
                return view.x[nodes] if nodes is not None else view.x[:h.shape[0]]

            loss = loss + self.spread_weight * (spread_loss(h1, inputs(view1, h1)) + spread_loss(h2, inputs(view2, h2)))
        return loss

    @torch.no_grad()
    def embed(self, view: GraphView) -> Tensor:
        """E(view) with the online encoder in eval mode (the refined node embedding)."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            return self._encode(self.encoder, view)
        finally:
            self.encoder.train(was_training)
