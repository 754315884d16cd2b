"""`sslgraph ablate` on tiny data: four rows from three pretrainings (the graph rows share one), one table, one
chart; a second call skips every finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslgraph.cli import main
from sslgraph.run.ablate import ROWS, Row, markdown_table, row_values
from sslgraph.run.rundir import AblationDir
from tests.conftest import tiny_overrides
from tests.run.test_pipeline import QUICK_LATER_STAGES


def test_ablate_writes_four_rows_and_a_chart_and_resumes(
        image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, one_openmp_thread: None) -> None:
    out = tmp_path / "ablation"
    argv = ["ablate", "--data-root", str(image_root), "--out", str(out), *tiny_overrides(epochs=1),
            *QUICK_LATER_STAGES, "monitor.knn_at_init=false", "eval.backbone_probe_epochs=1",
            "eval.propagation_baseline=false"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    ablation = AblationDir(out)
    table = json.loads(ablation.table_json.read_text())
    assert [r["row"] for r in table["rows"]] == ["dino", "adasim", "graph", "graph + refinement"]
    assert [r["run"] for r in table["rows"]] == ["dino", "adasim", "graph", "graph"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["adasim", "dino", "graph"]
    for row in table["rows"]:
        assert row["epochs"] == 1 and row["teacher_knn_top1"] is not None and row["knn_top1"] is not None
    dino, _, raw, refined = table["rows"]
    assert raw["teacher_knn_top1"] == refined["teacher_knn_top1"], "the graph rows share one pretraining"
    assert raw["teacher_graph_purity"] is not None and dino.get("teacher_graph_purity") is None
    assert refined["probe_gain"] == pytest.approx(refined["probe"] - raw["probe"])
    md = ablation.table_md.read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 4  # header + four rows
    assert md in printed
    assert ablation.chart.is_file() and ablation.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in ("dino", "adasim", "graph"):
        assert ablation.run(method).metrics.is_file()

    checkpoint_time = ablation.run("graph").checkpoint.stat().st_mtime_ns
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "running" not in again and again.count("done already, skipped") == 2 + 2 + 4
    assert ablation.run("graph").checkpoint.stat().st_mtime_ns == checkpoint_time


def test_row_values_and_table_from_hand_written_metrics() -> None:
    metrics = {
        "backbones": {"feature_sets": {"teacher": {"knn": {"20": 45.3}, "linear_probe": {"top1": 47.5}}}},
        "nodes": {"feature_sets": {"raw": {"knn": {"20": 45.4}, "logistic_regression": {"mean": 51.26}},
                                   "refined": {"knn": {"20": 45.9}, "logistic_regression": {"mean": 51.76}}},
                  "graphs": {"teacher": {"train_to_train": {"same_class_share": 0.245}},
                             "student": {"train_to_train": {"same_class_share": 0.243}}}},
    }
    log = [{"epoch": -1}, {"epoch": 0, "images_per_sec": 230.0}, {"epoch": 1, "images_per_sec": 240.0}]
    backbone = row_values(ROWS[0], metrics, log, k=20)
    assert (backbone["knn_top1"], backbone["probe"], backbone["epochs"]) == (45.3, 47.5, 2)
    refined = row_values(Row("graph + refinement", "graph", "refined"), metrics, log, k=20)
    assert refined["knn_top1"] == 45.9 and refined["knn_gain"] == pytest.approx(0.5)
    assert refined["probe_gain"] == pytest.approx(0.5) and refined["teacher_graph_purity"] == 0.245
    table = markdown_table([backbone, refined], k=20, budget=4.0)
    assert "4 minutes of training steps per pretraining" in table
    assert "| graph + refinement | refined | 2 | 45.30 | 45.90 | 51.76 | 24.5 % / 24.3 % | +0.50 / +0.50 |" in table
    assert "| dino | backbone | 2 | 45.30 | 45.30 | 47.50 | – |  |" in table
