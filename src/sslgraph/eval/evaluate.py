"""Stage C's measurements, each a dict of numbers with its protocol, from networks, images and graphs.

Two independent parts: :func:`evaluate_backbones` (frozen teacher and student backbones on clean images: kNN
of both, linear probe of the teacher) and :func:`evaluate_node_features` (the graph nodes: kNN and logistic
regression of raw versus refined embeddings with identical settings, which is the refinement ablation, plus
graph statistics). The run layer (:mod:`sslgraph.run.evaluate`) loads a run's files and writes the result.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.data import EvalDataset, ImageDataset, eval_transform
from sslgraph.eval.features import extract_features
from sslgraph.eval.graph_stats import edge_variant_purity, graph_statistics
from sslgraph.eval.knn import knn_accuracy
from sslgraph.eval.linear import linear_probe, logistic_regression_probe, reference_logistic_probe
from sslgraph.models.backbones import Backbone
from sslgraph.refine.collapse import collapse_stats
from sslgraph.refine.train import propagate_graphs
from sslgraph.utils.misc import autocast_dtype


def knn_protocol(cfg: Config, *, train: str, test: str) -> dict[str, Any]:
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


def evaluate_backbones(teacher: Backbone, student: Backbone, *, train_set: ImageDataset, test_set: ImageDataset,
                       cfg: Config, device: torch.device, progress: bool = True,
                       known_features: dict[str, dict[str, Tensor]] | None = None,
                       known_source: str = "known features") -> dict[str, Any]:
    """kNN of the teacher and student backbones and the teacher's linear probe, on clean images.

    ``known_features[stream][split]`` are these very backbones' outputs on these clean images, computed before
    (pretraining's last pass, :func:`sslgraph.eval.features.matching_features`); they are used instead of
    embedding the images again, and ``feature_sources`` in the result says where each set came from."""
    bases = {"train": train_set, "test": test_set}
    sets = {split: EvalDataset(base, eval_transform(cfg.data)) for split, base in bases.items()}
    labels = {split: base.targets.to(device) for split, base in bases.items()}
    known = known_features or {}
    sources: dict[str, str] = {}

    def features(module: Callable[[Tensor], Tensor], split: str, desc: str) -> Tensor:
        return extract_features(_feature_fn(module, cfg, device), sets[split],
                                batch_size=cfg.monitor.eval_batch_size, device=device,
                                num_workers=cfg.data.num_workers, progress=progress, desc=desc)

    def backbone_features(name: str, backbone: Backbone, split: str) -> Tensor:
        given = known.get(name, {}).get(split)
        if given is not None and given.shape[0] == len(bases[split]):
            sources[f"{name}/{split}"] = known_source
            return given.to(device=device, dtype=torch.float32)
        sources[f"{name}/{split}"] = "embedded"
        return features(backbone, split, f"{name} {split}")

    result: dict[str, Any] = {
        "splits": {split: len(base) for split, base in bases.items()},
        "knn_protocol": knn_protocol(cfg, train="training images (clean)", test="held-out images (clean)"),
        "feature_sets": {},
        "feature_sources": sources,
    }
    blocks = cfg.eval.backbone_probe_blocks
    probe_is_forward = cfg.eval.backbone_probe and teacher.probe_is_forward(blocks)
    kept: tuple[Tensor, Tensor] | None = None  # the teacher's features, when the probe reads the same ones
    for name, backbone in (("teacher", teacher), ("student", student)):
        train, test = backbone_features(name, backbone, "train"), backbone_features(name, backbone, "test")
        result["feature_sets"][name] = {
            "dim": int(train.shape[1]),
            "knn": _knn(train, labels["train"], test, labels["test"], cfg),
        }
        if name == "teacher" and probe_is_forward:
            kept = (train, test)
    del train, test
    if not cfg.eval.backbone_probe:
        result["linear_probe_skipped"] = "eval.backbone_probe is false"
        return result
    if kept is not None:
        train, test = kept
    else:
        probe = partial(teacher.probe_features, n_last_blocks=blocks)
        train, test = features(probe, "train", "teacher probe train"), features(probe, "test", "teacher probe test")
    probe_result = linear_probe(train, labels["train"], test, labels["test"], epochs=cfg.eval.backbone_probe_epochs,
                                lr=cfg.eval.backbone_probe_lr, batch_size=cfg.eval.backbone_probe_batch_size,
                                seed=cfg.seed, device=device)
    probe_result["protocol"]["input"] = f"teacher probe_features(n_last_blocks={blocks}), dim {train.shape[1]}"
    result["feature_sets"]["teacher"]["linear_probe"] = probe_result
    return result


def evaluate_node_features(teacher: Data, student: Data, *, refined: Tensor | None, cfg: Config,
                           device: torch.device, refined_seeds: dict[int, Tensor] | None = None,
                           refined_propagation: dict[str, Any] | None = None) -> dict[str, Any]:
    """kNN and logistic regression on the graph nodes: raw [teacher; student] features vs ``refined`` embeddings
    (rows in node order; None: raw features only). The graphs must describe the same nodes
    (:func:`sslgraph.graph.schema.check_graph_pair`). ``refined_seeds`` (other refinement seeds' embeddings)
    add the spread over refinement seeds under ``feature_sets.refined.refinement_seeds``.
    ``refined_propagation`` (``{"alpha", "hops"}``) says that ``refined`` *is* the parameter-free propagation
    under the current refine settings: the baseline then reuses it (and its measurements) instead of
    propagating and measuring the same features again."""
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
        "knn_protocol": knn_protocol(cfg, train="training nodes", test="held-out nodes"),
    }
    if cfg.eval.propagation_baseline and refined is not None and refined_propagation is not None:
        feature_sets["propagated"] = refined
        result["propagation"] = {"alpha": float(refined_propagation["alpha"]),
                                 "hops": int(refined_propagation["hops"]), "selection": None,
                                 "normalization": cfg.refine.propagation_norm, "symmetrise": cfg.refine.symmetrise,
                                 "edges": cfg.refine.edges, "seconds": 0.0,
                                 "source": "the refined embeddings (refine.encoder is parameter-free)"}
    elif cfg.eval.propagation_baseline:
        # The parameter-free baseline every trained refinement is measured against (no labels used).
        started = time.perf_counter()
        propagated = propagate_graphs(teacher, student, cfg.refine)
        feature_sets["propagated"] = propagated.embeddings
        result["propagation"] = {"alpha": propagated.alpha, "hops": propagated.hops,
                                 "selection": propagated.selection,
                                 "normalization": cfg.refine.propagation_norm, "symmetrise": cfg.refine.symmetrise,
                                 "edges": cfg.refine.edges,
                                 "seconds": round(time.perf_counter() - started, 3)}
    if refined is not None:
        feature_sets["refined"] = refined

    probed = ("raw", "propagated", "refined")
    result["feature_sets"] = {}
    for name, feats in feature_sets.items():
        if name == "refined" and feature_sets.get("propagated") is feats:
            result["feature_sets"][name] = copy.deepcopy(result["feature_sets"]["propagated"])
            continue
        x = feats.to(device=device, dtype=torch.float32)
        entry: dict[str, Any] = {"dim": int(x.shape[1]), "knn": _knn(x[train_mask], y[train_mask], x[test_mask],
                                                                       y[test_mask], cfg)}
        if name == "propagated" and result["propagation"]["hops"] == 0:
            # No hop: these are the raw features standardised per column, which is where the probe starts from
            # anyway, so its input and result are the raw features' own.
            entry["logistic_regression"] = {**copy.deepcopy(result["feature_sets"]["raw"]["logistic_regression"]),
                                            "same_input_as": "raw"}
        elif name in probed:
            entry["logistic_regression"] = _node_probe(x, y, train_mask, test_mask, cfg=cfg, device=device)
        if name in probed:
            if cfg.eval.reference_probe:
                entry["reference_logistic_regression"] = reference_logistic_probe(
                    x, y, train_mask, test_mask, seeds=cfg.eval.probe_seeds, device=device)
            entry["collapse"] = collapse_stats(x, seed=cfg.seed)
        result["feature_sets"][name] = entry
    if refined is not None and refined_seeds:
        result["feature_sets"]["refined"]["refinement_seeds"] = _seed_spread(
            result["feature_sets"]["refined"], refined, refined_seeds, y=y, train_mask=train_mask,
            test_mask=test_mask, cfg=cfg, device=device)
    result["graphs"] = {stream: graph_statistics(graph) for stream, graph in (("teacher", teacher),
                                                                               ("student", student))}
    result["graphs"]["edge_variants"] = edge_variant_purity(teacher, student)
    return result


def _node_probe(x: Tensor, y: Tensor, train_mask: Tensor, test_mask: Tensor, *, cfg: Config,
                device: torch.device) -> dict[str, Any]:
    """The standardised logistic probe with the run's ``eval.probe_*`` settings (one protocol for every set)."""
    return logistic_regression_probe(x, y, train_mask, test_mask, lr=cfg.eval.probe_lr, steps=cfg.eval.probe_steps,
                                     seeds=cfg.eval.probe_seeds, tol=cfg.eval.probe_tol,
                                     patience=cfg.eval.probe_patience, device=device)


def _seed_spread(first: dict[str, Any], refined: Tensor, others: dict[int, Tensor], *, y: Tensor,
                 train_mask: Tensor, test_mask: Tensor, cfg: Config, device: torch.device) -> dict[str, Any]:
    """kNN and probe accuracy per refinement seed, with mean and population std over seeds. A seed whose
    embeddings equal the first seed's (a deterministic refinement) reuses its numbers instead of re-measuring."""
    knn = {k: [v] for k, v in first["knn"].items()}
    probe = [first["logistic_regression"]["mean"]]
    seeds, identical = [cfg.refine.seed], 0
    reference = refined.to(torch.float16)
    for seed, emb in sorted(others.items()):
        seeds.append(int(seed))
        if torch.equal(emb.to(torch.float16), reference):
            identical += 1
            for k, v in first["knn"].items():
                knn[k].append(v)
            probe.append(probe[0])
            continue
        x = emb.to(device=device, dtype=torch.float32)
        for k, v in _knn(x[train_mask], y[train_mask], x[test_mask], y[test_mask], cfg).items():
            knn[k].append(v)
        probe.append(_node_probe(x, y, train_mask, test_mask, cfg=cfg, device=device)["mean"])

    def spread(values: list[float]) -> dict[str, Any]:
        t = torch.tensor(values, dtype=torch.float64)
        return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "values": values}

    return {"seeds": seeds, "identical_to_first": identical, "knn": {k: spread(v) for k, v in knn.items()},
            "logistic_regression": spread(probe)}


def json_safe(value: Any) -> Any:
    """Non-finite floats become ``null`` so the metrics stay valid JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
