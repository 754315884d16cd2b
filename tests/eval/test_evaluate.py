"""The evaluation library on tensors and graphs: node features against direct computation, backbones on a tiny
image folder."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.data import build_dataset
from sslgraph.eval.evaluate import evaluate_backbones, evaluate_node_features, json_safe
from sslgraph.eval.knn import knn_accuracy
from sslgraph.eval.linear import logistic_regression_probe
from sslgraph.models.network import build_network
from sslgraph.refine.train import propagate_graphs

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


def node_graphs() -> tuple[Data, Data, torch.Tensor]:
    """Teacher and student graphs of the same labelled nodes, and refined embeddings of them."""
    gen = torch.Generator().manual_seed(0)
    n = NUM_TRAIN + NUM_TEST
    y = torch.arange(n) % CLASSES
    centres = torch.randn(CLASSES, 6, generator=gen) * 2
    teacher_x = centres[y] + torch.randn(n, 6, generator=gen)
    student_x = torch.randn(n, 6, generator=gen)
    refined = torch.cat([teacher_x * 3, torch.randn(n, 2, generator=gen)], dim=1)
    return _graph(teacher_x, y, 1), _graph(student_x, y, 2), refined


def test_node_features_match_direct_evaluation():
    teacher, student, refined = node_graphs()
    cfg = _config()
    result = evaluate_node_features(teacher, student, refined=refined, cfg=cfg, device=CPU)
    y, train, test = teacher.y, slice(0, NUM_TRAIN), slice(NUM_TRAIN, None)
    raw = torch.cat([teacher.x, student.x], dim=1)
    sets = result["feature_sets"]
    assert list(sets)[:3] == ["raw", "teacher", "student"] and list(sets)[-1] == "refined"
    assert result["splits"] == {"train": NUM_TRAIN, "test": NUM_TEST} and result["num_classes"] == CLASSES
    for name, feats in (("raw", raw), ("teacher", teacher.x), ("student", student.x), ("refined", refined)):
        expected = knn_accuracy(feats[train], y[train], feats[test], y[test], ks=[1, 5, 100])
        assert sets[name]["knn"] == {str(k): v for k, v in expected.items()}, name
        assert sets[name]["dim"] == feats.shape[1]
    mask = torch.arange(NUM_TRAIN + NUM_TEST) < NUM_TRAIN
    probe = logistic_regression_probe(raw, y, mask, ~mask, lr=cfg.eval.probe_lr, steps=20, seeds=3)
    assert sets["raw"]["logistic_regression"]["accuracies"] == pytest.approx(probe["accuracies"])
    for key in ("classifier", "lr", "seeds"):  # raw and refined are probed with identical settings
        assert sets["refined"]["logistic_regression"]["protocol"][key] == \
            sets["raw"]["logistic_regression"]["protocol"][key], key
    assert "logistic_regression" not in sets["teacher"]
    assert set(result["graphs"]) == {"teacher", "student", "edge_variants"}
    assert result["graphs"]["teacher"]["nodes"] == NUM_TRAIN + NUM_TEST
    variants = result["graphs"]["edge_variants"]
    assert set(variants) == {"exported", "mutual", "union", "intersection"}
    for stream in ("teacher", "student"):  # the exported variant is the graph's own training-edge purity
        assert variants["exported"][stream] == result["graphs"][stream]["train_to_train"]
    assert variants["union"]["teacher"]["edges"] >= variants["intersection"]["teacher"]["edges"]
    assert result["knn_protocol"]["ks"] == [1, 5, 100]
    # the parameter-free baseline is measured on the same nodes with the same probe
    assert sets["propagated"]["dim"] == raw.shape[1] and "logistic_regression" in sets["propagated"]
    assert 0 <= result["propagation"]["alpha"] <= 1 and result["propagation"]["hops"] >= 0


def test_node_features_without_refined_embeddings():
    teacher, student, _ = node_graphs()
    result = evaluate_node_features(teacher, student, refined=None, cfg=_config(), device=CPU)
    assert list(result["feature_sets"])[:3] == ["raw", "teacher", "student"]
    assert "refined" not in result["feature_sets"]


def test_json_safe_turns_non_finite_numbers_into_null():
    assert json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf"), 2: "x"}}) == {
        "a": [1.0, None], "b": {"c": None, "2": "x"}}


def _image_folder(root: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    for split, per_class in (("train", 4), ("test", 2)):
        for c, name in enumerate(["apple", "pear"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8) // (c + 1)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


def test_backbones_on_a_tiny_image_folder(tmp_path):
    cfg = _config(backbone_probe_epochs=2, backbone_probe_blocks=2)
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "imagefolder", str(tmp_path / "data"), 0
    cfg.model.backbone, cfg.model.out_dim, cfg.model.head_hidden_dim = "vit_mini", 16, 32
    cfg.model.head_bottleneck_dim = 8
    _image_folder(tmp_path / "data")
    torch.manual_seed(0)
    backbone = build_network(cfg, drop_path_rate=0.0).backbone.eval()
    result = evaluate_backbones(backbone, backbone, train_set=build_dataset(cfg.data, "train"),
                                test_set=build_dataset(cfg.data, "test"), cfg=cfg, device=CPU, progress=False)
    assert result["splits"] == {"train": 8, "test": 4}
    teacher, student = result["feature_sets"]["teacher"], result["feature_sets"]["student"]
    assert teacher["knn"] == student["knn"]  # identical weights
    assert teacher["dim"] == 192 and set(teacher["knn"]) == {"1", "5", "100"}
    assert 0.0 <= teacher["linear_probe"]["top1"] <= 100.0
    assert "n_last_blocks=2" in teacher["linear_probe"]["protocol"]["input"]
    assert "dim 384" in teacher["linear_probe"]["protocol"]["input"]
    cfg.eval.backbone_probe = False
    result = evaluate_backbones(backbone, backbone, train_set=build_dataset(cfg.data, "train"),
                                test_set=build_dataset(cfg.data, "test"), cfg=cfg, device=CPU, progress=False)
    assert "linear_probe" not in result["feature_sets"]["teacher"] and "backbone_probe" in result[
        "linear_probe_skipped"]


def test_refinement_seed_spread_reuses_identical_seeds_and_measures_others():
    teacher, student, refined = node_graphs()
    cfg = _config()
    other = refined + torch.randn(refined.shape, generator=torch.Generator().manual_seed(9))
    result = evaluate_node_features(teacher, student, refined=refined, cfg=cfg, device=CPU,
                                    refined_seeds={1: refined.half(), 2: other.half()})
    first = result["feature_sets"]["refined"]
    spread = first["refinement_seeds"]
    assert spread["seeds"] == [cfg.refine.seed, 1, 2] and spread["identical_to_first"] == 1
    y, train = teacher.y, teacher.train_mask
    expected = knn_accuracy(other.half().float()[train], y[train], other.half().float()[~train], y[~train],
                            ks=[1, 5, 100])
    for k, value in expected.items():
        values = spread["knn"][str(k)]["values"]
        assert values == [first["knn"][str(k)], first["knn"][str(k)], value]
        assert spread["knn"][str(k)]["mean"] == pytest.approx(sum(values) / 3)
    probe = spread["logistic_regression"]
    assert probe["values"][:2] == [first["logistic_regression"]["mean"]] * 2 and len(probe["values"]) == 3


def test_a_resnet_probe_reuses_the_teachers_features_instead_of_embedding_again(tmp_path):
    cfg = _config(backbone_probe_epochs=2)
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "imagefolder", str(tmp_path / "data"), 0
    cfg.model.backbone = "resnet18"
    _image_folder(tmp_path / "data")
    torch.manual_seed(0)
    teacher, student = (build_network(cfg, drop_path_rate=0.0).backbone.eval() for _ in range(2))
    seen: dict[str, int] = {"teacher": 0, "student": 0}
    for name, backbone in (("teacher", teacher), ("student", student)):
        # On the inner ResNet, which both the forward and probe_features run.
        backbone.net.register_forward_hook(lambda module, args, out, name=name: seen.__setitem__(
            name, seen[name] + args[0].shape[0]))
    result = evaluate_backbones(teacher, student, train_set=build_dataset(cfg.data, "train"),
                                test_set=build_dataset(cfg.data, "test"), cfg=cfg, device=CPU, progress=False)
    assert seen == {"teacher": 12, "student": 12}  # 8 training + 4 held-out images, once each
    assert "dim 512" in result["feature_sets"]["teacher"]["linear_probe"]["protocol"]["input"]


def test_propagation_without_hops_shares_the_raw_probe_because_its_input_is_the_same():
    teacher, student, _ = node_graphs()
    cfg = _config()
    cfg.refine.alpha, cfg.refine.hops = 1.0, 0
    result = evaluate_node_features(teacher, student, refined=None, cfg=cfg, device=CPU)
    sets = result["feature_sets"]
    assert result["propagation"]["hops"] == 0
    shared = sets["propagated"]["logistic_regression"]
    assert shared["same_input_as"] == "raw"
    assert {k: v for k, v in shared.items() if k != "same_input_as"} == sets["raw"]["logistic_regression"]
    # what the shortcut stands for: probing the propagated features themselves gives the raw numbers
    propagated = propagate_graphs(teacher, student, cfg.refine).embeddings
    direct = logistic_regression_probe(propagated, teacher.y, teacher.train_mask, teacher.test_mask,
                                       lr=cfg.eval.probe_lr, steps=cfg.eval.probe_steps, seeds=cfg.eval.probe_seeds)
    assert direct["accuracies"] == pytest.approx(shared["accuracies"])
    # with hops the probe runs on the propagated features
    cfg.refine.alpha, cfg.refine.hops = 0.5, 2
    result = evaluate_node_features(teacher, student, refined=None, cfg=cfg, device=CPU)
    assert "same_input_as" not in result["feature_sets"]["propagated"]["logistic_regression"]
