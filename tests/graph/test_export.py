import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import SimpleConv

from sslgraph.graph.export import GraphFileError, build_graph_data, load_graph, rebuild_edges, save_graph
from sslgraph.graph.knn_graph import KNNGraph
from sslgraph.utils.io import atomic_save


def toy_data(edge_weight="multiplicity"):
    """4 training nodes, 2 held-out nodes, E = 1, V = 2."""
    train = KNNGraph(4, edges_per_node=1, visits=2)
    train.add(torch.tensor([0, 1, 2]), torch.tensor([[1], [0], [3]]), torch.tensor([[0.5], [0.5], [0.25]]))
    train.add(torch.tensor([0, 2]), torch.tensor([[2], [3]]), torch.tensor([[0.75], [0.75]]))
    test = KNNGraph(2, edges_per_node=1, visits=2, neighbour_nodes=4)
    test.add(torch.tensor([0, 1]), torch.tensor([[0], [2]]), torch.tensor([[0.9], [0.8]]))
    test.add(torch.tensor([1]), torch.tensor([[3]]), torch.tensor([[0.6]]))
    x = torch.arange(6, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    return build_graph_data(train_x=x[:4], test_x=x[4:], train_graph=train, test_graph=test,
                            train_y=torch.tensor([0, 0, 1, 1]), test_y=torch.tensor([0, 1]), edge_weight=edge_weight)


def edge_set(data):
    return {(j, i): w for (j, i), w in zip(data.edge_index.T.tolist(), data.edge_weight.tolist())}


def test_edges_point_from_neighbour_to_node():
    data = toy_data()
    # Node i aggregates from its neighbours: an edge j -> i for each neighbour j of i; held-out t is 4 + t.
    assert edge_set(data) == {(1, 0): 1.0, (2, 0): 1.0, (0, 1): 1.0, (3, 2): 2.0, (0, 4): 1.0, (2, 5): 1.0,
                              (3, 5): 1.0}
    assert data.edge_index.dtype == torch.long and data.edge_weight.dtype == torch.float32


def test_similarity_weights_are_means_over_visits():
    assert edge_set(toy_data("similarity"))[(3, 2)] == pytest.approx(0.5)


def test_held_out_nodes_only_receive_from_training_nodes():
    data = toy_data()
    src, dst = data.edge_index
    assert (src < data.num_train).all()
    assert set(dst[dst >= 4].tolist()) == {4, 5}
    # PyG message passing (source -> target) sums the neighbours' features at each node.
    out = SimpleConv(aggr="sum")(data.x, data.edge_index)
    assert out[:, 0].tolist() == [3.0, 0.0, 3.0, 0.0, 0.0, 5.0]


def test_labels_masks_and_features():
    data = toy_data()
    assert data.num_nodes == 6 and data.num_train == 4
    assert data.train_mask.tolist() == [True] * 4 + [False] * 2
    assert data.test_mask.tolist() == [False] * 4 + [True] * 2
    assert data.y.tolist() == [0, 0, 1, 1, 0, 1] and data.y.dtype == torch.long
    assert data.x[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_build_rejects_graphs_of_the_wrong_size():
    train = KNNGraph(4, edges_per_node=1, visits=1)
    test = KNNGraph(2, edges_per_node=1, visits=1, neighbour_nodes=3)
    with pytest.raises(ValueError, match="test_graph"):
        build_graph_data(train_x=torch.zeros(4, 2), test_x=torch.zeros(2, 2), train_graph=train, test_graph=test,
                         train_y=torch.zeros(4, dtype=torch.long), test_y=torch.zeros(2, dtype=torch.long))


def test_save_load_round_trip_with_weights_only(tmp_path):
    data = toy_data()
    path = save_graph(data, tmp_path / "teacher.pt")
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict)
    loaded = load_graph(path)
    for name in ("x", "edge_index", "edge_weight", "y", "train_mask", "test_mask"):
        assert torch.equal(getattr(loaded, name), getattr(data, name)), name
    assert loaded.num_train == 4


def test_load_names_file_and_field(tmp_path):
    data = toy_data()
    payload = torch.load(save_graph(data, tmp_path / "g.pt"), weights_only=True)
    broken = dict(payload)
    del broken["edge_weight"]
    atomic_save(broken, tmp_path / "missing.pt")
    with pytest.raises(GraphFileError, match=r"missing\.pt: field 'edge_weight'"):
        load_graph(tmp_path / "missing.pt")
    broken = dict(payload, y=payload["y"].float())
    atomic_save(broken, tmp_path / "dtype.pt")
    with pytest.raises(GraphFileError, match=r"dtype\.pt: field 'y' has dtype"):
        load_graph(tmp_path / "dtype.pt")
    broken = dict(payload, edge_index=payload["edge_index"] + 10)
    atomic_save(broken, tmp_path / "range.pt")
    with pytest.raises(GraphFileError, match="'edge_index' refers to nodes outside"):
        load_graph(tmp_path / "range.pt")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_rebuild_edges_matches_brute_force(precision):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=gen)
    train_graph, test_graph = rebuild_edges(x, 24, k_edges=3, chunk_size=7, search_precision=precision)
    xn = F.normalize(x, dim=1)
    sims = xn[:24] @ xn[:24].T
    sims.fill_diagonal_(-2)
    expected_train = {(j, i) for i in range(24) for j in sims[i].topk(3).indices.tolist()}
    expected_test = {(j, t) for t in range(6) for j in (xn[24 + t] @ xn[:24].T).topk(3).indices.tolist()}
    src, dst, w = train_graph.edges()
    assert set(zip(src.tolist(), dst.tolist())) == expected_train and (w == 1).all()
    src, dst, _ = test_graph.edges()
    assert set(zip(src.tolist(), dst.tolist())) == expected_test


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_rebuild_edges_in_principal_directions_that_span_the_features_is_exact(precision):
    gen = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(8, 3, generator=gen))[0]
    x = torch.randn(40, 3, generator=gen) @ basis.T  # rank 3 in 8 dimensions: 4 principal directions span it
    exact = rebuild_edges(x, 32, k_edges=3, chunk_size=9)
    projected = rebuild_edges(x, 32, k_edges=3, chunk_size=9, search_precision=precision, search_dim=4)
    for graph, reference in zip(projected, exact):
        assert torch.equal(graph.slots, reference.slots)
        torch.testing.assert_close(graph.slot_sim, reference.slot_sim)
    with pytest.raises(ValueError, match="search_dim=8 must be in"):
        rebuild_edges(x, 32, k_edges=3, search_dim=8)
