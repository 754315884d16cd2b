from __future__ import annotations

import itertools

import pytest
import torch

from sslgraph.refine.encoders import ENCODER_KINDS, JK_MODES, GNNEncoder


def random_graph(num_nodes: int = 12, num_edges: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    weight = torch.randint(1, 4, (edge_index.shape[1],), generator=gen).float()
    return edge_index, weight


@pytest.mark.parametrize(("kind", "jk"), list(itertools.product(ENCODER_KINDS, JK_MODES)))
def test_shapes_forward_backward(kind: str, jk: str) -> None:
    torch.manual_seed(0)
    enc = GNNEncoder(6, kind=kind, num_layers=3, hidden_dim=8, jk=jk)
    edge_index, weight = random_graph()
    x = torch.randn(12, 6)
    out = enc(x, edge_index, weight)
    assert enc.out_dim == (24 if jk == "cat" else 8)
    assert out.shape == (12, enc.out_dim)
    out.square().sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_options_norm_activation_residual_dropout(kind: str) -> None:
    torch.manual_seed(0)
    enc = GNNEncoder(8, kind=kind, num_layers=3, hidden_dim=8, jk="max", dropout=0.5, residual=True,
                     norm="batch", activation="prelu")
    edge_index, weight = random_graph()
    out = enc(torch.randn(12, 8), edge_index, weight)
    out.sum().backward()
    assert out.shape == (12, 8)
    enc.eval()
    x = torch.randn(12, 8)
    assert torch.equal(enc(x, edge_index, weight), enc(x, edge_index, weight))


def path_graph(num_nodes: int) -> torch.Tensor:
    """Edges (i + 1) -> i: node i aggregates from i + 1, so node 0 sees node L after L layers."""
    upstream = torch.arange(1, num_nodes)
    return torch.stack([upstream, upstream - 1])


@pytest.mark.parametrize("kind", ENCODER_KINDS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_receptive_field_is_num_layers_hops(kind: str, layers: int) -> None:
    torch.manual_seed(1)
    enc = GNNEncoder(4, kind=kind, num_layers=layers, hidden_dim=8, jk="max", activation="relu").eval()
    edge_index = path_graph(layers + 3)
    x = torch.randn(layers + 3, 4)
    base = enc(x, edge_index)[0]
    inside, outside = x.clone(), x.clone()
    inside[layers] += 5 * torch.randn(4)
    outside[layers + 1] += 5 * torch.randn(4)
    assert not torch.allclose(enc(inside, edge_index)[0], base)
    assert torch.equal(enc(outside, edge_index)[0], base)


def test_gcn_layer_matches_dense_formula() -> None:
    """out = D^-1/2 (A + I) D^-1/2 X W + b with A[i, j] = weight of edge j -> i and D the row sums."""
    torch.manual_seed(0)
    enc = GNNEncoder(5, kind="gcn", num_layers=1, hidden_dim=3, jk="last")
    edge_index, weight = random_graph(num_nodes=7, num_edges=20)
    x = torch.randn(7, 5)
    adj = torch.zeros(7, 7).index_put_((edge_index[1], edge_index[0]), weight, accumulate=True) + torch.eye(7)
    d = adj.sum(dim=1).rsqrt()
    conv = enc.convs[0]
    expected = (d[:, None] * adj * d[None, :]) @ (x @ conv.lin.weight.T) + conv.bias
    torch.testing.assert_close(enc(x, edge_index, weight), expected)
    unweighted = GNNEncoder(5, kind="gcn", num_layers=1, hidden_dim=3, jk="last", use_edge_weight=False)
    unweighted.load_state_dict(enc.state_dict())
    adj1 = torch.zeros(7, 7).index_put_((edge_index[1], edge_index[0]), torch.ones_like(weight), accumulate=True)
    adj1 += torch.eye(7)
    d1 = adj1.sum(dim=1).rsqrt()
    torch.testing.assert_close(unweighted(x, edge_index, weight),
                               (d1[:, None] * adj1 * d1[None, :]) @ (x @ conv.lin.weight.T) + conv.bias)


def test_edge_weights_used_by_gcn_and_ignored_by_sage() -> None:
    torch.manual_seed(0)
    edge_index, weight = random_graph()
    x = torch.randn(12, 6)
    gcn = GNNEncoder(6, kind="gcn", num_layers=2, hidden_dim=8)
    sage = GNNEncoder(6, kind="sage", num_layers=2, hidden_dim=8)
    assert not torch.allclose(gcn(x, edge_index, weight), gcn(x, edge_index, 3 * weight + 1))
    assert torch.equal(sage(x, edge_index, weight), sage(x, edge_index, 3 * weight + 1))


def test_jumping_knowledge_combines_layer_outputs() -> None:
    torch.manual_seed(0)
    edge_index, weight = random_graph()
    x = torch.randn(12, 6)
    encoders = {jk: GNNEncoder(6, kind="gcn", num_layers=2, hidden_dim=8, jk=jk) for jk in JK_MODES}
    for enc in encoders.values():
        enc.load_state_dict(encoders["last"].state_dict())
    ei, w = encoders["last"].prepare_graph(edge_index, weight, 12)
    h1 = encoders["last"].layer(0, x, x, ei, w)
    h2 = encoders["last"].layer(1, h1, x, ei, w)
    torch.testing.assert_close(encoders["last"](x, edge_index, weight), h2)
    torch.testing.assert_close(encoders["max"](x, edge_index, weight), torch.maximum(h1, h2))
    torch.testing.assert_close(encoders["mean"](x, edge_index, weight), (h1 + h2) / 2)
    torch.testing.assert_close(encoders["cat"](x, edge_index, weight), torch.cat([h1, h2], dim=1))


def test_invalid_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="kind"):
        GNNEncoder(4, kind="gcnn")
    with pytest.raises(ValueError, match="jk"):
        GNNEncoder(4, jk="sum")
    with pytest.raises(ValueError, match="dropout"):
        GNNEncoder(4, dropout=1.0)


@pytest.mark.parametrize("kind", ENCODER_KINDS)
@pytest.mark.parametrize("jk", ["max", "cat"])
def test_sampled_forward_equals_full_forward_on_seed_rows(kind: str, jk: str) -> None:
    """Hop-ordered subgraph (3 seeds, 5 hop-1, 7 hop-2 nodes): edges into seeds come from hops 0-1, edges into
    hop-1 nodes from hops 0-2, nothing enters hop 2."""
    gen = torch.Generator().manual_seed(4)
    targets = torch.randint(0, 8, (40,), generator=gen)
    sources = torch.where(targets < 3, torch.randint(0, 8, (40,), generator=gen),
                          torch.randint(0, 15, (40,), generator=gen))
    keep = sources != targets
    edge_index, weight = torch.stack([sources, targets])[:, keep], torch.rand(int(keep.sum()), generator=gen) + 0.5
    torch.manual_seed(0)
    enc = GNNEncoder(4, kind=kind, num_layers=2, hidden_dim=8, jk=jk, norm="layer", activation="relu").eval()
    x = torch.randn(15, 4)
    expected = enc(x, edge_index, weight)[:3]
    torch.testing.assert_close(enc(x, edge_index, weight, nodes_per_hop=(3, 5, 7)), expected)
    with pytest.raises(ValueError, match="nodes_per_hop"):
        enc(x, edge_index, weight, nodes_per_hop=(3, 12))


def test_self_term_alpha_by_hand() -> None:
    """One GCN layer with alpha: out = (1 - alpha) * GCN(x) + alpha * x (equal widths, no projection)."""
    torch.manual_seed(0)
    plain = GNNEncoder(4, kind="gcn", num_layers=1, hidden_dim=4, jk="last")
    mixed = GNNEncoder(4, kind="gcn", num_layers=1, hidden_dim=4, jk="last", alpha=0.3)
    mixed.load_state_dict(plain.state_dict())
    edge_index, weight = random_graph(num_nodes=6, num_edges=14)
    x = torch.randn(6, 4)
    assert torch.allclose(mixed(x, edge_index, weight), 0.7 * plain(x, edge_index, weight) + 0.3 * x, atol=1e-6)
    # widths differ: h_0 is a learnt projection of the input
    projected = GNNEncoder(3, kind="sage", num_layers=2, hidden_dim=5, alpha=0.5)
    assert projected.self_proj is not None and projected(torch.randn(6, 3), edge_index).shape == (6, 5)
    assert GNNEncoder(3, kind="gcnii", num_layers=2, hidden_dim=5, alpha=0.25).convs[0].alpha == 0.25
    with pytest.raises(ValueError, match="alpha"):
        GNNEncoder(3, kind="gcn", alpha=1.0)
    with pytest.raises(ValueError, match="kind"):
        GNNEncoder(3, kind="appnp")
