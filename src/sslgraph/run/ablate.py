"""``sslgraph ablate``: the paper's ablation at equal budget, in one command.

Four rows, each read from a run directory under the ablation folder (:class:`AblationDir`):

| row | run | features |
|---|---|---|
| ``dino`` | ``dino/`` | the teacher backbone (no banks, no bootstrapping) |
| ``adasim`` | ``adasim/`` | the teacher backbone (teacher bank + neighbour bootstrapping) |
| ``graph`` | ``graph/`` | raw node features ``[teacher; student]``, no refinement |
| ``graph + refinement`` | ``graph/`` | the refined nodes of the same pretraining |

The three pretrainings share the configuration, the seed and the wall-clock budget (``ablate.budget_minutes``,
else ``optim.budget_minutes``; so a method with a costlier step trains fewer iterations, which is the
comparison a user with a fixed clock makes). The budget counts training steps only (``optim.budget_scope=steps``
whatever the preset says, and no ``pipeline.time_limit_minutes``), so the graph method's end of training, its
graph export, is not charged to its steps.
Each run goes through the pipeline's own stages (pretrain, and
for ``graph`` export and refine, then evaluate), which are skipped when done: an interrupted ablation is
resumed by running the same command, and finished rows are not redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sslgraph.config import Config, load_config, to_dict
from sslgraph.methods import check_method_config
from sslgraph.run.lock import run_lock
from sslgraph.run.pipeline import PIPELINE, stage_done
from sslgraph.run.rundir import AblationDir, RunDir
from sslgraph.utils.io import read_jsonl
from sslgraph.utils.misc import resolve_device
from sslgraph.viz.ablation import plot_ablation

# The stages each pretraining needs: the backbone rows are evaluated directly, the graph run is refined first.
RUN_STAGES = {"dino": ("pretrain", "evaluate"), "adasim": ("pretrain", "evaluate"),
              "graph": ("pretrain", "export", "refine", "evaluate")}


@dataclass(frozen=True)
class Row:
    name: str
    run: str
    # "backbone": the teacher backbone's features; "raw" / "refined": the graph's node features.
    features: str


ROWS = (Row("dino", "dino", "backbone"), Row("adasim", "adasim", "backbone"),
        Row("graph", "graph", "raw"), Row("graph + refinement", "graph", "refined"))


def row_config(cfg: Config, *, method: str, ablation: AblationDir) -> Config:
    """The ablation's configuration with ``method``, its run directory and the shared budget."""
    budget = cfg.ablate.budget_minutes if cfg.ablate.budget_minutes is not None else cfg.optim.budget_minutes
    overrides = [f"method.name={method}", f"out_dir={ablation.run(method).root}",
                 f"optim.budget_minutes={'null' if budget is None else budget}", "optim.budget_scope=steps",
                 "pipeline.time_limit_minutes=null"]
    row = load_config(base=to_dict(cfg), overrides=overrides)
    check_method_config(row)
    return row


def run_stages(cfg: Config, *, names: tuple[str, ...], device: torch.device) -> None:
    """The pipeline's stages ``names`` in ``cfg.out_dir``, each skipped when its outputs are up to date."""
    run = RunDir(cfg.out_dir)
    with run_lock(run):
        for stage in PIPELINE:
            if stage.name not in names:
                continue
            if stage_done(stage, run, cfg):
                print(f"[sslgraph] {run.root.name}: stage {stage.name} done already, skipped", flush=True)
                continue
            print(f"[sslgraph] {run.root.name}: stage {stage.name} running", flush=True)
            stage.run(run, cfg, device, None)


def _get(values: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def row_values(row: Row, metrics: dict[str, Any], log: list[dict[str, Any]], *, k: int) -> dict[str, Any]:
    """One row's numbers from its run's ``metrics.json`` (written by the evaluate stage) and ``log.jsonl``."""
    teacher = _get(metrics, "backbones", "feature_sets", "teacher")
    values: dict[str, Any] = {
        "row": row.name, "run": row.run, "features": row.features,
        "teacher_knn_top1": _get(teacher, "knn", str(k)),
        "teacher_linear_probe": _get(teacher, "linear_probe", "top1"),
        "epochs": sum(1 for r in log if r.get("epoch", -1) >= 0),
        "images_per_sec": log[-1].get("images_per_sec") if log else None,
    }
    if row.features == "backbone":
        values.update(knn_top1=values["teacher_knn_top1"], probe=values["teacher_linear_probe"],
                      probe_protocol="linear probe on the frozen teacher backbone (SGD)")
        return values
    nodes = _get(metrics, "nodes", "feature_sets") or {}
    values.update(knn_top1=_get(nodes, row.features, "knn", str(k)),
                  probe=_get(nodes, row.features, "logistic_regression", "mean"),
                  probe_protocol="logistic regression on the node features (mean over seeds)")
    for stream in ("teacher", "student"):
        values[f"{stream}_graph_purity"] = _get(metrics, "nodes", "graphs", stream, "train_to_train",
                                                "same_class_share")
    if row.features == "refined":
        raw = nodes.get("raw", {})
        for key, here, there in (("knn_gain", values["knn_top1"], _get(raw, "knn", str(k))),
                                 ("probe_gain", values["probe"], _get(raw, "logistic_regression", "mean"))):
            values[key] = here - there if here is not None and there is not None else None
    return values


def _cell(value: Any, fmt: str = ".2f", *, scale: float = 1.0, sign: bool = False) -> str:
    if value is None:
        return "–"
    return format(value * scale, ("+" if sign else "") + fmt)


def markdown_table(values: list[dict[str, Any]], *, k: int, budget: float | None) -> str:
    """The table as Markdown, with what each column measures."""
    budget_text = f"{budget:g} minutes of training steps per pretraining" if budget is not None else \
        "optim.epochs per pretraining"
    lines = [
        f"Ablation at equal budget ({budget_text}; same seed and configuration otherwise).",
        "",
        f"| row | features | epochs | teacher kNN top-1 (k={k}) | kNN top-1 (k={k}) of the row's features | "
        "probe top-1 | graph purity (teacher / student) | refined - raw (kNN / probe) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in values:
        purity = "–"
        if v.get("teacher_graph_purity") is not None:
            shares = [_cell(v.get(f"{stream}_graph_purity"), ".1f", scale=100) for stream in ("teacher", "student")]
            purity = " / ".join(f"{share} %" for share in shares)
        gain = "" if v["features"] != "refined" else \
            f"{_cell(v.get('knn_gain'), sign=True)} / {_cell(v.get('probe_gain'), sign=True)}"
        lines.append(f"| {v['row']} | {v['features']} | {v['epochs']} | {_cell(v['teacher_knn_top1'])} "
                     f"| {_cell(v['knn_top1'])} | {_cell(v['probe'])} | {purity} | {gain} |")
    lines += ["", "Probe: the backbone rows use the linear probe on the frozen teacher backbone; the graph rows use "
              "logistic regression on the node features (mean over eval.probe_seeds). Graph purity: share of "
              "same-class training edges."]
    return "\n".join(lines) + "\n"


def run_ablation(cfg: Config) -> AblationDir:
    """Run (or resume) every pretraining of the ablation in ``cfg.out_dir``, then write the table and the chart."""
    ablation = AblationDir(cfg.out_dir)
    ablation.root.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    configs = {method: row_config(cfg, method=method, ablation=ablation) for method in RUN_STAGES}
    for method, stages in RUN_STAGES.items():
        print(f"[sslgraph] ablation: {method}", flush=True)
        run_stages(configs[method], names=stages, device=device)

    k = 20 if 20 in cfg.eval.knn_ks else cfg.eval.knn_ks[0]
    values = []
    for row in ROWS:
        run = ablation.run(row.run)
        values.append(row_values(row, run.read_metrics() or {}, read_jsonl(run.log) if run.log.is_file() else [], k=k))
    budget = configs["graph"].optim.budget_minutes
    markdown = markdown_table(values, k=k, budget=budget)
    ablation.write_table(markdown=markdown, values={"budget_minutes": budget, "seed": cfg.seed, "knn_k": k,
                                                    "rows": values})
    plot_ablation([v["row"] for v in values],
                  {f"kNN top-1 (k={k})": [v["knn_top1"] for v in values], "probe top-1": [v["probe"] for v in values]},
                  ablation.chart, title="dino / adasim / graph at equal budget")
    print(markdown, flush=True)
    print(f"[sslgraph] ablation written: {ablation.table_md}, {ablation.table_json}, {ablation.chart}", flush=True)
    return ablation
