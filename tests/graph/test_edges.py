import pytest
import torch

from torch_geometric.data import Data

from sslgraph.graph.edges import combine_edges, edge_variant, mutual_edges, same_class_share, similarity_weights


def _pairs(edge_index, weight):
    return {(int(s), int(t)): float(w) for s, t, w in zip(edge_index[0], edge_index[1], weight)}


def test_mutual_keeps_reciprocated_train_edges_and_all_test_edges():
    # train nodes 0..2, held-out node 3; 1 -> 0 and 0 -> 1 are mutual, 2 -> 0 is not
    edges = torch.tensor([[1, 0, 2, 1, 1], [0, 1, 0, 3, 0]])
    out, w = mutual_edges(edges, torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0]), num_train=3, num_nodes=4)
    assert _pairs(out, w) == {(1, 0): 2.0, (0, 1): 2.0, (1, 3): 1.0}


def test_union_and_intersection_add_weights():
    a = (torch.tensor([[1, 2], [0, 0]]), torch.tensor([1.0, 2.0]))
    b = (torch.tensor([[2, 0], [0, 1]]), None)
    union = _pairs(*combine_edges(a, b, 3, how="union"))
    assert union == {(1, 0): 1.0, (2, 0): 3.0, (0, 1): 1.0}
    assert _pairs(*combine_edges(a, b, 3, how="intersection")) == {(2, 0): 3.0}
    with pytest.raises(ValueError, match="union or intersection"):
        combine_edges(a, b, 3, how="xor")


def test_similarity_weights_and_purity():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    edges = torch.tensor([[1, 2], [0, 0]])
    assert similarity_weights(edges, x).tolist() == pytest.approx([2 ** -0.5, 1e-3])
    assert same_class_share(edges, torch.tensor([0, 0, 1])) == 0.5
    with pytest.raises(ValueError):
        similarity_weights(edges, x, min_weight=0.0)


def _pair():
    x = torch.arange(8.0).view(4, 2)
    masks = {"train_mask": torch.tensor([True, True, True, False]),
             "test_mask": torch.tensor([False, False, False, True]),
             "y": torch.tensor([0, 0, 1, 0])}
    teacher = Data(x=x, edge_index=torch.tensor([[1, 0, 2, 1], [0, 1, 0, 3]]), edge_weight=torch.ones(4), **masks)
    student = Data(x=x + 1, edge_index=torch.tensor([[1, 2, 0], [0, 1, 3]]), edge_weight=torch.ones(3), **masks)
    return teacher, student


def test_edge_variant_exported_is_the_pair_itself():
    teacher, student = _pair()
    assert edge_variant(teacher, student, "exported") == (teacher, student)


def test_edge_variant_mutual_filters_each_stream_and_keeps_features():
    teacher, student = _pair()
    t, s = edge_variant(teacher, student, "mutual")
    assert _pairs(t.edge_index, t.edge_weight) == {(1, 0): 1.0, (0, 1): 1.0, (1, 3): 1.0}
    assert _pairs(s.edge_index, s.edge_weight) == {(0, 3): 1.0}
    assert t.x is teacher.x and s.x is student.x and torch.equal(t.y, teacher.y)
    assert teacher.edge_index.shape[1] == 4  # the input is left alone


@pytest.mark.parametrize("how, expected", [
    ("union", {(1, 0): 2.0, (0, 1): 1.0, (2, 0): 1.0, (1, 3): 1.0, (2, 1): 1.0, (0, 3): 1.0}),
    ("intersection", {(1, 0): 2.0}),
])
def test_edge_variant_union_and_intersection_share_one_edge_set(how, expected):
    teacher, student = _pair()
    t, s = edge_variant(teacher, student, how)
    assert _pairs(t.edge_index, t.edge_weight) == expected
    assert torch.equal(t.edge_index, s.edge_index) and s.x is student.x


def test_edge_variant_rejects_unknown_names():
    with pytest.raises(ValueError, match="refine.edges"):
        edge_variant(*_pair(), "random")
