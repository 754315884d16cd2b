import pytest
from PIL import Image

from sslgraph.viz.degrees import plot_degree_histograms


def test_degree_histograms_one_panel_per_node_group(tmp_path):
    histograms = {"training nodes": {"teacher": [0, 0, 1, 59, 44334], "student": [0, 0, 0, 60, 45349]},
                  "test nodes": {"teacher": [0, 0, 0, 0, 0, 10000], "student": [0, 0, 0, 0, 0, 10000]}}
    path = plot_degree_histograms(histograms, tmp_path / "degrees.png")
    assert path.stat().st_size > 5_000
    with Image.open(path) as img:
        assert img.size == (924, 308)  # two 4.2 x 2.8 inch panels at 110 dpi


def test_degree_histograms_drop_empty_groups_and_refuse_nothing(tmp_path):
    path = plot_degree_histograms({"training nodes": {"teacher": [0, 3, 5]}, "test nodes": {"teacher": []}},
                                  tmp_path / "one.png")
    with Image.open(path) as img:
        assert img.size == (462, 308)
    with pytest.raises(ValueError, match="no histogram"):
        plot_degree_histograms({"test nodes": {"teacher": [0, 0]}}, tmp_path / "none.png")
