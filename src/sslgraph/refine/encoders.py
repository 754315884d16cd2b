"""GNN encoders built from PyTorch Geometric layers, with jumping knowledge over the layer outputs.

Edge convention: ``edge_index`` is ``[source, target]`` and a node aggregates the messages on its incoming
edges, so with the exported graphs each node reads from its own nearest neighbours. Depth = hops: the output
of a node depends on nodes at most ``num_layers`` edges upstream.

Layers: GCNConv; SAGEConv (mean); GATConv with one attention head (hidden_dim wide); GINConv with a
Linear-ReLU-Linear MLP and a learnt epsilon; GCN2Conv after a Linear projection to hidden_dim (theta 0.5).

Self term: ``alpha`` is the share of a node's own initial representation ``h_0`` put back after every layer,
``h_{l+1} = (1 - alpha) * layer_l(h_l) + alpha * h_0`` (APPNP's teleport / GCNII's initial residual; GCNII
takes it as its own ``alpha``). ``h_0`` is the input, or its projection to ``hidden_dim`` by a learnt linear
map when the widths differ. ``alpha = 0`` is the plain stack; with ``gcn_norm``'s unit self-loop and ``k``
in-edges of weight ``w`` a GCN layer alone keeps only about ``1 / (1 + k w)`` of the node's own feature.

Edge weights (the multiplicity of a kNN edge) are used by GCN and GCNII only. GAT learns its own
weights through attention, and GraphSAGE and GIN treat the graph as unweighted (a repeated edge counts once).

Message passing: GCN, GCNII, GraphSAGE and GIN aggregate with a sparse CSR adjacency (rows = targets), i.e. a
sparse-dense matrix product, which avoids materialising one message per edge (at 60k nodes x 15 edges x 768
channels that tensor alone is ~3 GB and the product is several times faster on CPU); GAT needs per-edge
attention and keeps the edge list.

The encoder exposes its pieces (:meth:`GNNEncoder.normalize_edges`, :meth:`GNNEncoder.adjacency`,
:meth:`GNNEncoder.input_features`, :meth:`GNNEncoder.layer`, :meth:`GNNEncoder.jump`) so that large graphs can
be embedded layer by layer in chunks of nodes with exactly the same arithmetic as :meth:`GNNEncoder.forward`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCN2Conv, GCNConv, GINConv, JumpingKnowledge, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from sslgraph.choices import Activation, EncoderKind, JKMode, NormKind, options

# The trained encoders; ``appnp`` (parameter-free propagation, :mod:`sslgraph.refine.propagate`) has no
# GNNEncoder.
PARAMETER_FREE_KINDS = ("appnp",)
ENCODER_KINDS = tuple(k for k in options(EncoderKind) if k not in PARAMETER_FREE_KINDS)
JK_MODES = options(JKMode)
NORMS = options(NormKind)
ACTIVATIONS = options(Activation)
# GCNII's identity-mapping strength (the value its authors use); its initial residual is ``alpha``.
GCNII_ALPHA = 0.1
GCNII_THETA = 0.5


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"GNNEncoder: {name} must be one of {', '.join(choices)}, got {value!r}")


def _activation(kind: str) -> nn.Module:
    return {"none": nn.Identity, "relu": nn.ReLU, "prelu": nn.PReLU, "gelu": nn.GELU}[kind]()


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    if kind == "layer":
        return nn.LayerNorm(dim)
    return nn.Identity()


class GNNEncoder(nn.Module):
    """A stack of message-passing layers whose outputs are combined by jumping knowledge.

    Per layer: dropout on the input (all but the first layer), convolution, identity skip when ``residual``
    and the widths match, then normalisation and activation between layers (not after the last one).
    ``jk`` combines the per-layer outputs: ``last``, element-wise ``max``, ``cat`` or ``mean``.
    GCN and GCNII normalise the adjacency once per graph (:meth:`prepare_graph`) instead of once per layer.
    """

    def __init__(self, in_dim: int, *, kind: str = "gcn", num_layers: int = 2, hidden_dim: int = 768,
                 jk: str = "max", dropout: float = 0.0, residual: bool = False, norm: str = "none",
                 activation: str = "none", use_edge_weight: bool = True, alpha: float | None = None) -> None:
        super().__init__()
        _check_choice("kind", kind, ENCODER_KINDS)
        _check_choice("jk", jk, JK_MODES)
        _check_choice("norm", norm, NORMS)
        _check_choice("activation", activation, ACTIVATIONS)
        if in_dim < 1 or num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"GNNEncoder: in_dim, num_layers and hidden_dim must be >= 1, "
                             f"got {in_dim}, {num_layers}, {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GNNEncoder: dropout must be in [0, 1), got {dropout}")
        # None: GCNII's own 0.1, no self term for the other kinds.
        if alpha is None:
            alpha = GCNII_ALPHA if kind == "gcnii" else 0.0
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"GNNEncoder: alpha (self term) must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.kind = kind
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.jk = jk
        self.residual = residual
        self.use_edge_weight = use_edge_weight and kind in ("gcn", "gcnii")
        self.out_dim = hidden_dim * num_layers if jk == "cat" else hidden_dim

        self.input_proj = nn.Linear(in_dim, hidden_dim) if kind == "gcnii" else None
        self.input_act = _activation(activation) if kind == "gcnii" else None
        # The self term's h_0 at the hidden width (GCNII applies its own initial residual inside the layer).
        self.self_proj = None
        if kind != "gcnii" and self.alpha > 0 and in_dim != hidden_dim:
            self.self_proj = nn.Linear(in_dim, hidden_dim, bias=False)
        first_in = hidden_dim if kind == "gcnii" else in_dim
        self.convs = nn.ModuleList(
            self._conv(kind, first_in if i == 0 else hidden_dim, hidden_dim, layer=i + 1, alpha=self.alpha)
            for i in range(num_layers)
        )
        self.norms = nn.ModuleList(_norm(norm, hidden_dim) for _ in range(num_layers - 1))
        self.acts = nn.ModuleList(_activation(activation) for _ in range(num_layers - 1))
        self.dropout = nn.Dropout(dropout)
        self.jk_module = JumpingKnowledge(jk) if jk in ("max", "cat") else None

    @staticmethod
    def _conv(kind: str, in_dim: int, out_dim: int, *, layer: int, alpha: float = GCNII_ALPHA) -> nn.Module:
        if kind == "gcn":
            return GCNConv(in_dim, out_dim, normalize=False)
        if kind == "sage":
            return SAGEConv(in_dim, out_dim)
        if kind == "gat":
            return GATConv(in_dim, out_dim, heads=1)
        if kind == "gin":
            mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))
            return GINConv(mlp, train_eps=True)
        return GCN2Conv(out_dim, alpha=alpha, theta=GCNII_THETA, layer=layer, normalize=False)

    def normalize_edges(self, edge_index: Tensor, edge_weight: Tensor | None,
                        num_nodes: int) -> tuple[Tensor, Tensor | None]:
        """GCN/GCNII: self-loops + symmetric degree normalisation; other kinds: drop the weights."""
        if self.kind not in ("gcn", "gcnii"):
            return edge_index, None
        weight = edge_weight if self.use_edge_weight else None
        return gcn_norm(edge_index, weight, num_nodes, add_self_loops=True)

    def adjacency(self, edge_index: Tensor, edge_weight: Tensor | None,
                  num_nodes: int) -> tuple[Tensor, Tensor | None]:
        """What :meth:`layer` consumes from normalised edges: a sparse CSR adjacency (rows = targets), or the
        edge list itself for GAT."""
        if self.kind == "gat":
            return edge_index, None
        return to_torch_csr_tensor(edge_index.flip(0), edge_weight, size=(num_nodes, num_nodes)), None

    def prepare_graph(self, edge_index: Tensor, edge_weight: Tensor | None,
                      num_nodes: int) -> tuple[Tensor, Tensor | None]:
        """Normalisation and adjacency in one step; done once for a graph that does not change."""
        return self.adjacency(*self.normalize_edges(edge_index, edge_weight, num_nodes), num_nodes)

    def input_features(self, x: Tensor) -> Tensor:
        """The per-node input of layer 0 (GCNII projects to the hidden width first; it is also x_0)."""
        if self.input_proj is None:
            return x
        return self.input_act(self.input_proj(x))

    def layer(self, index: int, h: Tensor, x0: Tensor, edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
        """Apply layer ``index`` to ``h`` over a graph from :meth:`prepare_graph`."""
        inp = self.dropout(h) if index > 0 else h
        conv = self.convs[index]
        if self.kind == "gcnii":
            out = conv(inp, x0, edge_index, edge_weight)
        elif self.kind == "gcn":
            out = conv(inp, edge_index, edge_weight)
        else:
            out = conv(inp, edge_index)
        if self.residual and out.shape[-1] == h.shape[-1]:
            out = out + h
        if self.alpha > 0 and self.kind != "gcnii":
            own = x0 if self.self_proj is None else self.self_proj(x0)
            out = (1.0 - self.alpha) * out + self.alpha * own
        if index < self.num_layers - 1:
            out = self.acts[index](self.norms[index](out))
        return out

    def jump(self, outputs: list[Tensor]) -> Tensor:
        if self.jk == "last":
            return outputs[-1]
        if self.jk == "mean":
            return torch.stack(outputs).mean(dim=0)
        return self.jk_module(outputs)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                prepared: bool = False, nodes_per_hop: tuple[int, ...] | None = None) -> Tensor:
        """Embed every node; ``prepared=True`` when the graph already went through :meth:`prepare_graph`.

        With ``nodes_per_hop`` (a sampled subgraph whose nodes are ordered seeds, hop 1, hop 2, ...) only the
        seed rows are returned, and layer ``i`` computes only the rows that later layers still read.
        """
        if nodes_per_hop is not None:
            return self._forward_sampled(x, edge_index, edge_weight, nodes_per_hop)
        if not prepared:
            edge_index, edge_weight = self.prepare_graph(edge_index, edge_weight, x.shape[0])
        h = x0 = self.input_features(x)
        outputs = []
        for index in range(self.num_layers):
            h = self.layer(index, h, x0, edge_index, edge_weight)
            outputs.append(h)
        return self.jump(outputs)

    def _forward_sampled(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None,
                         nodes_per_hop: tuple[int, ...]) -> Tensor:
        """Layer ``i`` of ``L`` updates the nodes within ``L - 1 - i`` hops of the seeds from those within
        ``L - i`` hops; normalisation uses the whole subgraph, so seed outputs equal a full forward pass's."""
        if len(nodes_per_hop) != self.num_layers + 1:
            raise ValueError(f"GNNEncoder: nodes_per_hop needs num_layers + 1 = {self.num_layers + 1} counts, "
                             f"got {len(nodes_per_hop)}")
        within = torch.tensor(nodes_per_hop).cumsum(0).tolist()
        edge_index, edge_weight = self.normalize_edges(edge_index, edge_weight, x.shape[0])
        h = x0 = self.input_features(x)
        outputs = []
        for index in range(self.num_layers):
            num_nodes, num_targets = within[self.num_layers - index], within[self.num_layers - 1 - index]
            keep = edge_index[1] < num_targets
            weight = None if edge_weight is None else edge_weight[keep]
            graph, weight = self.adjacency(edge_index[:, keep], weight, num_nodes)
            h = self.layer(index, h[:num_nodes], x0[:num_nodes], graph, weight)
            outputs.append(h[:nodes_per_hop[0]])
        return self.jump(outputs)
