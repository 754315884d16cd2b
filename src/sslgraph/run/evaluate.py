"""Evaluation stage: everything a run directory holds, measured and written to ``metrics.json``.

Each part is skipped, with the reason recorded, when its input is absent: the backbones need
``checkpoint.pt``, the node features need ``graphs/*.pt`` (and ``refined.pt`` for the refined rows). The
backbones' clean features are taken from ``features.pt`` where it holds those of exactly these networks on
these images (pretraining embedded them for its kNN monitor and graphs), and embedded otherwise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from sslgraph.config import Config
from sslgraph.data import build_dataset
from sslgraph.eval.evaluate import evaluate_backbones, evaluate_node_features, json_safe
from sslgraph.eval.features import feature_settings, matching_features, network_fingerprint
from sslgraph.refine.encoders import PARAMETER_FREE_KINDS
from sslgraph.run.rundir import RunDir
from sslgraph.training.checkpoint import NETWORK_KEYS, load_checkpoint, pretrained_backbones
from sslgraph.utils import dist
from sslgraph.utils.misc import autocast_dtype


def backbones_part(run: RunDir, cfg: Config, *, device: torch.device, progress: bool = True) -> dict[str, Any]:
    if not run.checkpoint.is_file():
        return {"skipped": f"no {RunDir.CHECKPOINT} in {run}"}
    state = load_checkpoint(run.checkpoint, map_location=device, keys=NETWORK_KEYS)
    _, teacher, student = pretrained_backbones(state, device=device)
    del state
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    record = run.read_features()
    known = {}
    if record is not None:
        settings = feature_settings(cfg.data, train_set=train_set, test_set=test_set,
                                    amp_dtype=autocast_dtype(cfg.optim.precision, device))
        known = matching_features(record, networks={"teacher": network_fingerprint(teacher),
                                                    "student": network_fingerprint(student)}, settings=settings)
    return evaluate_backbones(teacher, student, train_set=train_set, test_set=test_set, cfg=cfg, device=device,
                              progress=progress, known_features=known, known_source=str(run.features))


def nodes_part(run: RunDir, cfg: Config, *, device: torch.device) -> dict[str, Any]:
    missing = run.missing_graphs()
    if missing:
        return {"skipped": f"missing {', '.join(missing)} in {run}"}
    graphs = run.read_graphs()
    teacher, student = graphs["teacher"], graphs["student"]
    payload = run.read_refined(teacher) if run.refined.is_file() else {}
    refined = payload.get("embeddings")
    result = evaluate_node_features(teacher, student, refined=refined, cfg=cfg, device=device,
                                    refined_seeds=payload.get("seed_embeddings"),
                                    refined_propagation=_propagation_of(payload, cfg))
    if refined is None:
        result["refined_skipped"] = f"no {RunDir.REFINED} in {run}"
    return result


def _propagation_of(payload: dict[str, Any], cfg: Config) -> dict[str, Any] | None:
    """``{"alpha", "hops"}`` when refined.pt holds the parameter-free propagation of the current refine
    settings (the evaluation's baseline would recompute exactly it), else None."""
    saved = payload.get("refine_config")
    if cfg.refine.encoder not in PARAMETER_FREE_KINDS or not isinstance(saved, dict):
        return None
    current = {k: v for k, v in dataclasses.asdict(cfg.refine).items() if k != "seeds"}
    if {k: v for k, v in saved.items() if k != "seeds"} != current:
        return None
    state = payload.get("gnn_state") or {}
    if "alpha" not in state or "hops" not in state:
        return None
    return {"alpha": float(state["alpha"]), "hops": int(state["hops"])}


def evaluate_run(run: RunDir, cfg: Config, *, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Evaluate the run and write ``metrics.json`` atomically (main process); returns the metrics."""
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
    parts: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("backbones", lambda: backbones_part(run, cfg, device=device, progress=progress)),
        ("nodes", lambda: nodes_part(run, cfg, device=device)),
    )
    for part, evaluate in parts:
        start = time.perf_counter()
        metrics[part] = evaluate()
        metrics["seconds"][part] = round(time.perf_counter() - start, 3)
    metrics = json_safe(metrics)
    if dist.is_main():
        run.write_metrics(metrics)
    return metrics
