"""`sslgraph run` on CIFAR-10 (real, or the synthetic stand-in without $SSLGRAPH_DATA): every stage runs once,
done stages are skipped from their files, an interrupted stage is resumed, a redone stage redoes what reads it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import sslgraph.run.pipeline as pipeline_module
import sslgraph.run.refine as refine_stage
from sslgraph.config import Config, load_config
from sslgraph.errors import ConfigError
from sslgraph.run import RunDir
from sslgraph.run.pipeline import STAGES, pretrain_deadline, run_pipeline
from sslgraph.training.checkpoint import load_checkpoint
from sslgraph.training.trainer import CALIBRATION_STEPS
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


def _limited(**pipeline: float) -> Config:
    overrides = ["optim.budget_minutes=10", "optim.budget_scope=stage",
                 *(f"pipeline.{key}={value}" for key, value in pipeline.items())]
    return load_config(overrides=[*tiny_overrides(), *overrides])


def test_the_time_limit_gives_pretraining_what_the_later_stages_leave() -> None:
    # 10 minutes from t = 1000, 3 of them for the later stages: pretraining ends by 1000 + 7 * 60.
    cfg = _limited(time_limit_minutes=10, later_stages_minutes=3)
    assert pretrain_deadline(cfg, started_at=1000.0, now=1060.0) == 1420.0
    assert pretrain_deadline(_limited(), started_at=1000.0, now=1060.0) is None  # no limit, no deadline
    # 4 minutes, 3 kept, 30 s gone: 30 s left for pretraining is refused, naming the key.
    with pytest.raises(ConfigError, match=r"^pipeline.time_limit_minutes: 4 min .* leave pretraining 0.5 min"):
        pretrain_deadline(_limited(time_limit_minutes=4, later_stages_minutes=3), started_at=1000.0, now=1030.0)


def test_a_start_in_the_future_is_refused(tmp_path: Path) -> None:
    cfg = _limited(time_limit_minutes=20)
    cfg.out_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match="^--started-at: .* in the future"):
        run_pipeline(cfg, started_at=time.time() + 3600)
    assert not (tmp_path / "run").exists()


def test_a_time_limited_run_hands_pretraining_its_deadline_and_reports_an_overrun(
        image_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        one_openmp_thread: None) -> None:
    # A limit of 3 s with nothing kept for the later stages (the one-minute floor lifted for the test): the
    # 10-minute stage budget is cut to the calibration's 16 steps, and the later stages overrun the limit.
    monkeypatch.setattr(pipeline_module, "MIN_PRETRAIN_SECONDS", 0.0)
    cfg = load_config(overrides=[*tiny_overrides(batch=2), *QUICK_LATER_STAGES, "optim.budget_minutes=10",
                                 "optim.budget_scope=stage", "pipeline.time_limit_minutes=0.05",
                                 "pipeline.later_stages_minutes=0"],
                      data_root=str(image_root), out_dir=str(tmp_path / "run"))
    started = time.time()
    run = run_pipeline(cfg, started_at=started)
    out, err = capsys.readouterr()
    assert "the time limit leaves" in out and "pipeline finished in" in out and "(time limit 0.05 min)" in out
    assert "more than pipeline.time_limit_minutes" in err
    assert load_checkpoint(run.checkpoint)["total_iters"] == CALIBRATION_STEPS + 1
    last = json.loads(run.pipeline_state.read_text())["last_run"]
    assert last["time_limit_minutes"] == 0.05 and 0 < last["minutes"] <= (time.time() - started) / 60 + 0.01
