"""Every sub-command turns a user error into one line naming the key and a non-zero exit, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslgraph.cli import main
from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.run import RunDir


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    RunDir(tmp_path / "run").root.mkdir()
    RunDir(tmp_path / "run").write_config(Config())
    return tmp_path / "run"


def _one_line_error(capsys: pytest.CaptureFixture, *fragments: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sslgraph") and "error: " in lines[0] and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("command", "fragments"), [
    (["pretrain", "optim.lrr=1"], ["optim.lrr", "not in 'OptimConfig'"]),
    (["run", "method.name=dino"], ["method.name", "'dino'", "method.name=graph"]),
    (["run", "optim.epochs=[1"], ["optim.epochs: cannot read the value '[1'"]),
    (["export-graphs", "--run", "{run}", "method.export_features=bogus"], ["method.export_features", "'bogus'"]),
    (["refine", "--run", "{run}", "refine.encoder=bogus"], ["refine.encoder", "'bogus'", "gcn"]),
    (["evaluate", "--run", "{run}", "eval.knn_k=["], ["eval.knn_k: cannot read the value '['"]),
    (["visualize", "--run", "{run}", "viz.centres=7"], ["viz.centres"]),
    (["refine", "--run", "{run}", "epochs10"], ["'epochs10' is not of the form key=value"]),
    (["refine", "--run", "{run}/missing", "refine.epochs=1"], ["--run: no such run directory"]),
])
def test_config_errors_print_one_line_and_exit_2(command: list[str], fragments: list[str], run_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main([part.format(run=run_dir) for part in command]) == 2
    _one_line_error(capsys, *fragments)


def test_usage_errors_are_one_line_too(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--run", str(run_dir), "refine.epochs=1"])
    assert exit_info.value.code == 2
    _one_line_error(capsys, "sslgraph: error: unrecognized arguments: refine.epochs=1")


def test_data_and_run_file_errors_have_their_own_exit_codes(tmp_path: Path, run_dir: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    code = main(["pretrain", "--data-root", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                 "data.dataset=imagefolder"])
    assert code == 3
    _one_line_error(capsys, "data.train_split", "does not exist")
    assert main(["refine", "--run", str(run_dir)]) == 4
    _one_line_error(capsys, "graph file not found", "graphs/teacher.pt")
    assert main(["export-graphs", "--run", str(run_dir)]) == 4
    _one_line_error(capsys, "no pretraining checkpoint")


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="optim.lrr"):
        main(["--debug", "pretrain", "optim.lrr=1"])
    monkeypatch.setenv("SSLGRAPH_DEBUG", "1")
    with pytest.raises(ConfigError, match="optim.lrr"):
        main(["pretrain", "optim.lrr=1"])


def test_the_installed_command_prints_one_line(run_dir: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SSLGRAPH_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "sslgraph", "refine", "--run", str(run_dir), "refine.encoder=bogus"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "sslgraph: error: refine.encoder: Invalid value 'bogus', expected one of ['gcn', "), proc.stderr
