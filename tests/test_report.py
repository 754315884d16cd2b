"""The report library: every metric in both renderings, summary rows, timings, figures."""

from pathlib import Path

from PIL import Image

from sslgraph.config import Config, to_dict
from sslgraph.report import ReportInputs, exact, flatten, render_html, render_markdown, report_blocks


def _metrics() -> dict:
    probe = {"mean": 81.23456, "std": 0.4321, "accuracies": [80.5, 81.75, 81.4537],
             "protocol": {"lr": 0.01, "steps": 100, "seeds": 3}}
    return {
        "dataset": {"name": "cifar10", "train_subset": 500, "test_subset": None},
        "seed": 7,
        "backbone": "vit_mini",
        "seconds": {"backbones": 12.345, "nodes": 3.21},
        "backbones": {
            "splits": {"train": 500, "test": 200},
            "feature_sets": {
                "teacher": {"dim": 192, "knn": {"10": 55.5, "20": 56.125},
                            "linear_probe": {"top1": 61.0625, "protocol": {"epochs": 100, "lr_scaled": 0.000125}}},
                "student": {"dim": 192, "knn": {"10": 54.0, "20": 53.9375}},
            },
        },
        "nodes": {
            "splits": {"train": 500, "test": 200},
            "feature_sets": {
                "raw": {"dim": 384, "knn": {"10": 57.75, "20": 58.3125}, "logistic_regression": probe},
                "refined": {"dim": 1536, "knn": {"10": 63.5625, "20": 64.875},
                            "logistic_regression": dict(probe, mean=66.0312)},
            },
            "graphs": {"teacher": {"nodes": 700, "edges": 4321, "in_degree_test": {"histogram": [0, 3, 197]},
                                   "train_to_test": {"same_class_share": 0.61234}},
                       "student": {"nodes": 700, "edges": 4290, "in_degree_test": {"histogram": [0, 4, 196]},
                                   "train_to_test": {"same_class_share": 0.59876}}},
        },
    }


def inputs(tmp_path: Path, **changes) -> ReportInputs:
    (tmp_path / "figures").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "figures" / "embedding_tsne.png")
    log = [{"epoch": -1, "knn_top1": 11.0}]
    log += [{"epoch": epoch, "loss": 4.0 - epoch, "knn_top1": 30.0 + epoch, "epoch_seconds": 10.0,
             "images_per_sec": 50.0} for epoch in range(2)]
    values = dict(title="demo", metrics=_metrics(), config=to_dict(Config()), stage_seconds={"pretrain": 12.5},
                  pretrain_log=log, refine_log=[{"epoch": 0, "loss": 0.5, "seconds": 1.5}],
                  figures=[Path("figures/embedding_tsne.png")])
    values.update(changes)
    return ReportInputs(**values)


def test_report_contains_every_metric_value(tmp_path):
    blocks = report_blocks(inputs(tmp_path))
    md, page = render_markdown(blocks), render_html(blocks, tmp_path)
    leaves = flatten(_metrics())
    assert len(leaves) > 30
    for key, value in leaves:
        assert exact(value) in md, key
        assert exact(value).replace("\"", "&quot;") in page or exact(value) in page, key


def test_report_summary_timings_and_figures(tmp_path):
    blocks = report_blocks(inputs(tmp_path))
    md, page = render_markdown(blocks), render_html(blocks, tmp_path)
    assert md.startswith("# sslgraph run: demo")
    assert "| nodes: refined (GNN) | 1536 | 63.56 | 64.88 | 66.03 ± 0.43 (logistic, 3 seeds) |" in md
    assert "| backbone: teacher | 192 | 55.50 | 56.12 | 61.06 (SGD probe) |" in md
    assert "20.0 s (10.0 s/epoch)" in md and "11.00 / 31.00" in md and "| stage pretrain | 12.5 s |" in md
    assert "| method.name | graph |" in md
    assert "![embedding tsne](figures/embedding_tsne.png)" in md
    assert "data:image/png;base64," in page and 'src="figures/' not in page
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page


def test_report_says_what_is_missing(tmp_path):
    md = render_markdown(report_blocks(ReportInputs(title="empty")))
    assert "No metrics yet" in md and "No saved configuration" in md and "No training logs" in md


def test_flatten_and_exact():
    assert flatten({"a": {"b": 1, "c": [1, 2.5]}, "d": None}) == [("a.b", 1), ("a.c", [1, 2.5]), ("d", None)]
    assert exact([1, 2.5]) == "1, 2.5" and exact(None) == "null" and exact(0.1) == "0.1"
