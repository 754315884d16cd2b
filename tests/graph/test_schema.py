"""The one schema of graphs and refined embeddings: every violation is a GraphFileError naming where and what."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from sslgraph.errors import GraphFileError, SSLGraphError
from sslgraph.graph.export import load_graph_pair, load_refined, save_graph, save_refined
from sslgraph.graph.schema import check_graph, check_graph_pair, check_refined
from sslgraph.utils.io import atomic_save

NUM_TRAIN, NUM_TEST = 5, 3


def graph(**changes: object) -> Data:
    n = NUM_TRAIN + NUM_TEST
    node = torch.arange(n)
    values = dict(x=torch.randn(n, 4, generator=torch.Generator().manual_seed(0)),
                  edge_index=torch.stack([node % NUM_TRAIN, (node + 1) % n]), edge_weight=torch.ones(n),
                  y=node % 2, train_mask=node < NUM_TRAIN, test_mask=node >= NUM_TRAIN, num_train=NUM_TRAIN)
    values.update(changes)
    return Data(**{k: v for k, v in values.items() if v is not None})


def test_a_valid_graph_passes_with_or_without_optional_fields() -> None:
    check_graph(graph(), where="g")
    check_graph(graph(edge_weight=None, num_train=None), where="g")


@pytest.mark.parametrize(("changes", "message"), [
    ({"y": None}, "g: missing field.*y"),
    ({"x": torch.zeros(8, dtype=torch.long)}, "g: field 'x' must be a float"),
    ({"x": torch.zeros(0, 4), "y": torch.zeros(0, dtype=torch.long)}, "g: empty graph"),
    ({"x": torch.full((8, 4), float("nan"))}, r"g: x has 8 of 8 rows with NaN/inf"),
    ({"y": torch.zeros(8)}, "g: field 'y' has dtype torch.float32"),
    ({"train_mask": torch.ones(8, dtype=torch.long)}, "g: field 'train_mask' has dtype"),
    ({"test_mask": torch.zeros(7, dtype=torch.bool)}, r"g: field 'test_mask' has shape \(7,\)"),
    ({"edge_index": torch.zeros(2, 0, dtype=torch.long), "edge_weight": torch.zeros(0)}, "g: no edges"),
    ({"edge_index": torch.tensor([[0], [8]])}, "g: field 'edge_index' refers to nodes outside"),
    ({"edge_weight": torch.ones(3)}, r"g: field 'edge_weight' has shape \(3,\)"),
    ({"num_train": 4}, "g: field 'num_train' \\(4\\) does not match"),
    ({"train_mask": torch.zeros(8, dtype=torch.bool)}, "g: train_mask selects no nodes"),
])
def test_each_violation_names_the_graph_and_field(changes: dict, message: str) -> None:
    with pytest.raises(GraphFileError, match=message):
        check_graph(graph(**changes), where="g")


def test_pairs_must_describe_the_same_nodes() -> None:
    check_graph_pair(graph(), graph(x=torch.randn(8, 7)))  # widths may differ
    with pytest.raises(GraphFileError, match="node counts differ"):
        check_graph_pair(graph(), graph(x=torch.randn(9, 4), y=torch.arange(9) % 2,
                                        train_mask=torch.arange(9) < 5, test_mask=torch.arange(9) >= 5))
    with pytest.raises(GraphFileError, match="disagree on y"):
        check_graph_pair(graph(), graph(y=(torch.arange(8) + 1) % 2))


def test_refined_embeddings_must_cover_the_same_nodes() -> None:
    reference = graph()
    good = {"embeddings": torch.randn(8, 3), "y": reference.y, "train_mask": reference.train_mask,
            "test_mask": reference.test_mask}
    check_refined(good, reference, where="r")
    with pytest.raises(GraphFileError, match="r: missing field.*embeddings"):
        check_refined({k: v for k, v in good.items() if k != "embeddings"}, reference, where="r")
    with pytest.raises(GraphFileError, match=r"r: field 'embeddings' must be a float \[8, d\]"):
        check_refined(dict(good, embeddings=torch.randn(7, 3)), reference, where="r")
    with pytest.raises(GraphFileError, match="r: field 'test_mask' differs"):
        check_refined(dict(good, test_mask=~reference.test_mask), reference, where="r")


def test_files_round_trip_through_the_one_loader(tmp_path: Path) -> None:
    teacher, student = graph(), graph(x=torch.randn(8, 4))
    pair = load_graph_pair(save_graph(teacher, tmp_path / "t.pt"), save_graph(student, tmp_path / "s.pt"))
    assert torch.equal(pair[0].x, teacher.x) and torch.equal(pair[1].x, student.x)
    path = save_refined(tmp_path / "refined.pt", embeddings=torch.ones(8, 2), reference=teacher, losses=[1.0])
    loaded = load_refined(path, teacher)
    assert torch.equal(loaded["embeddings"], torch.ones(8, 2)) and loaded["losses"] == [1.0]
    assert loaded["num_train"] == NUM_TRAIN
    atomic_save([1, 2], tmp_path / "list.pt")
    with pytest.raises(GraphFileError, match=r"list\.pt: expected a dict") as info:
        load_refined(tmp_path / "list.pt", teacher)
    assert isinstance(info.value, SSLGraphError) and info.value.exit_code == 4
    relabelled = graph(y=(torch.arange(8) + 1) % 2)
    save_graph(relabelled, tmp_path / "s.pt")
    with pytest.raises(GraphFileError, match=r"t\.pt and .*s\.pt disagree on y"):
        load_graph_pair(tmp_path / "t.pt", tmp_path / "s.pt")
