"""A stop signal during refinement saves the state after the current epoch and stops; the rerun ends with the
embeddings of an uninterrupted run. The signal is sent from inside an epoch, so nothing depends on timing."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import sslgraph.refine.train as train_module
from sslgraph.errors import Preempted
from sslgraph.refine.train import refine_graphs
from sslgraph.utils import preempt
from sslgraph.utils.io import read_jsonl, safe_load
from tests.refine.test_train import CPU, graphs, tiny_cfg


def test_sigterm_saves_the_epoch_and_the_rerun_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = graphs()
    cfg = tiny_cfg(epochs=5, feature_mask=0.2)
    reference = refine_graphs(teacher, student, cfg, device=CPU, progress=False)

    ckpt, log = tmp_path / "refine_checkpoint.pt", tmp_path / "refine_log.jsonl"
    real_step = train_module.train_step
    calls = {"n": 0}

    def signalled(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2:  # during epoch 1 (one full-batch step per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", signalled)
    with preempt.stop_signals(), pytest.raises(Preempted, match="refinement stopped by SIGTERM after epoch 1") as info:
        refine_graphs(teacher, student, cfg, device=CPU, progress=False, checkpoint_path=ckpt, log_path=log,
                      checkpoint_every=10)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert safe_load(ckpt)["epoch"] == 2 and [r["epoch"] for r in read_jsonl(log)] == [0, 1]
    monkeypatch.setattr(train_module, "train_step", real_step)

    with preempt.stop_signals():
        resumed = refine_graphs(teacher, student, cfg, device=CPU, progress=False, checkpoint_path=ckpt,
                                log_path=log, checkpoint_every=10)
    assert torch.equal(resumed.embeddings, reference.embeddings) and resumed.losses == reference.losses
    assert [r["epoch"] for r in read_jsonl(log)] == list(range(5))
