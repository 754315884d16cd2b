import io
from collections import defaultdict

import pytest
import torch

from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self


def test_nearest_non_self_skips_self_and_missing_entries():
    nn_idx = torch.tensor([[2, 5, 7, 1], [-1, 3, 4, 1], [0, 2, -1, -1], [3, -1, -1, -1]])
    nn_sim = torch.tensor([[1.0, 0.9, 0.8, 0.7], [0.0, 0.6, 0.5, 0.4], [0.3, 0.2, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0]])
    idx, sim = nearest_non_self(nn_idx, nn_sim, torch.tensor([2, 3, 2, 3]), 2)
    assert idx.tolist() == [[5, 7], [4, 1], [0, -1], [-1, -1]]
    torch.testing.assert_close(sim, torch.tensor([[0.9, 0.8], [0.5, 0.4], [0.3, 0.0], [0.0, 0.0]]))


def test_nearest_non_self_when_self_is_not_first():
    idx, _ = nearest_non_self(torch.tensor([[4, 0, 9]]), torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([0]), 2)
    assert idx.tolist() == [[4, 9]]


def reference_edges(num_nodes, visits, history):
    """Sequential FIFO simulation: the last ``visits`` visits of every node, coalesced."""
    kept = defaultdict(list)
    for node, neighbours, sims in history:
        kept[node] = (kept[node] + [(neighbours, sims)])[-visits:]
    count, total = defaultdict(int), defaultdict(float)
    for node in range(num_nodes):
        for neighbours, sims in kept[node]:
            for j, s in zip(neighbours, sims):
                if j >= 0 and j != node:
                    count[(j, node)] += 1
                    total[(j, node)] += s
    return {key: (count[key], total[key] / count[key]) for key in count}


def as_dict(graph, weight):
    src, dst, w = graph.edges(weight=weight)
    return {(j, i): v for j, i, v in zip(src.tolist(), dst.tolist(), w.tolist())}


def test_graph_keeps_exactly_the_last_v_visits():
    graph = KNNGraph(5, edges_per_node=2, visits=3)
    lists = [[1, 2], [1, 3], [4, 3], [1, 4], [2, 1]]  # V + 2 visits of node 0
    for t, neighbours in enumerate(lists):
        graph.add(torch.tensor([0]), torch.tensor([neighbours]), torch.full((1, 2), float(t)))
    assert graph.visits.tolist() == [5, 0, 0, 0, 0]
    # Visits 2, 3, 4 remain: 4 -> 0 twice, 3 -> 0 once, 1 -> 0 twice, 2 -> 0 once.
    assert as_dict(graph, "multiplicity") == {(1, 0): 2.0, (2, 0): 1.0, (3, 0): 1.0, (4, 0): 2.0}
    similarity = as_dict(graph, "similarity")
    assert similarity[(4, 0)] == pytest.approx(2.5) and similarity[(1, 0)] == pytest.approx(3.5)


def test_no_self_loops_no_placeholders_and_unvisited_nodes_have_no_edges():
    graph = KNNGraph(4, edges_per_node=3, visits=2)
    graph.add(torch.tensor([1]), torch.tensor([[1, 2, -1]]), torch.ones(1, 3))
    src, dst, _ = graph.edges()
    assert list(zip(src.tolist(), dst.tolist())) == [(2, 1)]
    assert (graph.slots[[0, 2, 3]] == -1).all()


def test_bipartite_graph_keeps_equal_ids():
    graph = KNNGraph(2, edges_per_node=1, visits=1, neighbour_nodes=5)
    graph.add(torch.tensor([0, 1]), torch.tensor([[0], [4]]), torch.ones(2, 1))
    assert as_dict(graph, "multiplicity") == {(0, 0): 1.0, (4, 1): 1.0}
    with pytest.raises(IndexError, match="neighbour ids"):
        graph.add(torch.tensor([0]), torch.tensor([[5]]), torch.ones(1, 1))
    with pytest.raises(IndexError, match="node ids"):
        graph.add(torch.tensor([2]), torch.tensor([[0]]), torch.ones(1, 1))


@pytest.mark.parametrize("batch", [1, 6, 40])
def test_random_visits_match_sequential_reference(batch):
    gen = torch.Generator().manual_seed(batch)
    num, edges, visits = 12, 3, 4
    graph = KNNGraph(num, edges_per_node=edges, visits=visits)
    history = []
    for _ in range(12):
        # Duplicate nodes within a call (more than V times for batch 40) must act as consecutive visits.
        nodes = torch.randint(0, num, (batch,), generator=gen)
        neighbours = torch.randint(-1, num, (batch, edges), generator=gen)
        sims = torch.randint(0, 8, (batch, edges), generator=gen).float() / 8
        graph.add(nodes, neighbours, sims)
        history += list(zip(nodes.tolist(), neighbours.tolist(), sims.tolist()))
    expected = reference_edges(num, visits, history)
    assert as_dict(graph, "multiplicity") == {key: float(c) for key, (c, _) in expected.items()}
    similarity = as_dict(graph, "similarity")
    assert similarity.keys() == expected.keys()
    for key, (_, mean) in expected.items():
        assert similarity[key] == pytest.approx(mean)
    assert graph.visits.tolist() == [sum(1 for n, _, _ in history if n == i) for i in range(num)]


def test_edges_are_sorted_by_node_then_neighbour():
    graph = KNNGraph(3, edges_per_node=2, visits=1)
    graph.add(torch.tensor([2, 0]), torch.tensor([[1, 0], [2, 1]]), torch.ones(2, 2))
    src, dst, _ = graph.edges()
    assert list(zip(dst.tolist(), src.tolist())) == [(0, 1), (0, 2), (2, 0), (2, 1)]


def test_state_dict_round_trip_and_memory():
    graph = KNNGraph(4, edges_per_node=2, visits=2)
    graph.add(torch.tensor([0, 3]), torch.tensor([[1, 2], [0, -1]]), torch.rand(2, 2))
    buffer = io.BytesIO()
    torch.save(graph.state_dict(), buffer)
    buffer.seek(0)
    restored = KNNGraph(4, edges_per_node=2, visits=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(graph.edges(weight="similarity"), restored.edges(weight="similarity")):
        assert torch.equal(a, b)
    assert torch.equal(restored.visits, graph.visits)
    assert graph.nbytes == 4 * KNNGraph.bytes_per_node(edges_per_node=2, visits=2)
    with pytest.raises(RuntimeError, match="size mismatch for slots"):
        KNNGraph(4, edges_per_node=3, visits=2).load_state_dict(graph.state_dict())


def test_add_rejects_wrong_shapes():
    graph = KNNGraph(3, edges_per_node=2, visits=1)
    with pytest.raises(ValueError, match="KNNGraph.add"):
        graph.add(torch.tensor([0]), torch.tensor([[1]]), torch.ones(1, 1))
