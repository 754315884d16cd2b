"""The run directory: every path a run reads or writes, its layout, and the reads several stages share.

```
RUN/
  config.yaml          resolved config (reproduces the run)                           pretrain
  log.jsonl            one JSON object per pretraining epoch (+ epoch -1: initialisation)
  tb/                  TensorBoard scalars
  checkpoint.pt        latest pretraining state, written atomically every epoch (and mid-epoch on a stop
                       signal or every optim.checkpoint_every_minutes)
  features.pt          the final backbones' clean features (evaluation reuses them)  pretrain or export
  graphs/teacher.pt    torch_geometric Data per stream (see sslgraph.graph.export)    pretrain or export
  graphs/student.pt
  refine_checkpoint.pt refinement state while it runs (removed when it finishes)      refine
  refine_log.jsonl     one JSON object per refinement epoch
  refined.pt           refined embeddings, labels, masks, GNN state, loss log
  metrics.json         every number with its protocol                                 evaluate
  figures/*.png        training curves, embeddings before/after, 2-hop neighbourhoods visualize
  figures/degree_histograms.png  in-degree bar charts, from metrics.json              report
  report.md            the report, figures linked                                     report
  report.html          the same report, figures embedded
  pipeline.json        seconds per stage run by `sslgraph run`, its last run's minutes      pipeline
  run.lock             pid and host of the process writing the run (removed when it ends)  every writer
  unreadable_images.txt  every image file of the data set that could not be decoded     pretrain
```

Only this module names these files; the stage modules next to it read and write through a :class:`RunDir`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch_geometric.data import Data

from sslgraph.config import Config, to_yaml
from sslgraph.errors import CheckpointError, ConfigError, GraphFileError
from sslgraph.graph.export import load_graph_pair, load_refined
from sslgraph.utils.io import atomic_save, atomic_write_text, read_jsonl, safe_load

STREAMS = ("teacher", "student")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, init=False)
class RunDir:
    """The files of one run under :attr:`root`, by role."""

    root: Path

    CONFIG = "config.yaml"
    LOG = "log.jsonl"
    TENSORBOARD = "tb"
    CHECKPOINT = "checkpoint.pt"
    FEATURES = "features.pt"
    GRAPHS = "graphs"
    REFINE_CHECKPOINT = "refine_checkpoint.pt"
    REFINE_LOG = "refine_log.jsonl"
    REFINED = "refined.pt"
    METRICS = "metrics.json"
    FIGURES = "figures"
    REPORT_MD = "report.md"
    REPORT_HTML = "report.html"
    PIPELINE = "pipeline.json"
    LOCK = "run.lock"
    UNREADABLE = "unreadable_images.txt"

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def __str__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def checkpoint(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def features(self) -> Path:
        return self.root / self.FEATURES

    @property
    def graphs_dir(self) -> Path:
        return self.root / self.GRAPHS

    def graph(self, stream: str) -> Path:
        return self.graphs_dir / f"{stream}.pt"

    @property
    def graph_paths(self) -> list[Path]:
        return [self.graph(stream) for stream in STREAMS]

    @property
    def refine_checkpoint(self) -> Path:
        return self.root / self.REFINE_CHECKPOINT

    @property
    def refine_log(self) -> Path:
        return self.root / self.REFINE_LOG

    @property
    def refined(self) -> Path:
        return self.root / self.REFINED

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def figures_dir(self) -> Path:
        return self.root / self.FIGURES

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"

    @property
    def figure_paths(self) -> list[Path]:
        return sorted(self.figures_dir.glob("*.png"))

    @property
    def report_md(self) -> Path:
        return self.root / self.REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.root / self.REPORT_HTML

    @property
    def pipeline_state(self) -> Path:
        return self.root / self.PIPELINE

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    @property
    def unreadable_images(self) -> Path:
        return self.root / self.UNREADABLE

    # ------------------------------------------------------------------ reads shared by the stages
    def require(self) -> RunDir:
        """This run, after checking that its directory exists (a user error otherwise)."""
        if not self.root.is_dir():
            raise ConfigError(f"--run: no such run directory: {self.root}")
        return self

    def saved_config(self) -> dict[str, Any] | None:
        """The values of ``config.yaml``, or None for a directory without one (graphs built elsewhere)."""
        if not self.config.is_file():
            return None
        try:
            values = OmegaConf.to_container(OmegaConf.load(self.config))
        except Exception as err:  # YAML and OmegaConf raise several unrelated types for a damaged file
            raise ConfigError(f"{self.config}: cannot read the saved configuration ({err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{self.config}: expected a mapping of config sections")
        return values  # type: ignore[return-value]

    def has_graphs(self) -> bool:
        return all(path.is_file() for path in self.graph_paths)

    def missing_graphs(self) -> list[str]:
        return [str(path.relative_to(self.root)) for path in self.graph_paths if not path.is_file()]

    def read_graphs(self) -> dict[str, Data]:
        """Both streams' graphs, checked against the one schema and against each other."""
        for path in self.graph_paths:
            if not path.is_file():
                raise GraphFileError(f"graph file not found: {path}; it is written by `sslgraph pretrain` with "
                                     f"method.name=graph, or by `sslgraph export-graphs` from a pretraining "
                                     f"checkpoint")
        return dict(zip(STREAMS, load_graph_pair(*self.graph_paths)))

    def read_refined(self, reference: Data) -> dict[str, Any]:
        """The refined embeddings, checked to describe ``reference``'s nodes."""
        if not self.refined.is_file():
            raise GraphFileError(f"refined embeddings not found: {self.refined}; run `sslgraph refine` first")
        return load_refined(self.refined, reference)

    def require_checkpoint(self) -> Path:
        if not self.checkpoint.is_file():
            raise CheckpointError(f"no pretraining checkpoint in {self.root} ({self.CHECKPOINT}); run "
                                  f"`sslgraph pretrain --out {self.root}` first")
        return self.checkpoint

    def read_log(self) -> list[dict[str, Any]]:
        return read_jsonl(self.log)

    def read_refine_log(self) -> list[dict[str, Any]]:
        return read_jsonl(self.refine_log)

    def read_features(self) -> Any:
        """The pretraining's features record, or None when there is none or it cannot be read (it is only a
        shortcut: evaluation embeds the images instead)."""
        if not self.features.is_file():
            return None
        try:
            return safe_load(self.features)
        except CheckpointError as err:
            logger.warning("ignoring %s: %s", self.features, err)
            return None

    def read_metrics(self) -> dict[str, Any] | None:
        return json.loads(self.metrics.read_text(encoding="utf-8")) if self.metrics.is_file() else None

    def read_pipeline_state(self) -> dict[str, Any]:
        if not self.pipeline_state.is_file():
            return {"stages": {}}
        return json.loads(self.pipeline_state.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ writes shared by the stages
    def write_config(self, cfg: Config) -> Path:
        return atomic_write_text(self.config, to_yaml(cfg))

    def write_features(self, record: dict[str, Any]) -> Path:
        return atomic_save(record, self.features)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return atomic_write_text(self.metrics, json.dumps(metrics, indent=2) + "\n")

    def write_pipeline_state(self, state: dict[str, Any]) -> Path:
        return atomic_write_text(self.pipeline_state, json.dumps(state, indent=2, sort_keys=True))

    def write_unreadable_images(self, by_split: dict[str, list[str]]) -> Path:
        """Every unreadable image, one ``split<TAB>path`` a line, so a large data set is fixed in one pass."""
        lines = [f"{split}\t{path}\n" for split, paths in by_split.items() for path in paths]
        return atomic_write_text(self.unreadable_images, "".join(lines))


@dataclass(frozen=True, init=False)
class AblationDir:
    """The files of ``sslgraph ablate`` under :attr:`root`: one run directory per pretraining, one table, one chart.

    ```
    ABLATION/
      dino/ adasim/ graph/   run directories (graph/ serves the rows without and with refinement)
      ablation.md            the table
      ablation.json          the table's numbers, with the run each came from
      ablation.png           the bar chart
    ```
    """

    root: Path

    TABLE_MD = "ablation.md"
    TABLE_JSON = "ablation.json"
    CHART = "ablation.png"

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def run(self, name: str) -> RunDir:
        return RunDir(self.root / name)

    @property
    def table_md(self) -> Path:
        return self.root / self.TABLE_MD

    @property
    def table_json(self) -> Path:
        return self.root / self.TABLE_JSON

    @property
    def chart(self) -> Path:
        return self.root / self.CHART

    def write_table(self, *, markdown: str, values: dict[str, Any]) -> list[Path]:
        return [atomic_write_text(self.table_md, markdown),
                atomic_write_text(self.table_json, json.dumps(values, indent=2) + "\n")]
