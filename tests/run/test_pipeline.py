"""`sslgraph run` on CIFAR-10 (real, or the synthetic stand-in without $SSLGRAPH_DATA): every stage runs once,
done stages are skipped from their files, an interrupted stage is resumed, a redone stage redoes what reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sslgraph.run.refine as refine_stage
from sslgraph.config import load_config
from sslgraph.errors import ConfigError
from sslgraph.run import RunDir
from sslgraph.run.pipeline import STAGES, run_pipeline
from sslgraph.utils.io import read_jsonl
from tests.conftest import tiny_overrides

QUICK_LATER_STAGES = ["refine.epochs=3", "refine.hidden_dim=16", "refine.projector_dim=16", "refine.predictor_dim=16",
                      "eval.probe_seeds=2", "eval.backbone_probe_epochs=2", "viz.embed_samples=30", "viz.umap=false"]


def _ran(out: str) -> list[str]:
    return [stage for stage in STAGES if f"stage {stage}: running" in out]


def test_pipeline_runs_skips_and_resumes(image_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture, one_openmp_thread: None) -> None:
    cfg = load_config(overrides=[*tiny_overrides(), *QUICK_LATER_STAGES], data_root=str(image_root),
                      out_dir=str(tmp_path / "run"))
    run = RunDir(cfg.out_dir)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(refine_stage, "run_refine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    assert _ran(capsys.readouterr().out) == ["pretrain", "refine"], "pretraining wrote the graphs: no export"
    assert set(json.loads(run.pipeline_state.read_text())["stages"]) == {"pretrain"}
    checkpoint_time = run.checkpoint.stat().st_mtime_ns
    monkeypatch.undo()

    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "stage pretrain: done already, skipped" in out and _ran(out) == ["refine", "evaluate", "visualize", "report"]
    assert run.checkpoint.stat().st_mtime_ns == checkpoint_time, "pretraining must not run again"
    assert set(json.loads(run.pipeline_state.read_text())["stages"]) == set(STAGES) - {"export"}
    for path in (run.refined, run.metrics, run.report_md, run.report_html):
        assert path.is_file(), path
    assert run.figure_paths and not run.refine_checkpoint.exists()
    assert len(read_jsonl(run.refine_log)) == 3

    metrics_time = run.metrics.stat().st_mtime_ns
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert all(f"stage {stage}: done already, skipped" in out for stage in STAGES)
    assert run.metrics.stat().st_mtime_ns == metrics_time, "finished stages are skipped"

    run_pipeline(cfg, from_stage="evaluate")
    out = capsys.readouterr().out
    assert "stage refine: done already, skipped" in out and _ran(out) == ["evaluate", "visualize", "report"]
    assert run.metrics.stat().st_mtime_ns > metrics_time

    run.refined.touch()  # as if `sslgraph refine` had been run again by hand
    run_pipeline(cfg)
    assert _ran(capsys.readouterr().out) == ["evaluate", "visualize", "report"]


def test_pipeline_needs_a_method_that_keeps_graphs(tmp_path: Path) -> None:
    cfg = load_config(overrides=tiny_overrides(method="dino"), out_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="method.name: `sslgraph run`.*'dino'"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()
