"""The run directory owns its layout: every path by role, and the reads the stages share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from sslgraph.config import Config, load_config
from sslgraph.errors import CheckpointError, ConfigError, GraphFileError
from sslgraph.graph.export import save_graph
from sslgraph.run import RunDir
from sslgraph.run import rundir as rundir_module

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def test_every_path_is_under_the_root_and_named_once(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    paths = [run.config, run.log, run.tensorboard, run.checkpoint, *run.graph_paths, run.refine_checkpoint,
             run.refine_log, run.refined, run.metrics, run.figure("x"), run.report_md, run.report_html,
             run.pipeline_state, run.lock, run.unreadable_images]
    assert all(path.parent in (run.root, run.graphs_dir, run.figures_dir) for path in paths)
    assert len(set(paths)) == len(paths)
    assert run == RunDir(str(tmp_path)) and str(run) == str(tmp_path)


def test_the_documented_layout_names_every_file() -> None:
    names = [value for key, value in vars(RunDir).items() if key.isupper()]
    layout = rundir_module.__doc__ or ""
    docs = DOCS.read_text(encoding="utf-8")
    for name in names:
        assert name in layout, f"{name} is missing from the layout in sslgraph/run/rundir.py"
        assert name in docs, f"{name} is missing from the run directory layout in docs/ARCHITECTURE.md"


def test_saved_config_reads_back(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.saved_config() is None
    cfg = load_config(preset="cifar10-cpu")
    run.write_config(cfg)
    assert load_config(base=run.saved_config()) == cfg
    run.config.write_text("optim: [1,\n")
    with pytest.raises(ConfigError, match="config.yaml: cannot read"):
        run.saved_config()
    with pytest.raises(ConfigError, match="no such run directory"):
        RunDir(tmp_path / "missing").require()


def test_missing_inputs_are_user_errors_that_say_what_writes_them(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.missing_graphs() == ["graphs/teacher.pt", "graphs/student.pt"] and not run.has_graphs()
    with pytest.raises(GraphFileError, match="export-graphs"):
        run.read_graphs()
    with pytest.raises(CheckpointError, match="sslgraph pretrain"):
        run.require_checkpoint()
    node = torch.arange(4)
    data = Data(x=torch.randn(4, 2), edge_index=torch.tensor([[0, 1], [2, 3]]), edge_weight=torch.ones(2),
                y=node % 2, train_mask=node < 2, test_mask=node >= 2, num_train=2)
    for stream in ("teacher", "student"):
        save_graph(data, run.graph(stream))
    assert set(run.read_graphs()) == {"teacher", "student"}
    with pytest.raises(GraphFileError, match="sslgraph refine"):
        run.read_refined(data)
    assert run.read_metrics() is None and run.read_pipeline_state() == {"stages": {}}
    run.write_metrics({"seed": Config().seed})
    assert run.read_metrics() == {"seed": 0}
