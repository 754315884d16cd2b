"""Pre-emption: a stop signal in the middle of an epoch saves that step and exits with 128 + the signal's number;
resuming from it, or from a time-based mid-epoch checkpoint left by a kill without warning, ends exactly where
an uninterrupted run ends. The signal is sent from inside a training step, so nothing depends on timing."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from sslgraph.cli import main
from sslgraph.config import load_config
from sslgraph.run import RunDir
from sslgraph.run.pipeline import PIPELINE, stage_done
from sslgraph.training.trainer import Trainer
from sslgraph.utils.io import read_jsonl, safe_load
from tests.conftest import tiny_overrides

STEPS_PER_EPOCH = 4  # 16 training images, batches of 4


def _args(image_root: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data-root", str(image_root), "--out", str(out),
            *tiny_overrides(epochs=2, train=16, test=8, batch=4), "monitor.knn_every=0", "monitor.knn_at_init=false",
            "model.drop_path_rate=0.1", "data.image_size=16", *extra]


def _assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for part in ("student", "teacher", "objective", "method", "optimizer"):
        _same(actual[part], expected[part], part)


def _same(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where} differs from the uninterrupted run"
    elif isinstance(expected, dict):
        for key, value in expected.items():
            _same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        for k, value in enumerate(expected):
            _same(actual[k], value, f"{where}[{k}]")


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, action: Any) -> None:
    """Run ``action`` right after the ``step``-th training step of the process (1-based)."""
    original = Trainer.training_step
    calls = {"n": 0}

    def counted(self: Trainer, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            action()
        return loss

    monkeypatch.setattr(Trainer, "training_step", counted)


@pytest.fixture(scope="module")
def uninterrupted(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = RunDir(tmp_path_factory.mktemp("preempt") / "full")
    assert main(_args(image_root, run.root)) == 0
    return run


def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(image_root: Path, tmp_path: Path, uninterrupted: RunDir,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    run = RunDir(tmp_path / "run")
    _interrupt_at(monkeypatch, STEPS_PER_EPOCH + 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert main(_args(image_root, run.root)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sslgraph: stopped by SIGTERM at epoch 1, step 2 of 4"), err
    state = safe_load(run.checkpoint)
    assert (state["epoch"], state["step"], state["finished"]) == (1, 2, False)
    assert not run.lock.exists(), "the lock is released on the way out"
    monkeypatch.undo()

    assert main([*_args(image_root, run.root), "--resume", "auto"]) == 0
    assert "at epoch 1, step 2" in capsys.readouterr().out
    _assert_same_state(safe_load(run.checkpoint), safe_load(uninterrupted.checkpoint))
    assert [r["epoch"] for r in read_jsonl(run.log)] == [0, 1]
    assert read_jsonl(run.log)[1]["loss"] == pytest.approx(read_jsonl(uninterrupted.log)[1]["loss"], rel=1e-6)
    for stream in ("teacher", "student"):
        graphs = [safe_load(r.graph(stream)) for r in (run, uninterrupted)]
        assert torch.equal(graphs[0]["edge_index"], graphs[1]["edge_index"])


def test_time_based_checkpoint_bounds_a_kill_without_warning(image_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With a checkpoint due at every step, a process killed mid-epoch (here: stopped dead by an exception,
    nothing saved on the way out) leaves the state of the step before; resuming a mid-epoch state is exact
    (the test above)."""
    run = RunDir(tmp_path / "run")

    def die() -> None:
        raise KeyboardInterrupt  # a kill: no handler of the project runs, no checkpoint of this step

    _interrupt_at(monkeypatch, 3, die)
    assert main(_args(image_root, run.root, "optim.checkpoint_every_minutes=1e-9")) == 130
    state = safe_load(run.checkpoint)
    assert (state["epoch"], state["step"], state["finished"]) == (0, 2, False), "the last step before the kill"


def test_finished_pretraining_is_not_redone_by_run(image_root: Path, tmp_path: Path,
                                                                         uninterrupted: RunDir) -> None:
    """`sslgraph run` after `sslgraph pretrain` (no pipeline.json): pretraining and export count as done."""
    cfg = load_config(overrides=tiny_overrides(epochs=2, train=16, test=8, batch=4), out_dir=str(uninterrupted.root))
    assert not uninterrupted.pipeline_state.exists()
    done = {stage.name: stage_done(stage, uninterrupted, cfg) for stage in PIPELINE}
    assert done["pretrain"] and done["export"] and not done["refine"]


def test_resume_on_another_data_set_is_refused(image_root: Path, uninterrupted: RunDir,
                                               capsys: pytest.CaptureFixture) -> None:
    args = [*_args(image_root, uninterrupted.root), "data.train_subset=12", "--resume"]
    assert main(args) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written for another data set (train split: 12 images now, 16 when" in err[0], err
