"""The report stage gathers a run directory's files into both renderings."""

import json

import pytest
from PIL import Image

from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.run import RunDir
from sslgraph.run.report import write_report
from sslgraph.utils.io import append_jsonl


@pytest.fixture()
def run(tmp_path) -> RunDir:
    run = RunDir(tmp_path)
    run.metrics.write_text(json.dumps({"seed": 7, "backbone": "vit_mini", "nodes": {"feature_sets": {
        "raw": {"dim": 384, "knn": {"10": 57.75}}}}}))
    run.write_config(Config())
    append_jsonl(run.log, {"epoch": 0, "loss": 4.0, "epoch_seconds": 10.0})
    append_jsonl(run.refine_log, {"epoch": 0, "loss": 0.5, "seconds": 1.5})
    run.write_pipeline_state({"stages": {"pretrain": {"seconds": 3.25, "finished": 0.0}}})
    run.figures_dir.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(run.figure("embedding_tsne"))
    return run


def test_report_from_run_files(run):
    md_path, html_path = write_report(run)
    assert (md_path, html_path) == (run.report_md, run.report_html)
    md = md_path.read_text()
    assert f"# sslgraph run: {run.root.name}" in md
    assert "| nodes: raw [teacher; student] | 384 | 57.75 |" in md
    assert "| stage pretrain | 3.25 s |" in md and "final refinement loss" in md
    assert "| model.backbone | vit_tiny |" in md
    assert "![t-SNE of the held-out nodes' features" in md and "(figures/embedding_tsne.png)" in md
    assert md.index("## Headline") < md.index("## Configuration")
    assert not run.figure("degree_histograms").exists()  # no graph statistics, no degree figure
    assert "data:image/png;base64," in html_path.read_text()


def test_report_of_an_empty_or_missing_directory(tmp_path):
    md_path, _ = write_report(RunDir(tmp_path))
    assert "No metrics yet" in md_path.read_text()
    with pytest.raises(ConfigError, match="no such run directory"):
        write_report(RunDir(tmp_path / "missing"))


def test_report_draws_the_degree_histograms_from_the_metrics(run):
    metrics = json.loads(run.metrics.read_text())
    metrics["nodes"]["graphs"] = {
        stream: {"nodes": 60, "edges": 700, "train_to_train": {"edges": 650, "same_class_share": share},
                 "in_degree_train": {"min": 9, "mean": 9.9, "max": 10, "histogram": [0] * 9 + [5, 45]},
                 "in_degree_test": {"min": 5, "mean": 5.0, "max": 5, "histogram": [0, 0, 0, 0, 0, 10]}}
        for stream, share in (("teacher", 0.24531334555646198), ("student", 0.2426763231796622))}
    run.metrics.write_text(json.dumps(metrics))
    md_path, _ = write_report(run)
    assert run.figure("degree_histograms").stat().st_size > 5_000
    md = md_path.read_text()
    graph_section = md[md.index("## Graph statistics"):md.index("## All metrics")]
    assert "![In-degree of the training and test nodes in each graph](figures/degree_histograms.png)" in graph_section
    assert "0, 0, 0" not in graph_section and "| edges training -> training: same-class share | 24.5 % | 24.3 % |" \
        in graph_section
    assert "teacher 24.5 %, student 24.3 %" in md[:md.index("## Backbone results")]
