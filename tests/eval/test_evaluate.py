import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch_geometric.data import Data

from sslgraph.config import Config, to_dict
from sslgraph.eval.evaluate import evaluate_backbones, evaluate_node_features, evaluate_run
from sslgraph.eval.knn import knn_accuracy
from sslgraph.eval.linear import logistic_regression_probe
from sslgraph.graph.export import save_graph
from sslgraph.methods.base import build_network
from sslgraph.utils.io import atomic_save

NUM_TRAIN, NUM_TEST, CLASSES = 24, 12, 3
CPU = torch.device("cpu")


def _config(**eval_overrides) -> Config:
    cfg = Config()
    cfg.eval.knn_ks = [1, 5, 100]
    cfg.eval.probe_seeds = 3
    cfg.eval.probe_steps = 20
    for key, value in eval_overrides.items():
        setattr(cfg.eval, key, value)
    return cfg


def _graph(x: torch.Tensor, y: torch.Tensor, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    sources = torch.randint(0, NUM_TRAIN, (60,), generator=gen)
    targets = torch.randint(0, NUM_TRAIN + NUM_TEST, (60,), generator=gen)
    keep = sources != targets
    node = torch.arange(NUM_TRAIN + NUM_TEST)
    return Data(x=x, edge_index=torch.stack([sources[keep], targets[keep]]), edge_weight=torch.ones(int(keep.sum())),
                y=y, train_mask=node < NUM_TRAIN, test_mask=node >= NUM_TRAIN, num_train=NUM_TRAIN)


def _node_run(run_dir: Path, *, refined: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = NUM_TRAIN + NUM_TEST
    y = torch.arange(n) % CLASSES
    centres = torch.randn(CLASSES, 6, generator=gen) * 2
    teacher_x = centres[y] + torch.randn(n, 6, generator=gen)
    student_x = torch.randn(n, 4, generator=gen)
    save_graph(_graph(teacher_x, y, 1), run_dir / "graphs" / "teacher.pt")
    save_graph(_graph(student_x, y, 2), run_dir / "graphs" / "student.pt")
    tensors = {"teacher": teacher_x, "student": student_x, "y": y}
    if refined:
        tensors["refined"] = torch.cat([teacher_x * 3, torch.randn(n, 2, generator=gen)], dim=1)
        node = torch.arange(n)
        atomic_save({"embeddings": tensors["refined"], "y": y, "train_mask": node < NUM_TRAIN,
                     "test_mask": node >= NUM_TRAIN}, run_dir / "refined.pt")
    return tensors


def test_node_features_match_direct_evaluation(tmp_path):
    t = _node_run(tmp_path)
    cfg = _config()
    result = evaluate_node_features(tmp_path, cfg, device=CPU)
    y, train, test = t["y"], slice(0, NUM_TRAIN), slice(NUM_TRAIN, None)
    raw = torch.cat([t["teacher"], t["student"]], dim=1)
    sets = result["feature_sets"]
    assert list(sets) == ["raw", "teacher", "student", "refined"]
    assert result["splits"] == {"train": NUM_TRAIN, "test": NUM_TEST} and result["num_classes"] == CLASSES
    for name, feats in (("raw", raw), ("teacher", t["teacher"]), ("student", t["student"]),
                        ("refined", t["refined"])):
        expected = knn_accuracy(feats[train], y[train], feats[test], y[test], ks=[1, 5, 100])
        assert sets[name]["knn"] == {str(k): v for k, v in expected.items()}, name
        assert sets[name]["dim"] == feats.shape[1]
    mask = torch.arange(NUM_TRAIN + NUM_TEST) < NUM_TRAIN
    probe = logistic_regression_probe(raw, y, mask, ~mask, lr=cfg.eval.probe_lr, steps=20, seeds=3)
    assert sets["raw"]["logistic_regression"]["accuracies"] == pytest.approx(probe["accuracies"])
    assert sets["refined"]["logistic_regression"]["protocol"] == sets["raw"]["logistic_regression"]["protocol"]
    assert "logistic_regression" not in sets["teacher"]
    assert set(result["graphs"]) == {"teacher", "student"}
    assert result["graphs"]["teacher"]["nodes"] == NUM_TRAIN + NUM_TEST


def test_node_features_without_refined_and_without_graphs(tmp_path):
    _node_run(tmp_path, refined=False)
    result = evaluate_node_features(tmp_path, _config(), device=CPU)
    assert "refined" not in result["feature_sets"] and "refined.pt" in result["refined_skipped"]
    assert "missing graphs/teacher.pt" in evaluate_node_features(tmp_path / "empty", _config(), device=CPU)["skipped"]


def test_refined_file_for_other_nodes_is_rejected(tmp_path):
    t = _node_run(tmp_path)
    node = torch.arange(NUM_TRAIN + NUM_TEST)
    atomic_save({"embeddings": t["refined"], "y": t["y"].flip(0), "train_mask": node < NUM_TRAIN,
                 "test_mask": node >= NUM_TRAIN}, tmp_path / "refined.pt")
    with pytest.raises(ValueError, match="refined.pt: 'y' differs"):
        evaluate_node_features(tmp_path, _config(), device=CPU)


def test_evaluate_run_writes_metrics_json_and_records_skips(tmp_path):
    _node_run(tmp_path)
    metrics = evaluate_run(tmp_path, _config(), device=CPU, progress=False)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert "checkpoint.pt" in on_disk["backbones"]["skipped"]
    assert on_disk["dataset"]["name"] == "cifar10" and on_disk["seed"] == 0
    assert on_disk["nodes"]["knn_protocol"]["ks"] == [1, 5, 100]
    assert on_disk["nodes"]["graphs"]["teacher"]["train_to_train"]["same_class_share"] is not None


def _image_folder(root: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    for split, per_class in (("train", 4), ("test", 2)):
        for c, name in enumerate(["apple", "pear"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8) // (c + 1)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


def test_backbones_part_on_a_tiny_checkpoint(tmp_path):
    cfg = _config(backbone_probe_epochs=2, backbone_probe_blocks=2)
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "imagefolder", str(tmp_path / "data"), 0
    cfg.model.backbone, cfg.model.out_dim, cfg.model.head_hidden_dim = "vit_mini", 16, 32
    cfg.model.head_bottleneck_dim = 8
    _image_folder(tmp_path / "data")
    torch.manual_seed(0)
    network = build_network(cfg, drop_path_rate=0.0)
    state = network.state_dict()
    atomic_save({"config": to_dict(cfg), "teacher": state, "student": state}, tmp_path / "run" / "checkpoint.pt")
    result = evaluate_backbones(tmp_path / "run", cfg, device=CPU, progress=False)
    assert result["splits"] == {"train": 8, "test": 4}
    teacher, student = result["feature_sets"]["teacher"], result["feature_sets"]["student"]
    assert teacher["knn"] == student["knn"]  # identical weights
    assert teacher["dim"] == 192 and set(teacher["knn"]) == {"1", "5", "100"}
    assert 0.0 <= teacher["linear_probe"]["top1"] <= 100.0
    assert "n_last_blocks=2" in teacher["linear_probe"]["protocol"]["input"]
    assert "dim 384" in teacher["linear_probe"]["protocol"]["input"]
