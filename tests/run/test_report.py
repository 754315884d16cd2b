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
    assert "| stage pretrain | 3.2 s |" in md and "final refinement loss" in md
    assert "| model.backbone | vit_tiny |" in md
    assert "![embedding tsne](figures/embedding_tsne.png)" in md
    assert "data:image/png;base64," in html_path.read_text()


def test_report_of_an_empty_or_missing_directory(tmp_path):
    md_path, _ = write_report(RunDir(tmp_path))
    assert "No metrics yet" in md_path.read_text()
    with pytest.raises(ConfigError, match="no such run directory"):
        write_report(RunDir(tmp_path / "missing"))
