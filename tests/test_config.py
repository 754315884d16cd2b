"""Presets load and validate; overrides, files and bad values give messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslgraph.config import (PRESETS, Config, ConfigError, config_from_dict, load_config, resolve_data_root, to_dict,
                             validate, with_host_width)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_valid_and_round_trips(preset: str) -> None:
    cfg = load_config(preset=preset)
    assert config_from_dict(to_dict(cfg)) == cfg


def test_paper_defaults_per_data_set() -> None:
    c10, in100, in1k = (load_config(preset=p).method for p in ("cifar10", "imagenet100", "imagenet1k"))
    assert (c10.topk, c10.vote_window, c10.edges_per_node, c10.sampling_temperature) == (10, 3, 5, 0.001)
    assert (in100.topk, in100.vote_window, in100.edges_per_node, in100.sampling_temperature) == (3, 15, 1, 0.2)
    assert (in1k.topk, in1k.vote_window, in1k.edges_per_node, in1k.sampling_temperature) == (3, 10, 1, 0.2)


def test_precedence_preset_file_overrides_options(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("optim:\n  epochs: 7\n  lr: 0.002\n")
    cfg = load_config(preset="cifar10-cpu", config_file=file, overrides=["optim.epochs=9"], out_dir="x",
                      data_root="/data")
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.out_dir, cfg.data.root) == (9, 0.002, "x", "/data")


@pytest.mark.parametrize(("overrides", "key"), [
    (["model.backbone=resnet9000"], "model.backbone"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.warmup_epochs=200"], "optim.warmup_epochs"),
    (["aug.flip_p=1.5"], "aug.flip_p"),
    (["refine.encoder=mlp"], "refine.encoder"),
    (["method.name=simclr"], "method.name"),
    (["optim.not_a_key=1"], "optim.not_a_key"),
    (["optim.epochs=ten"], "optim.epochs"),
    (["epochs10"], "key=value"),
    (["=3"], "key=value"),
    (["model.backbone=vit_mini", "model.patch_size=5"], "model.patch_size"),
    (["eval.knn_ks=["], "eval.knn_ks: cannot read the value '\\['"),
    (["optim.min_lr=1"], "optim.min_lr"),
    (["data.cache=sometimes"], "data.cache"),
    (["method.bank_search_dim=0"], "method.bank_search_dim"),
    (["method.bank_search_dim=64", "method.bank_backend=faiss"], "method.bank_search_dim"),
    (["method.bank_refits_per_pass=0"], "method.bank_refits_per_pass"),
    (["optim.momentum_teacher=0.9", "optim.momentum_teacher_end=0.5"], "optim.momentum_teacher_end"),
    (["optim.momentum_teacher_end=1.5"], "optim.momentum_teacher_end"),
    (["pipeline.time_limit_minutes=0"], "pipeline.time_limit_minutes"),
    (["pipeline.time_limit_minutes=.nan"], "pipeline.time_limit_minutes"),
    (["pipeline.later_stages_minutes=-1"], "pipeline.later_stages_minutes"),
    (["pipeline.time_limit_minutes=20", "optim.budget_scope=steps"], "pipeline.time_limit_minutes"),
    (["model.width=0"], "model.width"),
    (["model.cpu_float32_width=-8"], "model.cpu_float32_width"),
    (["model.cpu_width=0"], "model.cpu_width"),
    (["model.backbone=vit_mini", "model.cpu_float32_width=null", "model.width=32"], "model.width"),
])
def test_invalid_values_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(preset="cifar10-cpu", overrides=overrides)


def test_overrides_apply_in_order_and_parse_yaml_values() -> None:
    cfg = load_config(overrides=["eval.knn_ks=[1,2]", "optim.epochs=3", "optim.epochs=40", "data.train_subset=null"])
    assert (cfg.eval.knn_ks, cfg.optim.epochs, cfg.data.train_subset) == ([1, 2], 40, None)


def test_saved_values_are_the_base_of_later_layers(tmp_path: Path) -> None:
    saved = to_dict(load_config(preset="cifar10-cpu", overrides=["refine.encoder=gat", "model.backbone=vit_small"]))
    cfg = load_config(base=saved, overrides=["refine.num_layers=3", "refine.num_neighbors=[5,5,5]"])
    assert (cfg.refine.encoder, cfg.refine.num_layers, cfg.model.backbone) == ("gat", 3, "vit_small")
    with pytest.raises(ConfigError, match="refine.encoder"):
        load_config(base=dict(saved, refine=dict(saved["refine"], encoder="mlp")))
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [1,\n")
    with pytest.raises(ConfigError, match="--config: cannot read"):
        load_config(config_file=broken)


def test_validate_checks_choices_of_a_config_built_in_code() -> None:
    cfg = Config()
    cfg.refine.jk = "sum"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="refine.jk: must be one of last, max, cat, mean, got 'sum'"):
        validate(cfg)


def test_data_root_from_environment_and_cifar_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cifar10" / "train").mkdir(parents=True)
    monkeypatch.setenv("SSLGRAPH_DATA", str(tmp_path))
    assert resolve_data_root(load_config().data) == tmp_path / "cifar10"
    monkeypatch.delenv("SSLGRAPH_DATA")
    monkeypatch.chdir(tmp_path)
    # CIFAR-10 without a root: ./data, where it is downloaded when missing; other data sets need a root.
    assert resolve_data_root(load_config().data, must_exist=False) == Path("data")
    with pytest.raises(ConfigError, match="SSLGRAPH_DATA"):
        resolve_data_root(load_config(overrides=["data.dataset=imagefolder"]).data)


def test_the_host_widths_are_settled_into_model_width_once() -> None:
    cfg = load_config(overrides=["model.backbone=resnet18", "model.cpu_width=32", "model.cpu_float32_width=16"])
    settled = {host: with_host_width(cfg, cpu=cpu, cpu_float32=fp32)
               for host, cpu, fp32 in (("cpu_fp32", True, True), ("cpu_bf16", True, False), ("gpu", False, False))}
    assert {host: (c.model.width, c.model.cpu_width, c.model.cpu_float32_width) for host, c in settled.items()} == {
        "cpu_fp32": (16, None, None), "cpu_bf16": (32, None, None), "gpu": (None, None, None)}
    assert (cfg.model.cpu_width, cfg.model.cpu_float32_width) == (32, 16), "the caller's config is left as it was"
    on_fp32 = settled["cpu_fp32"]
    assert with_host_width(on_fp32, cpu=True, cpu_float32=False) == on_fp32, "a settled config stays settled"
    # cpu_float32_width alone: the float32 CPU takes it, every other host model.width.
    only_fp32 = load_config(overrides=["model.backbone=resnet18", "model.width=48", "model.cpu_float32_width=24"])
    assert with_host_width(only_fp32, cpu=True, cpu_float32=True).model.width == 24
    assert with_host_width(only_fp32, cpu=True, cpu_float32=False).model.width == 48
    plain = load_config(overrides=["model.backbone=resnet18", "model.width=48"])
    assert with_host_width(plain, cpu=True, cpu_float32=True) is plain
    # Outside the ResNet-18 family the settings are left aside (a preset's values do not stop a ViT run).
    vit = with_host_width(load_config(preset="cifar10-cpu", overrides=["model.backbone=vit_mini"]),
                          cpu=True, cpu_float32=True)
    assert (vit.model.width, vit.model.cpu_width, vit.model.cpu_float32_width) == (None, None, None)
