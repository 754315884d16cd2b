"""The GPU check's own command, proved on the CPU: pack a small CIFAR-10 subset into several shards, stash them
command by command as on the remote machine, then run the time-boxed check with device=cpu and 1-minute
budgets. Slow (several minutes): run with `-m slow`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "benchmarks" / "gpu"


def _python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, check=True, text=True, capture_output=True)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(image_root: Path, tmp_path: Path) -> None:
    pack, store, out = tmp_path / "pack", tmp_path / "store", tmp_path / "out"
    _python(str(GPU / "pack.py"), "--data-root", str(image_root), "--out", str(pack), "--train-subset", "1000",
            "--test-subset", "200", "--no-wheels", "--shard-mib", "1")
    manifest = json.loads((pack / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2 and all(s["bytes"] <= 2**20 for s in manifest["shards"])
    n_train = manifest["arrays"][0]["shape"][0]

    # As on the remote machine: each command brings a shard and stashes it; the last one brings the last shard
    # and the manifest, and runs.
    shards = [s["file"] for s in manifest["shards"]]
    for number, name in enumerate(shards[:-1]):
        brought = tmp_path / f"command{number}"
        brought.mkdir()
        (brought / name).write_bytes((pack / name).read_bytes())
        _python(str(GPU / "check.py"), "stash", "--pack", str(brought), "--store", str(store))
    assert sorted(p.name for p in store.iterdir()) == shards[:-1]
    last = tmp_path / "last-command"
    last.mkdir()
    for name in (shards[-1], "manifest.json"):
        (last / name).write_bytes((pack / name).read_bytes())

    batch = max(2, min(32, n_train // 20))  # at least 16 steps per epoch, so the budget's calibration runs
    # The GPU preset's loop (ViT, DINO objective, AdamW) with a ViT small enough for two shared CPU cores.
    quick = ["model.backbone=vit_mini", "model.patch_size=8", "model.out_dim=1024", "model.head_hidden_dim=256",
             "data.num_workers=0", f"optim.batch_size={batch}", "eval.probe_seeds=2", "eval.backbone_probe_epochs=2",
             "refine.epochs=2", "refine.hidden_dim=32", "refine.projector_dim=32", "refine.predictor_dim=32",
             "viz.embed_samples=100", "monitor.eval_batch_size=128"]
    done = _python(str(GPU / "check.py"), "run", "--pack", str(last), "--store", str(store), "--out", str(out),
                   "--device", "cpu", "--budget-minutes", "1", "--deadline-minutes", "30", "--no-install",
                   "--throughput-steps", "2", *[f"--set={item}" for item in quick])
    summary = json.loads((out / "check.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["throughput", "graph", "dino pretrain", "dino evaluate"]
    assert all(s.get("returncode") == 0 for s in summary["steps"]), summary["steps"]
    produced = sorted(p.name for p in out.iterdir())
    assert produced == ["check.json", "dino_metrics.json", "log.jsonl", "metrics.json", "report.html",
                        "throughput.json", "throughput.md"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    head = summary["headline"]
    assert head["knn_top1_k20"]["graph_teacher"] is not None and head["knn_top1_k20"]["dino_teacher"] is not None
    assert set(head["nodes"]) == {"raw", "propagated", "refined"}
    assert head["throughput"]["dino"]["loop_images_per_s"] > 0
    assert summary["budget_minutes"] == {"graph": 1.0, "dino": 1.0}
    assert "written" in done.stdout
