import pytest
import torch

from sslgraph.refine.propagate import appnp, propagation_matrix, select_alpha, symmetrise_train_edges

# 3 nodes: node 0 reads from 1 and 2, node 1 reads from 0, node 2 receives nothing.
EDGES = torch.tensor([[1, 2, 0], [0, 0, 1]])
X = torch.tensor([[1.0], [2.0], [4.0]])


def test_appnp_row_normalised_by_hand():
    a = propagation_matrix(EDGES, None, 3, normalization="row")
    one = appnp(X, a, alpha=0.5, hops=1)
    # h0 = 0.5 * mean(2, 4) + 0.5 * 1 = 2; h1 = 0.5 * 1 + 0.5 * 2 = 1.5; node 2 keeps its own feature
    assert one.flatten().tolist() == pytest.approx([2.0, 1.5, 4.0])
    two = appnp(X, a, alpha=0.5, hops=2)
    # h0 = 0.5 * mean(1.5, 4) + 0.5 = 1.875; h1 = 0.5 * 2 + 0.5 * 2 = 2
    assert two.flatten().tolist() == pytest.approx([1.875, 2.0, 4.0])


def test_appnp_sym_normalised_by_hand():
    a = propagation_matrix(EDGES, torch.tensor([1.0, 3.0, 1.0]), 3, normalization="sym").to_dense()
    # in-degrees: node 0: 1 + 3 = 4, node 1: 1; node 2 has none and counts its out-degree 3
    expected = torch.tensor([[0.0, 1 / (4 * 1) ** 0.5, 3 / (4 * 3) ** 0.5],
                             [1 / (1 * 4) ** 0.5, 0.0, 0.0],
                             [0.0, 0.0, 0.0]])
    assert torch.allclose(a, expected)
    out = appnp(X, propagation_matrix(EDGES, torch.tensor([1.0, 3.0, 1.0]), 3), alpha=0.2, hops=1)
    assert torch.allclose(out[:2], 0.8 * expected[:2] @ X + 0.2 * X[:2])
    assert out[2].item() == 4.0


def test_appnp_matches_dense_reference_and_extremes():
    gen = torch.Generator().manual_seed(0)
    n, d = 30, 7
    src = torch.randint(0, n, (120,), generator=gen)
    dst = torch.randint(0, n, (120,), generator=gen)
    edges = torch.stack([src, dst])[:, src != dst]
    w = torch.rand(edges.shape[1], generator=gen) + 0.1
    x = torch.randn(n, d, generator=gen)
    a = propagation_matrix(edges, w, n, normalization="sym")
    dense = a.to_dense()
    h = x.clone()
    for _ in range(3):
        h = 0.7 * dense @ h + 0.3 * x
    orphan = dense.abs().sum(1) == 0
    h[orphan] = x[orphan]
    assert torch.allclose(appnp(x, a, alpha=0.3, hops=3, chunk_size=3), h, atol=1e-5)
    assert torch.equal(appnp(x, a, alpha=1.0, hops=5), x)
    assert torch.equal(appnp(x, a, alpha=0.5, hops=0), x)


def test_symmetrise_adds_reverse_train_edges_only():
    # train nodes 0, 1, 2; node 3 is held out and only receives
    edges = torch.tensor([[1, 0, 2, 0], [0, 1, 0, 3]])
    out, w = symmetrise_train_edges(edges, torch.tensor([2.0, 1.0, 1.0, 1.0]), 3)
    pairs = {(int(s), int(t)): float(v) for s, t, v in zip(out[0], out[1], w)}
    assert pairs == {(0, 1): 2.0, (1, 0): 2.0, (0, 2): 1.0, (2, 0): 1.0, (0, 3): 1.0}


def test_propagation_rejects_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        propagation_matrix(torch.tensor([[0, 5], [1, 0]]), None, 3)
    with pytest.raises(ValueError, match=">= 0"):
        propagation_matrix(EDGES, torch.tensor([1.0, -1.0, 1.0]), 3)
    with pytest.raises(ValueError, match="normalization"):
        propagation_matrix(EDGES, None, 3, normalization="col")
    a = propagation_matrix(EDGES, None, 3)
    with pytest.raises(ValueError, match="alpha"):
        appnp(X, a, alpha=1.5, hops=1)
    with pytest.raises(ValueError, match="x must be"):
        appnp(torch.ones(4, 1), a, alpha=0.5, hops=1)


def _two_view_blobs(num_classes=4, per_class=120, dim=8, noise=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    centres = torch.randn(num_classes, dim, generator=gen) * 1.5
    views = [centres[y] + noise * torch.randn(y.numel(), dim, generator=gen) for _ in range(2)]
    return views, y


def _class_graph(y, k, gen, same_share):
    """Each node gets k in-edges: same-class ones with probability same_share, otherwise random."""
    n = y.numel()
    src = []
    for i in range(n):
        same = (y == y[i]).nonzero().flatten()
        same = same[same != i]
        for _ in range(k):
            if torch.rand(1, generator=gen).item() < same_share:
                src.append(int(same[torch.randint(0, same.numel(), (1,), generator=gen)]))
            else:
                src.append(int(torch.randint(0, n, (1,), generator=gen)))
    return torch.stack([torch.tensor(src), torch.arange(n).repeat_interleave(k)])


def test_select_alpha_smooths_on_a_pure_graph_and_not_on_a_random_one():
    views, y = _two_view_blobs()
    gen = torch.Generator().manual_seed(1)
    n = y.numel()
    pure = [propagation_matrix(_class_graph(y, 8, gen, 1.0), None, n) for _ in views]
    chosen = select_alpha(list(zip(views, pure)), alphas=[0.1, 0.5], hops=[2], num_train=n, clusters=4,
                          sample=200, k=10)
    assert chosen["alpha"] < 1.0 and chosen["hops"] == 2
    noise = [propagation_matrix(_class_graph(y, 8, gen, 0.0), None, n) for _ in views]
    chosen = select_alpha(list(zip(views, noise)), alphas=[0.1], hops=[4], num_train=n, clusters=4,
                          sample=200, k=10)
    assert (chosen["alpha"], chosen["hops"]) == (1.0, 0)
    assert set(chosen["scores"]) == {"alpha=1,hops=0", "alpha=0.1,hops=4"}


def test_collapse_statistics_by_hand():
    from sslgraph.refine.collapse import effective_rank, mean_pairwise_cosine

    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # cosines: (0, 1) = 0, (0, 2) = (1, 2) = 1/sqrt(2)
    assert mean_pairwise_cosine(z) == pytest.approx(2 ** 0.5 / 3)
    assert mean_pairwise_cosine(torch.ones(5, 3) * torch.arange(1, 6.0)[:, None]) == pytest.approx(1.0)
    assert effective_rank(torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(1.0)
    iso = torch.eye(4).repeat(2, 1) * torch.tensor([1.0, -1.0]).repeat_interleave(4)[:, None]
    assert effective_rank(iso) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        mean_pairwise_cosine(torch.ones(1, 3))


def test_variance_covariance_loss_by_hand():
    from sslgraph.refine.byol import variance_covariance_loss

    collapsed = torch.ones(4, 3)
    # std = sqrt(1e-4) = 0.01 per dimension, no covariance
    assert variance_covariance_loss(collapsed).item() == pytest.approx(0.99)
    spread = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    # var = 8/3 per dimension (std > 1), covariance 0
    assert variance_covariance_loss(spread).item() == pytest.approx(0.0)
    line = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    # var = 2 per dimension, cov = 2: off-diagonal sum of squares 8, over d = 2
    assert variance_covariance_loss(line).item() == pytest.approx(4.0)


def test_hops_in_one_pass_equal_separate_runs() -> None:
    from sslgraph.refine.propagate import appnp, appnp_hops, propagation_matrix

    edge_index = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 0, 0, 3]])
    matrix = propagation_matrix(edge_index, None, 4)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    together = appnp_hops(x, matrix, alpha=0.3, hops=[4, 1, 0, 2], chunk_size=2)
    assert sorted(together) == [0, 1, 2, 4]
    for hops, value in together.items():
        torch.testing.assert_close(value, appnp(x, matrix, alpha=0.3, hops=hops))
