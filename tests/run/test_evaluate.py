"""The evaluation stage on a run directory: metrics.json, skipped parts, and files that do not fit together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from sslgraph.config import Config, to_dict
from sslgraph.data import EvalDataset, build_dataset, eval_transform
from sslgraph.errors import GraphFileError
from sslgraph.eval.features import extract_features, feature_record, feature_settings, network_fingerprint
from sslgraph.graph.export import save_graph, save_refined
from sslgraph.models.network import build_network
from sslgraph.run import RunDir
from sslgraph.run.evaluate import evaluate_run
from sslgraph.utils.io import atomic_save
from tests.eval.test_evaluate import _image_folder

NUM_TRAIN, NUM_TEST, CLASSES = 24, 12, 3
CPU = torch.device("cpu")


def _config() -> Config:
    cfg = Config()
    cfg.eval.knn_ks, cfg.eval.probe_seeds, cfg.eval.probe_steps = [1, 5], 2, 10
    return cfg


def _graph(x: torch.Tensor, y: torch.Tensor, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    node = torch.arange(NUM_TRAIN + NUM_TEST)
    targets = node.repeat_interleave(2)
    sources = (targets + 1 + torch.randint(0, NUM_TRAIN - 1, targets.shape, generator=gen)) % NUM_TRAIN
    keep = sources != targets
    return Data(x=x, edge_index=torch.stack([sources[keep], targets[keep]]), edge_weight=torch.ones(int(keep.sum())),
                y=y, train_mask=node < NUM_TRAIN, test_mask=node >= NUM_TRAIN, num_train=NUM_TRAIN)


def _node_run(root: Path, *, refined: bool = True) -> RunDir:
    run = RunDir(root)
    gen = torch.Generator().manual_seed(0)
    n = NUM_TRAIN + NUM_TEST
    y = torch.arange(n) % CLASSES
    teacher = _graph(torch.randn(CLASSES, 6, generator=gen)[y] * 2 + torch.randn(n, 6, generator=gen), y, 1)
    student = _graph(torch.randn(n, 6, generator=gen), y, 2)
    save_graph(teacher, run.graph("teacher"))
    save_graph(student, run.graph("student"))
    if refined:
        save_refined(run.refined, embeddings=teacher.x * 3, reference=teacher)
    return run


def test_evaluate_run_writes_metrics_json_and_records_skips(tmp_path: Path) -> None:
    run = _node_run(tmp_path)
    metrics = evaluate_run(run, _config(), device=CPU, progress=False)
    on_disk = json.loads(run.metrics.read_text())
    assert on_disk == metrics
    assert RunDir.CHECKPOINT in on_disk["backbones"]["skipped"]
    assert on_disk["dataset"]["name"] == "cifar10" and on_disk["seed"] == 0
    assert on_disk["nodes"]["knn_protocol"]["ks"] == [1, 5]
    assert "refined" in on_disk["nodes"]["feature_sets"] and "refined_skipped" not in on_disk["nodes"]
    assert on_disk["nodes"]["graphs"]["teacher"]["train_to_train"]["same_class_share"] is not None


def test_missing_refined_and_missing_graphs_are_recorded(tmp_path: Path) -> None:
    run = _node_run(tmp_path / "run", refined=False)
    nodes = evaluate_run(run, _config(), device=CPU, progress=False)["nodes"]
    assert "refined" not in nodes["feature_sets"] and RunDir.REFINED in nodes["refined_skipped"]
    empty = RunDir(tmp_path / "empty")
    assert "missing graphs/teacher.pt, graphs/student.pt" in evaluate_run(empty, _config(), device=CPU)["nodes"][
        "skipped"]


def test_refined_file_for_other_nodes_is_rejected(tmp_path: Path) -> None:
    run = _node_run(tmp_path)
    node = torch.arange(NUM_TRAIN + NUM_TEST)
    atomic_save({"embeddings": torch.randn(NUM_TRAIN + NUM_TEST, 4), "y": (node % CLASSES).flip(0),
                 "train_mask": node < NUM_TRAIN, "test_mask": node >= NUM_TRAIN}, run.refined)
    with pytest.raises(GraphFileError, match=r"refined\.pt: field 'y' differs"):
        evaluate_run(run, _config(), device=CPU)


def test_backbones_come_from_the_checkpoint(tmp_path: Path) -> None:
    cfg = _config()
    cfg.eval.backbone_probe = False
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "imagefolder", str(tmp_path / "data"), 0
    cfg.model.backbone, cfg.model.out_dim, cfg.model.head_hidden_dim = "vit_mini", 16, 32
    cfg.model.head_bottleneck_dim = 8
    _image_folder(tmp_path / "data")
    torch.manual_seed(0)
    state = build_network(cfg, drop_path_rate=0.0).state_dict()
    run = RunDir(tmp_path / "run")
    atomic_save({"config": to_dict(cfg), "teacher": state, "student": state}, run.checkpoint)
    backbones = evaluate_run(run, cfg, device=CPU, progress=False)["backbones"]
    assert backbones["splits"] == {"train": 8, "test": 4}
    assert backbones["feature_sets"]["teacher"]["knn"] == backbones["feature_sets"]["student"]["knn"]
    assert set(backbones["feature_sources"].values()) == {"embedded"}


def test_backbone_features_left_by_pretraining_are_reused_only_for_the_same_networks(tmp_path: Path) -> None:
    cfg = _config()
    cfg.optim.precision = "fp32"
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "imagefolder", str(tmp_path / "data"), 0
    cfg.model.backbone, cfg.model.out_dim, cfg.model.head_hidden_dim = "vit_mini", 16, 32
    cfg.model.head_bottleneck_dim = 8
    _image_folder(tmp_path / "data")
    torch.manual_seed(0)
    network = build_network(cfg, drop_path_rate=0.0)
    run = RunDir(tmp_path / "run")
    atomic_save({"config": to_dict(cfg), "teacher": network.state_dict(), "student": network.state_dict()},
                run.checkpoint)
    fresh = evaluate_run(run, cfg, device=CPU, progress=False)["backbones"]

    # What pretraining leaves: the same networks' outputs on the same clean images.
    backbone = network.backbone.eval()
    sets = {split: build_dataset(cfg.data, split) for split in ("train", "test")}
    outputs = {split: extract_features(backbone, EvalDataset(base, eval_transform(cfg.data)), batch_size=4,
                                       device=CPU, progress=False) for split, base in sets.items()}
    settings = feature_settings(cfg.data, train_set=sets["train"], test_set=sets["test"], amp_dtype=None)
    prints = {"teacher": network_fingerprint(backbone), "student": network_fingerprint(backbone)}
    run.write_features(feature_record({"teacher": outputs, "student": outputs}, networks=prints,
                                      settings=settings))
    reused = evaluate_run(run, cfg, device=CPU, progress=False)["backbones"]
    assert set(reused["feature_sources"].values()) == {str(run.features)}
    assert reused["feature_sets"] == fresh["feature_sets"]

    # The student moves on (another checkpoint): its features are embedded again, the teacher's still reused.
    moved = build_network(cfg, drop_path_rate=0.0).state_dict()
    atomic_save({"config": to_dict(cfg), "teacher": network.state_dict(), "student": moved}, run.checkpoint)
    mixed = evaluate_run(run, cfg, device=CPU, progress=False)["backbones"]
    assert mixed["feature_sources"] == {"teacher/train": str(run.features), "teacher/test": str(run.features),
                                        "student/train": "embedded", "student/test": "embedded"}
    # An unreadable features file is only a missed shortcut.
    run.features.write_bytes(b"not a torch file")
    assert set(evaluate_run(run, cfg, device=CPU, progress=False)["backbones"]["feature_sources"].values()) == {
        "embedded"}


def test_parameter_free_refinement_is_reused_as_the_propagation_baseline(tmp_path: Path) -> None:
    cfg = _config()
    cfg.refine.encoder = "appnp"
    run = _node_run(tmp_path, refined=False)
    graphs = run.read_graphs()
    from sslgraph.refine.train import propagate_graphs

    propagated = propagate_graphs(graphs["teacher"], graphs["student"], cfg.refine)
    save_refined(run.refined, embeddings=propagated.embeddings, reference=graphs["teacher"],
                 gnn_state={"alpha": torch.tensor(propagated.alpha), "hops": torch.tensor(propagated.hops)},
                 refine_config=to_dict(cfg)["refine"])
    nodes = evaluate_run(run, cfg, device=CPU, progress=False)["nodes"]
    assert nodes["propagation"]["source"].startswith("the refined embeddings")
    assert nodes["propagation"]["alpha"] == propagated.alpha and nodes["propagation"]["hops"] == propagated.hops
    sets = nodes["feature_sets"]
    assert sets["refined"] == sets["propagated"]
    # other refine settings than the refined file's: the baseline is propagated afresh
    cfg.refine.symmetrise = not cfg.refine.symmetrise
    nodes = evaluate_run(run, cfg, device=CPU, progress=False)["nodes"]
    assert "source" not in nodes["propagation"]
