"""The time-to-accuracy benchmark's command for our side is one the command line accepts (a preset change once
made it refuse the benchmark's overrides, found only by running the 35-minute benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

from sslgraph.config import load_config, validate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import time_to_accuracy  # noqa: E402


def test_our_side_overrides_pass_the_config_checks() -> None:
    cfg = load_config(preset=time_to_accuracy.PRESET,
                      overrides=time_to_accuracy.ours_overrides(minutes=15.0, seed=3))
    validate(cfg)
    assert cfg.optim.budget_minutes == 15.0 and cfg.optim.budget_scope == "steps"
    assert cfg.pipeline.time_limit_minutes is None
    assert cfg.monitor.knn_every == 1 and cfg.monitor.knn_at_init and cfg.seed == 3
