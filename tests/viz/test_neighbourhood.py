import pytest
import torch
from PIL import Image
from torch_geometric.data import Data

from sslgraph.viz.neighbourhood import in_neighbours, plot_two_hop


def _toy_graph() -> Data:
    # Train nodes 0-5, test nodes 6-7. Node 6 aggregates from 0 (weight 3), 1 (weight 2) and 2 (weight 2).
    edges = [(0, 6, 3.0), (1, 6, 1.0), (1, 6, 1.0), (2, 6, 2.0),
             (3, 0, 1.0), (4, 0, 2.0), (6, 0, 1.0), (5, 1, 1.0), (3, 1, 1.0), (0, 2, 1.0), (0, 7, 1.0)]
    edge_index = torch.tensor([[s, t] for s, t, _ in edges]).T
    train_mask = torch.arange(8) < 6
    return Data(x=torch.randn(8, 4), edge_index=edge_index, edge_weight=torch.tensor([w for *_, w in edges]),
                y=torch.tensor([0, 1, 0, 0, 1, 1, 0, 1]), train_mask=train_mask, test_mask=~train_mask, num_nodes=8)


def test_in_neighbours_merge_repeated_edges_and_order_by_weight():
    data = _toy_graph()
    assert in_neighbours(data, 6, limit=5, exclude=set()) == [(0, 3.0), (1, 2.0), (2, 2.0)]
    assert in_neighbours(data, 6, limit=2, exclude=set()) == [(0, 3.0), (1, 2.0)]
    assert in_neighbours(data, 0, limit=5, exclude={6}) == [(4, 2.0), (3, 1.0)]
    data.edge_weight = None
    assert in_neighbours(data, 6, limit=5, exclude={0}) == [(1, 2.0), (2, 1.0)]


def test_two_hop_figure_is_written(tmp_path):
    gen = torch.Generator().manual_seed(0)
    thumbs = torch.randint(0, 256, (8, 3, 32, 32), generator=gen, dtype=torch.uint8)
    calls: list[int] = []

    def image(node: int) -> torch.Tensor:
        calls.append(node)
        return thumbs[node]

    path = plot_two_hop(_toy_graph(), 6, image, ["even", "odd"], tmp_path / "n.png", title="toy", hop1_max=3,
                        hop2_max=2)
    # Centre 6; hop 1: 0, 1, 2; hop 2: 4, 3 under 0, then 5 under 1 (3 is already drawn); 2's only source is 0.
    assert sorted(calls) == [0, 1, 2, 3, 4, 5, 6]
    with Image.open(path) as img:
        width, height = img.size
        assert 800 < width < 4000 and 800 < height < 4000
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 100  # the thumbnails are drawn


def test_two_hop_rejects_bad_centre_and_images(tmp_path):
    data = _toy_graph()
    with pytest.raises(ValueError, match="centre 9"):
        plot_two_hop(data, 9, lambda n: torch.zeros(3, 8, 8, dtype=torch.uint8), ["a", "b"], tmp_path / "x.png",
                     title="t")
    with pytest.raises(ValueError, match=r"image_fn\(7\)"):
        plot_two_hop(data, 7, lambda n: torch.zeros(8, 8, dtype=torch.uint8), ["a", "b"], tmp_path / "x.png",
                     title="t")
