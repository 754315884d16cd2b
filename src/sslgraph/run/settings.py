"""The one way every command gets its configuration.

A new run merges defaults < ``--preset`` < ``--config FILE`` < ``key=value`` overrides < ``--data-root``/``--out``;
a command on an existing run starts from the run's saved ``config.yaml`` instead of the preset. Either way the
result is validated, including the configured method's own constraints, and every problem is a
:class:`~sslgraph.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sslgraph.config import Config, load_config
from sslgraph.methods import check_method_config
from sslgraph.run.rundir import RunDir


def load_settings(*, run: RunDir | str | os.PathLike | None = None, preset: str | None = None,
                  config_file: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                  data_root: str | None = None, out_dir: str | None = None) -> Config:
    """The validated configuration of a command; with ``run``, the run's saved config is the starting point and
    ``out_dir`` is the run's directory."""
    base = None
    if run is not None:
        run = RunDir(run) if not isinstance(run, RunDir) else run
        base = run.require().saved_config()
        out_dir = str(run.root)
    cfg = load_config(base=base, preset=preset, config_file=config_file, overrides=tuple(overrides),
                      data_root=data_root, out_dir=out_dir)
    check_method_config(cfg)
    return cfg
