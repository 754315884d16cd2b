"""The ``sslgraph`` command line: one sub-command per stage, plus ``run`` for the whole pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sslgraph.config import (DATA_ENV_VAR, PRESETS, Config, ConfigError, config_from_dict, load_config,
                             load_run_config, to_dict)

OVERRIDES_HELP = ("config overrides as dotted key=value pairs, applied last, e.g. optim.epochs=20 "
                  "method.topk=10 refine.encoder=sage (every key is listed in sslgraph/config.py)")

EPILOG = f"""
examples:
  sslgraph run --preset cifar10-cpu --data-root ../shared/datasets --out runs/cifar10-cpu
  sslgraph pretrain --preset cifar10 --data-root /data/cifar10 --out runs/c10 optim.epochs=150
  torchrun --nproc_per_node 2 -m sslgraph pretrain --preset cifar10-cpu --out runs/ddp
  sslgraph pretrain --preset cifar10-cpu --out runs/c10 --resume
  sslgraph refine --run runs/c10 refine.encoder=gat refine.num_layers=3

The data root may also come from ${DATA_ENV_VAR}; for cifar10 it may be the folder holding cifar10/.
"""


def _add_config_options(parser: argparse.ArgumentParser, *, with_out: bool = True) -> None:
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="named configuration to start from (cifar10-cpu: 2-core CPU in minutes; cifar10: "
                             "paper-like ViT-tiny on a GPU; imagenet100; imagenet1k)")
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help="YAML file merged over the preset (same keys as config.yaml in a run directory)")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help=f"data set root (default: ${DATA_ENV_VAR}); for CIFAR-10 either the torchvision layout "
                             "(cifar-10-batches-py) or an image-folder tree with train/ and test/")
    if with_out:
        parser.add_argument("--out", dest="out_dir", default=None, metavar="DIR",
                            help="run directory for config.yaml, log.jsonl, checkpoint.pt, graphs, figures, report")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", dest="run_dir", required=True, metavar="DIR",
                        help="run directory (from `sslgraph pretrain` or `sslgraph run`, or any directory with "
                             "graphs/teacher.pt and graphs/student.pt)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslgraph", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Self-supervised representation learning beyond augmentation: DINO/AdaSim pretraining that "
                    "keeps teacher and student kNN graphs over the data set, GNN refinement of every node, and "
                    "kNN/linear evaluation with pictures.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="stage A: DINO / AdaSim / graph pretraining (DDP with torchrun)",
                       description="Pretrain a backbone; with method.name=graph also keep and export the kNN graphs.")
    _add_config_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (optimizer, schedules, RNG, banks, graphs)")

    p = sub.add_parser("export-graphs", help="write graphs/{teacher,student}.pt from a run's checkpoint",
                       description="Export the teacher and student kNN graphs as torch_geometric Data files.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="DIR", help="run directory with checkpoint.pt")
    p.add_argument("--features", choices=("bank", "clean"), default=None,
                   help="node features: bank (accumulated during training, as the reference) or clean (re-extracted "
                        "from clean images with the final networks); default: the run's method.export_features")
    p.add_argument("--rebuild-edges", action="store_true", help="with clean features, rebuild the edges from them")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    p = sub.add_parser("refine", help="stage B: self-supervised GNN refinement over the two graphs")
    _add_run_options(p)
    p = sub.add_parser("evaluate", help="stage C: kNN and linear evaluation, written to metrics.json")
    _add_run_options(p)
    p = sub.add_parser("visualize", help="figures: t-SNE/UMAP before/after, 2-hop neighbourhoods, curves")
    _add_run_options(p)
    p = sub.add_parser("report", help="report.md and report.html from a run's files")
    p.add_argument("--run", dest="run_dir", required=True, metavar="DIR", help="run directory")

    p = sub.add_parser("run", help="the whole pipeline: pretrain, export, refine, evaluate, visualize, report",
                       description="Run every stage; finished stages are skipped and interrupted ones resumed.")
    _add_config_options(p)
    from sslgraph.pipeline import STAGES

    p.add_argument("--from", dest="from_stage", choices=STAGES, default=None,
                   help="redo this stage and every stage after it")
    return parser


def _run_config(run_dir: str, overrides: list[str]) -> Config:
    """A run directory's own config.yaml with overrides, or the defaults for graphs built elsewhere."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"--run: no such directory: {run_dir}")
    if (path / "config.yaml").is_file():
        merged = OmegaConf.merge(OmegaConf.create(to_dict(load_run_config(path))), OmegaConf.from_dotlist(overrides))
        cfg = config_from_dict(OmegaConf.to_container(merged))  # type: ignore[arg-type]
    else:
        cfg = load_config(overrides=overrides)
    cfg.out_dir = str(path)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as err:
        print(f"sslgraph: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sslgraph: interrupted; rerun the same command (with --resume for pretrain) to continue",
              file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from sslgraph.utils.misc import resolve_device

    if args.command in ("pretrain", "run"):
        cfg = load_config(preset=args.preset, config_file=args.config_file, overrides=args.overrides,
                          data_root=args.data_root, out_dir=args.out_dir)
        if args.command == "pretrain":
            from sslgraph.methods.base import pretrain

            pretrain(cfg, resume=args.resume)
        else:
            from sslgraph.pipeline import run_pipeline

            run_pipeline(cfg, from_stage=args.from_stage)
        return 0
    if args.command == "export-graphs":
        from sslgraph.methods.base import export_graphs

        overrides = {}
        if args.features is not None:
            overrides["export_features"] = args.features
        if args.rebuild_edges:
            overrides["export_rebuild_edges"] = True
        for path in export_graphs(Path(args.run_dir), device=resolve_device(args.device), overrides=overrides):
            print(path)
        return 0
    if args.command == "report":
        from sslgraph.report import write_report

        for path in write_report(Path(args.run_dir)):
            print(path)
        return 0
    cfg = _run_config(args.run_dir, args.overrides)
    device = resolve_device(cfg.device)
    run_dir = Path(args.run_dir)
    if args.command == "refine":
        from sslgraph.refine.train import run_refine

        print(run_refine(run_dir, cfg, device=device))
    elif args.command == "evaluate":
        from sslgraph.eval.evaluate import evaluate_run

        evaluate_run(run_dir, cfg, device=device)
        print(run_dir / "metrics.json")
    elif args.command == "visualize":
        from sslgraph.viz import visualize_run

        for path in visualize_run(run_dir, cfg, device=device):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
