"""`sslgraph run`: every stage runs once, finished stages are skipped, an interrupted stage is resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sslgraph.refine.train as refine_train
from sslgraph.config import load_config
from sslgraph.pipeline import STAGES, run_pipeline
from sslgraph.utils.io import read_jsonl
from tests.conftest import tiny_overrides

QUICK_LATER_STAGES = ["refine.epochs=3", "refine.hidden_dim=16", "refine.projector_dim=16", "refine.predictor_dim=16",
                      "eval.probe_seeds=2", "eval.backbone_probe_epochs=2", "viz.embed_samples=30", "viz.umap=false"]


def test_pipeline_runs_skips_and_resumes(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    cfg = load_config(overrides=[*tiny_overrides(), *QUICK_LATER_STAGES], data_root=str(data_root),
                      out_dir=str(tmp_path / "run"))
    run = Path(cfg.out_dir)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(refine_train, "run_refine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    assert set(json.loads((run / "pipeline.json").read_text())["stages"]) == {"pretrain", "export"}
    checkpoint_time = (run / "checkpoint.pt").stat().st_mtime_ns
    monkeypatch.undo()

    capsys.readouterr()
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "stage pretrain: done already, skipped" in out and "stage refine: running" in out
    assert (run / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time, "pretraining must not run again"
    assert set(json.loads((run / "pipeline.json").read_text())["stages"]) == set(STAGES)
    for name in ("refined.pt", "metrics.json", "report.md", "report.html"):
        assert (run / name).is_file(), name
    assert any((run / "figures").glob("*.png"))
    assert len(read_jsonl(run / "refine_log.jsonl")) == 3

    metrics_time = (run / "metrics.json").stat().st_mtime_ns
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert all(f"stage {stage}: done already, skipped" in out for stage in STAGES)
    assert (run / "metrics.json").stat().st_mtime_ns == metrics_time, "finished stages are skipped"

    run_pipeline(cfg, from_stage="evaluate")
    out = capsys.readouterr().out
    assert "stage refine: done already, skipped" in out and "stage evaluate: running" in out
    assert (run / "metrics.json").stat().st_mtime_ns > metrics_time
