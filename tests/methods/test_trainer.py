"""The pretraining loop end to end on real CIFAR-10 images: runs, DDP equivalence, kill-and-resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sslgraph.cli import main
from sslgraph.config import load_config
from sslgraph.graph.export import load_graph
from sslgraph.methods import base
from sslgraph.methods.base import NonFiniteLossError, Trainer, load_pretrained
from sslgraph.utils.io import read_jsonl, safe_load
from tests.conftest import tiny_overrides


def _cli(args: list[str], *, nproc: int = 1, timeout: float = 600) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2")}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "sslgraph", *args]
    else:
        cmd = [sys.executable, "-m", "sslgraph", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_graph_pretraining_on_real_cifar_writes_logs_checkpoint_and_graphs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--data-root", str(data_root), "--out", str(out), *tiny_overrides()]) == 0
    records = read_jsonl(out / "log.jsonl")
    assert [r["epoch"] for r in records] == [-1, 0, 1]
    assert all(0.0 <= r["knn_top1"] <= 100.0 for r in records)
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["images_per_sec"] > 0 for r in records[1:])
    assert (out / "config.yaml").is_file() and any((out / "tb").iterdir())
    state = safe_load(out / "checkpoint.pt")
    assert state["epoch"] == 2
    for stream in ("teacher", "student"):
        graph = load_graph(out / "graphs" / f"{stream}.pt")
        assert graph.num_nodes == 64 + 40
        assert int(graph.train_mask.sum()) == 64 and int(graph.test_mask.sum()) == 40
    cfg, teacher, student = load_pretrained(out, device=torch.device("cpu"))
    assert cfg.optim.epochs == 2 and not teacher.training and teacher.embed_dim == student.embed_dim


def test_ddp_two_processes_match_one_process(data_root: Path, tmp_path: Path) -> None:
    """Same global batch: weights, centre, banks and graphs after the first steps agree with a single process."""
    args = ["pretrain", "--data-root", str(data_root), *tiny_overrides(epochs=1, train=64, batch=16),
            "monitor.knn_at_init=false", "monitor.knn_every=0", "method.init_bank_pass=false"]
    single = _cli([*args, "--out", str(tmp_path / "one")])
    _finish(single)
    double = _cli([*args, "--out", str(tmp_path / "two")], nproc=2)
    _finish(double)
    one, two = (safe_load(tmp_path / name / "checkpoint.pt") for name in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key, value in one["student"].items():
        torch.testing.assert_close(two["student"][key], value, rtol=1e-4, atol=1e-5, msg=f"student {key}")
    torch.testing.assert_close(two["center"], one["center"], rtol=1e-4, atol=1e-6)
    for stream in ("teacher", "student"):
        g1, g2 = (load_graph(tmp_path / name / "graphs" / f"{stream}.pt") for name in ("one", "two"))
        assert torch.equal(g1.edge_index, g2.edge_index), stream
        torch.testing.assert_close(g1.x, g2.x, rtol=1e-4, atol=1e-5)


def test_kill_and_resume_matches_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    args = ["pretrain", "--data-root", str(data_root), *tiny_overrides(epochs=4, train=96, batch=16),
            "monitor.knn_every=0", "model.drop_path_rate=0.1"]
    _finish(_cli([*args, "--out", str(tmp_path / "full")]))

    killed = tmp_path / "killed"
    proc = _cli([*args, "--out", str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpt = killed / "checkpoint.pt"
        if ckpt.is_file() and safe_load(ckpt)["epoch"] >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    interrupted_at = safe_load(killed / "checkpoint.pt")["epoch"]
    assert 1 <= interrupted_at < 4, "the run must be killed before it finished"

    _finish(_cli([*args, "--out", str(killed), "--resume"]))
    full, resumed = safe_load(tmp_path / "full" / "checkpoint.pt"), safe_load(killed / "checkpoint.pt")
    assert resumed["epoch"] == full["epoch"] == 4
    for net in ("student", "teacher"):
        for key, value in full[net].items():
            assert torch.equal(resumed[net][key], value), f"{net}.{key} differs after resume"
    assert torch.equal(resumed["center"], full["center"])
    for key, value in full["method"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed["method"][key], value), f"method state {key} differs after resume"
    epochs = [r["epoch"] for r in read_jsonl(killed / "log.jsonl")]
    assert epochs == [-1, 0, 1, 2, 3], "the log holds each epoch once after a resume"


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(overrides=tiny_overrides(method="dino", epochs=3), data_root=str(data_root),
                      out_dir=str(tmp_path / "nan"))
    real_loss = base.dino_loss
    calls = {"n": 0}

    def loss_turning_nan(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] > 4 else value  # 4 steps per epoch: NaN in epoch 1

    monkeypatch.setattr(base, "dino_loss", loss_turning_nan)
    trainer = Trainer(cfg, device=torch.device("cpu"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1"):
        trainer.fit()
    assert safe_load(tmp_path / "nan" / "checkpoint.pt")["epoch"] == 1


def test_existing_run_needs_resume(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["pretrain", "--data-root", str(data_root), "--out", str(tmp_path / "r"),
            *tiny_overrides(method="dino", epochs=1), "monitor.knn_at_init=false"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "key"), [
    ("model.backbone=vit_huge", "model.backbone"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.batch_size=4096", "optim.batch_size"),
    ("method.topk=2", "method.topk"),
    ("optim.epochs=zero", "optim.epochs"),
])
def test_bad_config_fails_at_start_naming_the_key(data_root: Path, tmp_path: Path, override: str, key: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    code = main(["pretrain", "--data-root", str(data_root), "--out", str(tmp_path / "bad"),
                 *tiny_overrides(), override])
    assert code == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
