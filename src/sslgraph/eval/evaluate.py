"""Stage C: every evaluation of a run, written with its protocol to ``RUN/metrics.json``.

Two independent parts, each usable alone and each skipped (with the reason recorded) when its input is absent:
the frozen backbones (``checkpoint.pt``: kNN of teacher and student, linear probe of the teacher) and the node
features (``graphs/*.pt`` and ``refined.pt``: kNN and logistic regression of raw and refined embeddings with
identical settings, which is the refinement ablation, plus graph statistics).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.data import EvalDataset, build_dataset, eval_transform
from sslgraph.eval.features import extract_features
from sslgraph.eval.graph_stats import graph_statistics
from sslgraph.eval.knn import knn_accuracy
from sslgraph.eval.linear import linear_probe, logistic_regression_probe
from sslgraph.graph.export import load_graph
from sslgraph.methods.base import CHECKPOINT_NAME, autocast_dtype, load_pretrained
from sslgraph.utils import dist
from sslgraph.utils.io import atomic_write_text, safe_load

METRICS_NAME = "metrics.json"
REFINED_NAME = "refined.pt"
GRAPH_STREAMS = ("teacher", "student")


def _knn_protocol(cfg: Config, *, train: str, test: str) -> dict[str, Any]:
    return {
        "classifier": "weighted kNN (DINO): cosine similarity, votes weighted by exp(sim / T)",
        "ks": list(cfg.eval.knn_ks),
        "temperature": cfg.eval.knn_temperature,
        "train": train,
        "test": test,
        "metric": "top-1 accuracy (%)",
    }


def _knn(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, cfg: Config) -> dict[str, float]:
    accuracy = knn_accuracy(train, train_labels, test, test_labels, ks=cfg.eval.knn_ks,
                            temperature=cfg.eval.knn_temperature)
    return {str(k): value for k, value in accuracy.items()}


def _feature_fn(module: Callable[[Tensor], Tensor], cfg: Config, device: torch.device) -> Callable[[Tensor], Tensor]:
    """Run ``module`` under the run's autocast precision and return float32 features."""
    amp = autocast_dtype(cfg.optim.precision, device)

    def fn(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
            return module(x).float()

    return fn


def evaluate_backbones(run_dir: Path, cfg: Config, *, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """kNN of the teacher and student backbones and the teacher's linear probe, on clean images."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        return {"skipped": f"no {CHECKPOINT_NAME} in {run_dir}"}
    _, teacher, student = load_pretrained(run_dir, device=device)
    bases = {split: build_dataset(cfg.data, split) for split in ("train", "test")}
    sets = {split: EvalDataset(base, eval_transform(cfg.data)) for split, base in bases.items()}
    labels = {split: base.targets.to(device) for split, base in bases.items()}

    def features(module: Callable[[Tensor], Tensor], split: str, desc: str) -> Tensor:
        return extract_features(_feature_fn(module, cfg, device), sets[split],
                                batch_size=cfg.monitor.eval_batch_size, device=device,
                                num_workers=cfg.data.num_workers, progress=progress, desc=desc)

    result: dict[str, Any] = {
        "splits": {split: len(base) for split, base in bases.items()},
        "knn_protocol": _knn_protocol(cfg, train="training images (clean)", test="held-out images (clean)"),
        "feature_sets": {},
    }
    for name, backbone in (("teacher", teacher), ("student", student)):
        train, test = features(backbone, "train", f"{name} train"), features(backbone, "test", f"{name} test")
        result["feature_sets"][name] = {
            "dim": int(train.shape[1]),
            "knn": _knn(train, labels["train"], test, labels["test"], cfg),
        }
    del train, test
    if not cfg.eval.backbone_probe:
        result["linear_probe_skipped"] = "eval.backbone_probe is false"
        return result
    blocks = cfg.eval.backbone_probe_blocks
    probe = partial(teacher.probe_features, n_last_blocks=blocks)
    train, test = features(probe, "train", "teacher probe train"), features(probe, "test", "teacher probe test")
    probe_result = linear_probe(train, labels["train"], test, labels["test"], epochs=cfg.eval.backbone_probe_epochs,
                                lr=cfg.eval.backbone_probe_lr, batch_size=cfg.eval.backbone_probe_batch_size,
                                seed=cfg.seed, device=device)
    probe_result["protocol"]["input"] = f"teacher probe_features(n_last_blocks={blocks}), dim {train.shape[1]}"
    result["feature_sets"]["teacher"]["linear_probe"] = probe_result
    return result


def _load_node_graphs(run_dir: Path) -> dict[str, Data]:
    graphs = {stream: load_graph(run_dir / "graphs" / f"{stream}.pt") for stream in GRAPH_STREAMS}
    teacher, student = graphs["teacher"], graphs["student"]
    for key in ("y", "train_mask", "test_mask"):
        if not torch.equal(getattr(teacher, key).cpu(), getattr(student, key).cpu()):
            raise ValueError(f"{run_dir / 'graphs'}: teacher.pt and student.pt disagree on {key!r}")
    return graphs


def _load_refined(path: Path, reference: Data) -> Tensor:
    """The refined embeddings, after checking they describe the same nodes as the graphs."""
    refined = safe_load(path)
    for key in ("embeddings", "y", "train_mask", "test_mask"):
        if key not in refined:
            raise ValueError(f"{path}: missing key {key!r}")
    for key in ("y", "train_mask", "test_mask"):
        if not torch.equal(refined[key].cpu(), getattr(reference, key).cpu()):
            raise ValueError(f"{path}: {key!r} differs from graphs/teacher.pt; refine again after exporting")
    return refined["embeddings"]


def evaluate_node_features(run_dir: Path, cfg: Config, *, device: torch.device) -> dict[str, Any]:
    """kNN and logistic regression on the graph nodes: raw [teacher; student] features vs refined embeddings."""
    run_dir = Path(run_dir)
    missing = [f"graphs/{s}.pt" for s in GRAPH_STREAMS if not (run_dir / "graphs" / f"{s}.pt").is_file()]
    if missing:
        return {"skipped": f"missing {', '.join(missing)} in {run_dir}"}
    graphs = _load_node_graphs(run_dir)
    teacher, student = graphs["teacher"], graphs["student"]
    y = teacher.y.to(device=device, dtype=torch.long)
    train_mask = teacher.train_mask.to(device=device, dtype=torch.bool)
    test_mask = teacher.test_mask.to(device=device, dtype=torch.bool)

    feature_sets: dict[str, Tensor] = {
        "raw": torch.cat([teacher.x, student.x], dim=1),
        "teacher": teacher.x,
        "student": student.x,
    }
    result: dict[str, Any] = {
        "splits": {"train": int(train_mask.sum().item()), "test": int(test_mask.sum().item())},
        "num_classes": int(y.max().item()) + 1,
        "knn_protocol": _knn_protocol(cfg, train="training nodes", test="held-out nodes"),
    }
    refined_path = run_dir / REFINED_NAME
    if refined_path.is_file():
        feature_sets["refined"] = _load_refined(refined_path, teacher)
    else:
        result["refined_skipped"] = f"no {REFINED_NAME} in {run_dir}"

    probed = ("raw", "refined")
    result["feature_sets"] = {}
    for name, feats in feature_sets.items():
        x = feats.to(device=device, dtype=torch.float32)
        entry: dict[str, Any] = {"dim": int(x.shape[1]), "knn": _knn(x[train_mask], y[train_mask], x[test_mask],
                                                                       y[test_mask], cfg)}
        if name in probed:
            entry["logistic_regression"] = logistic_regression_probe(
                x, y, train_mask, test_mask, lr=cfg.eval.probe_lr, steps=cfg.eval.probe_steps,
                seeds=cfg.eval.probe_seeds, device=device)
        result["feature_sets"][name] = entry
    result["graphs"] = {stream: graph_statistics(graph) for stream, graph in graphs.items()}
    return result


def _json_safe(value: Any) -> Any:
    """Non-finite floats become ``null`` so metrics.json stays valid JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_run(run_dir: Path, cfg: Config, *, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Evaluate everything a run directory holds and write ``metrics.json`` (main process only)."""
    run_dir = Path(run_dir)
    metrics: dict[str, Any] = {
        "dataset": {
            "name": cfg.data.dataset,
            "train_split": cfg.data.train_split,
            "test_split": cfg.data.test_split,
            "train_subset": cfg.data.train_subset,
            "test_subset": cfg.data.test_subset,
            "image_size": cfg.data.image_size,
        },
        "seed": cfg.seed,
        "backbone": cfg.model.backbone,
        "seconds": {},
    }
    for part, evaluate in (
        ("backbones", lambda: evaluate_backbones(run_dir, cfg, device=device, progress=progress)),
        ("nodes", lambda: evaluate_node_features(run_dir, cfg, device=device)),
    ):
        start = time.perf_counter()
        metrics[part] = evaluate()
        metrics["seconds"][part] = round(time.perf_counter() - start, 3)
    metrics = _json_safe(metrics)
    if dist.is_main():
        atomic_write_text(run_dir / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
    return metrics
