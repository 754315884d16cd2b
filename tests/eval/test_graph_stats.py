import math

import pytest
import torch
from torch_geometric.data import Data

from sslgraph.eval.graph_stats import graph_statistics


def _toy_graph() -> Data:
    # Train nodes 0-3, test nodes 4-5; two components {0, 1, 4} and {2, 3, 5}.
    y = torch.tensor([0, 0, 1, 0, 0, 1])
    edges = [(1, 0), (0, 1), (3, 2), (2, 3),  # train -> train: 2 of 4 same-class
             (0, 4), (1, 4), (2, 5), (3, 5)]  # train -> test: 3 of 4 same-class
    edge_index = torch.tensor(edges).T
    train_mask = torch.tensor([True, True, True, True, False, False])
    return Data(x=torch.randn(6, 3), y=y, edge_index=edge_index, train_mask=train_mask, test_mask=~train_mask,
                num_nodes=6)


def test_graph_statistics_on_hand_built_graph():
    stats = graph_statistics(_toy_graph())
    assert stats["nodes"] == 6 and stats["edges"] == 8
    assert stats["train_nodes"] == 4 and stats["test_nodes"] == 2
    assert stats["train_to_train"] == {"edges": 4, "same_class": 2, "same_class_share": 0.5}
    assert stats["train_to_test"] == {"edges": 4, "same_class": 3, "same_class_share": 0.75}
    assert stats["from_test"] == 0 and stats["self_loops"] == 0
    assert stats["in_degree_train"] == {"min": 1, "mean": 1.0, "max": 1, "histogram": [0, 4]}
    assert stats["in_degree_test"] == {"min": 2, "mean": 2.0, "max": 2, "histogram": [0, 0, 2]}
    assert stats["components"] == 2 and stats["largest_component"] == 3


def test_graph_statistics_isolated_node_and_test_source():
    data = _toy_graph()
    # Drop the edges into node 5 and add a test -> train edge 4 -> 2: node 5 becomes isolated.
    keep = data.edge_index[1] != 5
    data.edge_index = torch.cat([data.edge_index[:, keep], torch.tensor([[4], [2]])], dim=1)
    stats = graph_statistics(data)
    assert stats["from_test"] == 1
    assert stats["in_degree_test"]["histogram"] == [1, 0, 1]
    assert stats["in_degree_train"] == {"min": 1, "mean": 1.25, "max": 2, "histogram": [0, 3, 1]}
    assert stats["components"] == 2 and stats["largest_component"] == 5
    assert stats["train_to_test"]["edges"] == 2 and stats["train_to_test"]["same_class_share"] == 1.0


def test_graph_statistics_without_edges_and_missing_key():
    data = _toy_graph()
    data.edge_index = torch.zeros(2, 0, dtype=torch.long)
    stats = graph_statistics(data)
    assert stats["components"] == 6 and stats["largest_component"] == 1
    assert math.isnan(stats["train_to_train"]["same_class_share"])
    del data.y
    with pytest.raises(ValueError, match="'y'"):
        graph_statistics(data)
