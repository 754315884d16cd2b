import pytest
from PIL import Image

from sslgraph.viz.curves import _series, plot_training_curves


def test_curves_figure_with_init_record_and_refine_log(tmp_path):
    log = [{"epoch": -1, "knn_top1": 10.0}] + [{"epoch": e, "loss": 5.0 - e, "knn_top1": 20.0 + e} for e in range(4)]
    refine = [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(5)]
    path = plot_training_curves(log, tmp_path / "c.png", refine_records=refine)
    assert path.stat().st_size > 5_000
    with Image.open(path) as img:
        assert img.size == (1800, 480)  # three 5 x 4 inch panels at 120 dpi


def test_series_skips_records_without_the_key_and_sorts():
    log = [{"epoch": 2, "loss": 1.0}, {"epoch": -1, "knn_top1": 9.0}, {"epoch": 0, "loss": 3.0}]
    assert _series(log, "loss") == ([0, 2], [3.0, 1.0])
    assert _series(log, "knn_top1") == ([-1], [9.0])


def test_curves_without_any_metric_raise(tmp_path):
    with pytest.raises(ValueError, match="no record"):
        plot_training_curves([{"epoch": 0}], tmp_path / "c.png")
