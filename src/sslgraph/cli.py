"""The ``sslgraph`` command line: one sub-command per stage, plus ``run`` for the whole pipeline.

Every command gets its configuration from :func:`sslgraph.run.settings.load_settings`, and every error the
user can fix (:class:`~sslgraph.errors.SSLGraphError`) is caught in :func:`main` and printed as one line
naming the key, file or field, with the class's exit code (2 configuration, 3 data, 4 run files/checkpoints/
training). ``--debug`` or ``SSLGRAPH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from sslgraph.choices import ExportFeatures, options
from sslgraph.config import DATA_ENV_VAR, PRESETS
from sslgraph.errors import SSLGraphError

DEBUG_ENV_VAR = "SSLGRAPH_DEBUG"

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
Errors print one line and exit non-zero (2 configuration, 3 data, 4 run files); --debug or
{DEBUG_ENV_VAR}=1 shows the traceback.
"""


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, like every other user error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="named configuration to start from (cifar10-cpu: 2-core CPU in minutes; cifar10: "
                             "paper-like ViT-tiny on a GPU; imagenet100; imagenet1k)")
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help="YAML file merged over the preset (same keys as a run directory's saved configuration)")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help=f"data set root (default: ${DATA_ENV_VAR}); for CIFAR-10 either the torchvision layout "
                             "(cifar-10-batches-py) or an image-folder tree with train/ and test/")
    parser.add_argument("--out", dest="out_dir", default=None, metavar="DIR",
                        help="run directory: configuration, logs, checkpoint, graphs, figures, report")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def _add_run_options(parser: argparse.ArgumentParser, *, overrides: bool = True) -> None:
    parser.add_argument("--run", dest="run_dir", required=True, metavar="DIR",
                        help="run directory (from `sslgraph pretrain` or `sslgraph run`, or any directory holding "
                             "the two graph files); its saved configuration is the starting point")
    if overrides:
        parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sslgraph", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Self-supervised representation learning beyond augmentation: DINO/AdaSim pretraining that "
                    "keeps teacher and student kNN graphs over the data set, GNN refinement of every node, and "
                    "kNN/linear evaluation with pictures.")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks of user errors (or {DEBUG_ENV_VAR}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("pretrain", help="stage A: DINO / AdaSim / graph pretraining (DDP with torchrun)",
                       description="Pretrain a backbone; with method.name=graph also keep and export the kNN graphs.")
    _add_config_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (optimizer, schedules, RNG, banks, graphs)")

    p = sub.add_parser("export-graphs", help="write the teacher and student graphs again from a run's checkpoint",
                       description="Export the teacher and student kNN graphs as torch_geometric Data files.")
    _add_run_options(p)
    p.add_argument("--features", choices=options(ExportFeatures), default=None,
                   help="node features: bank (accumulated during training, as the reference) or clean (re-extracted "
                        "from clean images with the final networks); default: the run's method.export_features")
    p.add_argument("--rebuild-edges", action="store_true", help="with clean features, rebuild the edges from them")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the run's device)")

    p = sub.add_parser("refine", help="stage B: self-supervised GNN refinement over the two graphs")
    _add_run_options(p)
    p = sub.add_parser("evaluate", help="stage C: kNN and linear evaluation of backbones and nodes")
    _add_run_options(p)
    p = sub.add_parser("visualize", help="figures: t-SNE/UMAP before/after, 2-hop neighbourhoods, curves")
    _add_run_options(p)
    p = sub.add_parser("report", help="the Markdown and HTML report from a run's files")
    _add_run_options(p, overrides=False)

    p = sub.add_parser("run", help="the whole pipeline: pretrain, export, refine, evaluate, visualize, report",
                       description="Run every stage; finished stages are skipped and interrupted ones resumed.")
    _add_config_options(p)
    from sslgraph.run.pipeline import STAGES

    p.add_argument("--from", dest="from_stage", choices=STAGES, default=None,
                   help="redo this stage and every stage after it")
    return parser


def quiet_known_warnings() -> None:
    """Silence notices that say nothing to a user of the command line (a library user still sees them)."""
    # torch_geometric scripts two small classes at import time; torch announces that API's deprecation each time.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    # torch announces sparse CSR support as beta on first use; the products the encoders use are stable, and the
    # adjacency is built by PyG from validated edges, so the invariant-check notice is noise as well.
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def main(argv: list[str] | None = None) -> int:
    quiet_known_warnings()
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")
    try:
        return _dispatch(args)
    except SSLGraphError as err:
        if debug:
            raise
        message = " ".join(str(err).split("\n"))
        print(f"sslgraph: error: {message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("sslgraph: interrupted; rerun the same command (with --resume for pretrain) to continue",
              file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from sslgraph.run import RunDir
    from sslgraph.run.settings import load_settings
    from sslgraph.utils.misc import resolve_device

    if args.command == "report":
        from sslgraph.run.report import write_report

        for path in write_report(RunDir(args.run_dir)):
            print(path)
        return 0
    if args.command in ("pretrain", "run"):
        cfg = load_settings(preset=args.preset, config_file=args.config_file, overrides=args.overrides,
                            data_root=args.data_root, out_dir=args.out_dir)
        if args.command == "pretrain":
            from sslgraph.run.pretrain import pretrain

            pretrain(cfg, resume=args.resume)
        else:
            from sslgraph.run.pipeline import run_pipeline

            run_pipeline(cfg, from_stage=args.from_stage)
        return 0

    run = RunDir(args.run_dir)
    overrides = list(args.overrides)
    if args.command == "export-graphs":
        overrides += [f"method.export_features={args.features}"] if args.features else []
        overrides += ["method.export_rebuild_edges=true"] if args.rebuild_edges else []
        overrides += [f"device={args.device}"] if args.device else []
    cfg = load_settings(run=run, overrides=overrides)
    device = resolve_device(cfg.device)
    paths: list[Path]
    if args.command == "export-graphs":
        from sslgraph.run.export import export_graphs

        paths = export_graphs(run, cfg, device=device)
    elif args.command == "refine":
        from sslgraph.run.refine import run_refine

        paths = [run_refine(run, cfg, device=device)]
    elif args.command == "evaluate":
        from sslgraph.run.evaluate import evaluate_run

        evaluate_run(run, cfg, device=device)
        paths = [run.metrics]
    else:
        from sslgraph.run.visualize import visualize_run

        paths = visualize_run(run, cfg)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
