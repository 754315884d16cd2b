from __future__ import annotations

import math

import pytest
import torch

from sslgraph.refine.byol import GraphBYOL, GraphView, byol_loss, spread_loss
from sslgraph.refine.collapse import batch_mean_cosine, mean_pairwise_cosine
from sslgraph.refine.encoders import GNNEncoder


def test_byol_loss_hand_values() -> None:
    p = torch.tensor([[1.0, 0.0], [2.0, 3.0], [1.0, 1.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 1.0], [4.0, 6.0], [1.0, 0.0], [-3.0, 0.0]])
    expected = torch.tensor([2.0, 0.0, 2.0 - math.sqrt(2.0), 4.0])
    torch.testing.assert_close(byol_loss(p, z), expected)


def make_model(seed: int = 0) -> GraphBYOL:
    torch.manual_seed(seed)
    encoder = GNNEncoder(5, kind="gcn", num_layers=2, hidden_dim=6, jk="max")
    return GraphBYOL(encoder, projector_dim=4, predictor_dim=4)


def make_views(num_nodes: int = 10) -> tuple[GraphView, GraphView]:
    gen = torch.Generator().manual_seed(3)
    views = []
    for _ in range(2):
        edge_index = torch.randint(0, num_nodes, (2, 30), generator=gen)
        views.append(GraphView(torch.randn(num_nodes, 5, generator=gen), edge_index, torch.ones(30)))
    return views[0], views[1]


def test_update_target_is_ema_of_online() -> None:
    model = make_model()
    online = [p.detach().clone() for p in [*model.encoder.parameters(), *model.projector.parameters()]]
    with torch.no_grad():
        for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]:
            p.copy_(torch.randn_like(p))
    target = [p.detach().clone() for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]]
    model.update_target(0.9)
    updated = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    assert len(updated) == len(online) > 0
    for new, old, src in zip(updated, target, online):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)
    model.update_target(0.0)
    for new, src in zip(updated, online):
        torch.testing.assert_close(new, src)


def test_forward_matches_manual_symmetric_loss_and_target_gets_no_gradient() -> None:
    model = make_model()
    v1, v2 = make_views()
    nodes = torch.tensor([0, 2, 3, 7])
    loss = model(v1, v2, nodes=nodes)
    loss.backward()

    def online(view: GraphView) -> torch.Tensor:
        return model.predictor(model.projector(model.encoder(view.x, view.edge_index, view.edge_weight)[nodes]))

    def target(view: GraphView) -> torch.Tensor:
        return model.target_projector(model.target_encoder(view.x, view.edge_index, view.edge_weight)[nodes])

    expected = (byol_loss(online(v1), target(v2)) + byol_loss(online(v2), target(v1))).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model(v2, v1, nodes=nodes), loss)
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.online_parameters())


def test_prepared_views_give_the_same_loss() -> None:
    model = make_model()
    v1, v2 = make_views()
    torch.testing.assert_close(model(model.prepare(v1), model.prepare(v2)), model(v1, v2))


def test_embed_uses_online_encoder_in_eval_mode() -> None:
    torch.manual_seed(0)
    encoder = GNNEncoder(5, kind="gcn", num_layers=2, hidden_dim=6, dropout=0.5)
    model = GraphBYOL(encoder, projector_dim=4, predictor_dim=4).train()
    v1, _ = make_views()
    out = model.embed(v1)
    assert model.encoder.training
    encoder.eval()
    torch.testing.assert_close(out, encoder(v1.x, v1.edge_index, v1.edge_weight))


def test_predictor_width_must_match_projector() -> None:
    with pytest.raises(ValueError, match="predictor_dim"):
        GraphBYOL(GNNEncoder(5, hidden_dim=6), projector_dim=4, predictor_dim=8)


def test_batch_mean_cosine_hand_values_and_the_collapse_statistic() -> None:
    # Rows (1, 0), (0, 1), (1, 1): cosines 0, 1/sqrt(2), 1/sqrt(2) -> mean sqrt(2) / 3.
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    torch.testing.assert_close(batch_mean_cosine(h), torch.tensor(math.sqrt(2) / 3))
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert float(batch_mean_cosine(x)) == pytest.approx(mean_pairwise_cosine(x, sample=None), abs=1e-6)


def test_spread_loss_is_zero_while_as_spread_as_the_input_and_pulls_a_collapsing_embedding_apart() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=gen).relu() + 0.1  # non-negative, like pooled backbone features
    assert float(spread_loss(x, x)) == 0.0
    assert float(spread_loss(torch.randn(40, 6, generator=gen), x)) == 0.0  # more spread than x: no penalty
    folded = (x + 5.0).requires_grad_(True)  # one shared offset: mean cosine near 1
    loss = spread_loss(folded, x)
    expected = (batch_mean_cosine(x + 5.0) - batch_mean_cosine(x)) ** 2
    torch.testing.assert_close(loss, expected.detach())
    loss.backward()
    step = folded - 1.0 * folded.grad  # a gradient step lowers the mean cosine
    assert float(batch_mean_cosine(step.detach())) < float(batch_mean_cosine(folded.detach()))


def test_spread_weight_adds_the_spread_terms_of_both_views() -> None:
    v1, v2 = make_views()
    plain = make_model()
    torch.manual_seed(0)
    spread = GraphBYOL(GNNEncoder(5, kind="gcn", num_layers=2, hidden_dim=6, jk="max"), projector_dim=4,
                       predictor_dim=4, spread_weight=3.0)
    spread.load_state_dict(plain.state_dict())
    nodes = torch.tensor([0, 2, 3, 7])
    h1 = plain.encoder(v1.x, v1.edge_index, v1.edge_weight)[nodes]
    h2 = plain.encoder(v2.x, v2.edge_index, v2.edge_weight)[nodes]
    extra = 3.0 * (spread_loss(h1, v1.x[nodes]) + spread_loss(h2, v2.x[nodes]))
    assert float(extra.detach()) > 0  # the term is active on these views
    torch.testing.assert_close(spread(v1, v2, nodes=nodes), plain(v1, v2, nodes=nodes) + extra)
    with pytest.raises(ValueError, match="spread_weight"):
        GraphBYOL(GNNEncoder(5, kind="gcn", hidden_dim=6), projector_dim=4, predictor_dim=4, spread_weight=-1.0)
