"""Stage A through the command line on CIFAR-10 (real, or the synthetic stand-in without $SSLGRAPH_DATA): run
files, DDP equivalence, kill-and-resume, refusing to overwrite, bad configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import sslgraph.training.trainer as trainer_module
from sslgraph.cli import main
from sslgraph.graph.export import load_graph
from sslgraph.run import RunDir
from sslgraph.training.checkpoint import load_checkpoint, pretrained_backbones
from sslgraph.utils.io import read_jsonl, safe_load
from tests.conftest import tiny_overrides


def _cli(args: list[str], *, nproc: int = 1) -> subprocess.Popen:
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


def _assert_same_tensors(actual: Any, expected: Any, where: str) -> None:
    """Every tensor in a (nested) state dict is bit-identical."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where} differs after resume"
    elif isinstance(expected, dict):
        for key, value in expected.items():
            _assert_same_tensors(actual[key], value, f"{where}.{key}")


def test_graph_pretraining_writes_logs_checkpoint_and_graphs(image_root: Path, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert main(["pretrain", "--data-root", str(image_root), "--out", str(run.root), *tiny_overrides()]) == 0
    records = read_jsonl(run.log)
    assert [r["epoch"] for r in records] == [-1, 0, 1]
    assert all(0.0 <= r["knn_top1"] <= 100.0 for r in records)
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["images_per_sec"] > 0 for r in records[1:])
    assert run.config.is_file() and any(run.tensorboard.iterdir())
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 2
    for stream in ("teacher", "student"):
        graph = load_graph(run.graph(stream))
        assert graph.num_nodes == 64 + 40
        assert int(graph.train_mask.sum()) == 64 and int(graph.test_mask.sum()) == 40
    cfg, teacher, student = pretrained_backbones(state, device=torch.device("cpu"))
    assert cfg.optim.epochs == 2 and not teacher.training and teacher.embed_dim == student.embed_dim


@pytest.mark.parametrize(("objective", "extra"), [
    ("dino", []),
    ("simclr", []),
    # the CPU preset's student search (the teacher's candidates, ranked per process before the gather), with the
    # edges accumulated in training exported, so the lists themselves are compared
    ("simclr", ["method.student_search=teacher", "method.export_edges=fifo"])])
def test_ddp_two_processes_match_one_process(image_root: Path, tmp_path: Path, objective: str,
                                             extra: list[str]) -> None:
    """Same global batch: weights, objective state, banks and graphs after the first steps agree with a single
    process (for simclr the negatives are all-gathered with their gradients)."""
    args = ["pretrain", "--data-root", str(image_root), *tiny_overrides(epochs=1, train=64, batch=16), *extra,
            "monitor.knn_at_init=false", "monitor.knn_every=0", "method.init_bank_pass=false",
            # SGD: Adam's first step moves every weight by +-lr whatever its gradient's size, so a last-bit
            # difference in a near-zero gradient (summation order differs between 1 and 2 processes) would flip it.
            f"method.objective={objective}", "optim.optimizer=sgd",
            # BatchNorm statistics are per process on CPUs (no SyncBatchNorm there): a BN-free head isolates the
            # all-gathered contrastive loss and its gradients.
            "model.head_batch_norm=false",
            # float32: bf16 autocast (the default on CPUs with native bf16) rounds differently when the batch is
            # split, which would hide the all-reduce's exactness behind rounding noise
            "optim.precision=fp32"]
    single = _cli([*args, "--out", str(tmp_path / "one")])
    _finish(single)
    double = _cli([*args, "--out", str(tmp_path / "two")], nproc=2)
    _finish(double)
    one, two = (safe_load(RunDir(tmp_path / name).checkpoint) for name in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key, value in one["student"].items():
        torch.testing.assert_close(two["student"][key], value, rtol=1e-4, atol=1e-5, msg=f"student {key}")
    for key, value in one["objective"].items():
        torch.testing.assert_close(two["objective"][key], value, rtol=1e-4, atol=1e-6, msg=f"objective {key}")
    for stream in ("teacher", "student"):
        g1, g2 = (load_graph(RunDir(tmp_path / name).graph(stream)) for name in ("one", "two"))
        assert torch.equal(g1.edge_index, g2.edge_index), stream
        torch.testing.assert_close(g1.x, g2.x, rtol=1e-4, atol=1e-5)


def test_a_stage_budget_under_ddp_plans_one_length_for_both_processes(image_root: Path, tmp_path: Path) -> None:
    """The calibration's timed embedding pass is sharded and all-gathered, and the plan all-reduced: both
    processes must reach the end of the same, budgeted run (a mismatch would hang a collective or fail)."""
    args = ["pretrain", "--data-root", str(image_root), *tiny_overrides(epochs=3, train=64, batch=4),
            "monitor.knn_at_init=false", "method.init_bank_pass=false", "optim.budget_minutes=0.05",
            "optim.budget_scope=stage", "--out", str(tmp_path / "two")]
    _finish(_cli(args, nproc=2))
    state = safe_load(RunDir(tmp_path / "two").checkpoint)
    assert state["world_size"] == 2 and state["finished"]
    assert state["budget_plan"]["end_reserve_seconds"] > trainer_module.END_FIXED_SECONDS
    assert state["total_iters"] >= trainer_module.CALIBRATION_STEPS + 1


def test_kill_and_resume_matches_uninterrupted_run(image_root: Path, tmp_path: Path) -> None:
    args = ["pretrain", "--data-root", str(image_root), *tiny_overrides(epochs=4, train=96, batch=16),
            "monitor.knn_every=0", "model.drop_path_rate=0.1"]
    full = RunDir(tmp_path / "full")
    _finish(_cli([*args, "--out", str(full.root)]))

    killed = RunDir(tmp_path / "killed")
    proc = _cli([*args, "--out", str(killed.root)])
    deadline = time.time() + 300
    while time.time() < deadline:
        if killed.checkpoint.is_file() and safe_load(killed.checkpoint)["epoch"] >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    interrupted_at = safe_load(killed.checkpoint)["epoch"]
    assert 1 <= interrupted_at < 4, "the run must be killed before it finished"

    _finish(_cli([*args, "--out", str(killed.root), "--resume"]))
    done, resumed = safe_load(full.checkpoint), safe_load(killed.checkpoint)
    assert resumed["epoch"] == done["epoch"] == 4
    for part in ("student", "teacher", "objective", "method"):
        _assert_same_tensors(resumed[part], done[part], part)
    epochs = [r["epoch"] for r in read_jsonl(killed.log)]
    assert epochs == [-1, 0, 1, 2, 3], "the log holds each epoch once after a resume"


def test_existing_run_needs_resume(image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["pretrain", "--data-root", str(image_root), "--out", str(tmp_path / "r"),
            *tiny_overrides(method="dino", epochs=1), "monitor.knn_at_init=false"]
    assert main(args) == 0
    assert not RunDir(tmp_path / "r").graphs_dir.exists(), "dino keeps no graphs"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("override", "key"), [
    ("model.backbone=vit_huge", "model.backbone"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.batch_size=4096", "optim.batch_size"),
    ("method.topk=2", "method.topk"),
    ("optim.epochs=zero", "optim.epochs"),
])
def test_bad_config_fails_at_start_naming_the_key(image_root: Path, tmp_path: Path, override: str, key: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    code = main(["pretrain", "--data-root", str(image_root), "--out", str(tmp_path / "bad"),
                 *tiny_overrides(), override])
    assert code == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1
    assert not RunDir(tmp_path / "bad").checkpoint.exists() and not (tmp_path / "bad").exists()


def test_a_float32_cpu_settles_the_width_once_and_a_resume_under_another_is_refused(
        image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "narrow"
    args = ["pretrain", "--data-root", str(image_root), "--out", str(out),
            *tiny_overrides(method="dino", epochs=1), "monitor.knn_at_init=false", "model.backbone=resnet_mini",
            "model.cpu_float32_width=8"]
    # optim.precision=fp32: the steps run in float32 on this CPU, so the width becomes 8 (resnet_mini's own is 16).
    assert main([*args, "optim.precision=fp32"]) == 0
    run = RunDir(out)
    model = load_checkpoint(run.checkpoint)["config"]["model"]
    assert (model["width"], model["cpu_width"], model["cpu_float32_width"]) == (8, None, None)
    assert run.saved_config()["model"]["width"] == 8
    state = safe_load(run.checkpoint)
    _, teacher, _ = pretrained_backbones(state, device=torch.device("cpu"))
    assert teacher.embed_dim == 64
    # In bf16 the same settings build resnet_mini's own width: continuing the 8-wide checkpoint is refused.
    capsys.readouterr()
    assert main([*args, "optim.precision=bf16", "--resume"]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with model.width=8" in err and "model.width=None" in err
