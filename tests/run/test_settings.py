"""The one configuration loader of the commands: presets for new runs, the saved config for existing ones, and
the configured method's own constraints."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslgraph.config import load_config
from sslgraph.errors import ConfigError
from sslgraph.run import RunDir
from sslgraph.run.settings import load_settings


def test_new_run_layers_preset_overrides_and_options() -> None:
    cfg = load_settings(preset="cifar10-cpu", overrides=["optim.epochs=9", "model.backbone=vit_tiny"],
                        data_root="/data", out_dir="x")
    assert (cfg.optim.epochs, cfg.data.root, cfg.out_dir, cfg.model.backbone) == (9, "/data", "x", "vit_tiny")
    assert cfg.data.train_subset == load_config(preset="cifar10-cpu").data.train_subset


def test_existing_run_starts_from_its_saved_config(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(load_config(preset="cifar10-cpu", overrides=["refine.encoder=sage"], out_dir="elsewhere"))
    cfg = load_settings(run=run, overrides=["refine.num_layers=1", "refine.num_neighbors=[5]"])
    assert (cfg.refine.encoder, cfg.refine.num_layers, cfg.out_dir) == ("sage", 1, str(run.root))
    bare = RunDir(tmp_path / "graphs-only")
    bare.root.mkdir()
    assert load_settings(run=bare).refine.encoder == "gcn"  # no saved config: the defaults


@pytest.mark.parametrize(("overrides", "key"), [
    (["method.topk=5", "method.edges_per_node=5"], "method.topk"),
    (["refine.encoder=bogus"], "refine.encoder"),
    (["eval.knn_k=["], "eval.knn_k"),
])
def test_every_problem_names_its_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(preset="cifar10-cpu", overrides=overrides)
