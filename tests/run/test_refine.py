"""The refinement stage on a run directory: graphs in, refined.pt (the one schema) and refine_log.jsonl out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sslgraph.config import Config
from sslgraph.errors import GraphFileError
from sslgraph.graph.export import load_refined, save_graph
from sslgraph.refine.train import build_model
from sslgraph.run import RunDir
from sslgraph.run.refine import run_refine
from sslgraph.utils.io import read_jsonl, safe_load
from tests.refine.test_train import DIM, NUM_TEST, NUM_TRAIN, graphs, tiny_cfg

CPU = torch.device("cpu")


def test_run_refine_writes_schema(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cfg = Config()
    cfg.refine = tiny_cfg(epochs=2)
    with pytest.raises(GraphFileError, match=r"graphs/teacher.pt.*sslgraph pretrain.*export-graphs"):
        run_refine(run, cfg, device=CPU)
    teacher, student = graphs()
    save_graph(teacher, run.graph("teacher"))
    save_graph(student, run.graph("student"))
    assert run_refine(run, cfg, device=CPU) == run.refined
    saved = safe_load(run.refined)
    assert set(saved) == {"embeddings", "y", "train_mask", "test_mask", "num_train", "losses", "gnn_state",
                          "refine_config", "seed_embeddings"}
    assert saved["seed_embeddings"] == {}
    assert saved["embeddings"].shape == (NUM_TRAIN + NUM_TEST, 32) and saved["num_train"] == NUM_TRAIN
    assert saved["refine_config"] == dataclasses.asdict(cfg.refine) and len(saved["losses"]) == 2
    assert torch.equal(load_refined(run.refined, teacher)["test_mask"], teacher.test_mask)
    records = read_jsonl(run.refine_log)
    assert [r["epoch"] for r in records] == [0, 1]
    assert set(records[0]) == {"epoch", "loss", "seconds", "mean_cosine", "effective_rank"}
    assert not run.refine_checkpoint.exists()
    model = build_model(DIM, cfg.refine)
    model.load_state_dict(saved["gnn_state"])


def test_extra_refinement_seeds_are_kept_in_half_precision(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cfg = Config()
    cfg.refine = tiny_cfg(epochs=1, seeds=3, seed=5)
    teacher, student = graphs()
    save_graph(teacher, run.graph("teacher"))
    save_graph(student, run.graph("student"))
    run_refine(run, cfg, device=CPU)
    saved = safe_load(run.refined)
    extra = saved["seed_embeddings"]
    assert sorted(extra) == [6, 7] and all(e.dtype == torch.float16 for e in extra.values())
    assert extra[6].shape == saved["embeddings"].shape
    # a different seed trains a different GNN
    assert not torch.allclose(extra[6].float(), saved["embeddings"], atol=1e-2)
