"""The ``sslgraph`` command line: one sub-command per stage, plus ``run`` for the whole pipeline.

Every command gets its configuration from :func:`sslgraph.run.settings.load_settings`, and every error the
user can fix (:class:`~sslgraph.errors.SSLGraphError`) is caught in :func:`main` and printed as one line
naming the key, file or field, with the class's exit code (2 configuration, 3 data, 4 run files/checkpoints/
training). ``--debug`` or ``SSLGRAPH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NoReturn

from sslgraph.choices import ExportEdges, ExportFeatures, options
from sslgraph.config import DATA_ENV_VAR, PRESETS
from sslgraph.errors import Preempted, SSLGraphError
from sslgraph.utils.allocator import tune_cpu_allocator

DEBUG_ENV_VAR = "SSLGRAPH_DEBUG"

OVERRIDES_HELP = ("config overrides as dotted key=value pairs, applied last, e.g. optim.epochs=20 "
                  "method.topk=10 refine.encoder=sage (every key is listed in sslgraph/config.py)")

EPILOG = f"""
examples:
  sslgraph run --preset cifar10-cpu --data-root ../shared/datasets --out runs/cifar10-cpu
  sslgraph pretrain --preset cifar10 --data-root /data/cifar10 --out runs/c10 optim.epochs=150
  torchrun --nproc_per_node 2 -m sslgraph pretrain --preset cifar10-cpu --out runs/ddp
  sslgraph pretrain --preset cifar10-cpu --out runs/c10 --resume
  sslgraph pretrain --preset cifar10-cpu --out runs/c10 --resume auto    (a job a scheduler may requeue)
  sslgraph refine --run runs/c10 refine.encoder=gat refine.num_layers=3

The data root may also come from ${DATA_ENV_VAR}; for cifar10 it may be the folder holding cifar10/.
Without a data root, cifar10 presets use ./data and download CIFAR-10 there when it is missing.
key=value overrides may stand anywhere among the options.
Errors print one line and exit non-zero (2 configuration, 3 data, 4 run files, checkpoints or disk); --debug or
{DEBUG_ENV_VAR}=1 shows the traceback. SIGTERM or SIGUSR1 saves a checkpoint at the current step and exits
with 128 + the signal's number (143 for SIGTERM); rerun the same command (pretrain: with --resume) to continue.
"""

# Exit code of an operating-system error the user can fix (a full disk, a read-only folder): a run-file problem.
OS_ERROR_EXIT = 4
_USER_OS_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}


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
    # --debug is also read after the sub-command; SUPPRESS keeps the sub-parser from resetting the value above.
    debug_option = {"action": "store_true", "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}

    p = sub.add_parser("pretrain", help="stage A: DINO / AdaSim / graph pretraining (DDP with torchrun)",
                       description="Pretrain a backbone; with method.name=graph also keep and export the kNN graphs.")
    _add_config_options(p)
    p.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"), default=None, metavar="auto",
                   help="continue the run in --out from its checkpoint (optimizer, schedules, RNG, banks, graphs; "
                        "mid-epoch when it was stopped there); an error when there is none. `--resume auto` "
                        "continues when there is a checkpoint and starts afresh otherwise")

    p = sub.add_parser("export-graphs", help="write the teacher and student graphs again from a run's checkpoint",
                       description="Export the teacher and student kNN graphs as torch_geometric Data files.")
    _add_run_options(p)
    p.add_argument("--features", choices=options(ExportFeatures), default=None,
                   help="node features: bank (accumulated during training, as the reference) or clean (re-extracted "
                        "from clean images with the final networks); default: the run's method.export_features")
    p.add_argument("--edges", choices=options(ExportEdges), default=None,
                   help="rebuilt (a fresh kNN graph from the exported features) or fifo (the edges accumulated "
                        "during training, as the reference); default: the run's method.export_edges")
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
    p.add_argument("--started-at", type=float, default=None, metavar="SECONDS",
                   help="when the run began, in seconds since the epoch (date +%%s), e.g. before installing: "
                        "pipeline.time_limit_minutes counts from there (default: this command's start)")

    p = sub.add_parser("ablate", help="the paper's ablation at equal budget: dino, adasim, graph without and with "
                                      "refinement; one table and one bar chart",
                       description="Pretrain dino, adasim and graph with the same seed and wall-clock budget "
                                   "(ablate.budget_minutes, else optim.budget_minutes), evaluate each (graph also "
                                   "refined), and write ablation.md, ablation.json and ablation.png into --out "
                                   "(default: the preset's out_dir + '-ablation'). Finished runs are skipped, so "
                                   "the same command resumes an interrupted ablation.")
    _add_config_options(p)
    for subparser in sub.choices.values():
        subparser.add_argument("--debug", **debug_option)
    return parser


def _resume_values(argv: list[str]) -> list[str]:
    """``--resume`` takes an optional value; written as ``--resume=VALUE`` it can never swallow the ``key=value``
    override that follows it (``--resume optim.epochs=5``)."""
    out: list[str] = []
    k = 0
    while k < len(argv):
        if argv[k] == "--resume":
            given = k + 1 < len(argv) and argv[k + 1] in ("auto", "yes")
            out.append(f"--resume={argv[k + 1] if given else 'yes'}")
            k += 2 if given else 1
        else:
            out.append(argv[k])
            k += 1
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may stand anywhere among the options (argparse alone
    takes only the first contiguous run of them and reports the rest as unrecognised)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(_resume_values(list(sys.argv[1:] if argv is None else argv)))
    if extra and hasattr(args, "overrides") and not any(item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def quiet_known_warnings() -> None:
    """Silence notices that say nothing to a user of the command line (a library user still sees them)."""
    # torch_geometric scripts two small classes at import time; torch announces that API's deprecation each time.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    # torch announces sparse CSR support as beta on first use; the products the encoders use are stable, and the
    # adjacency is built by PyG from validated edges, so the invariant-check notice is noise as well.
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n"))


def main(argv: list[str] | None = None) -> int:
    # First, before anything imports torch (parsing does, for --resume): PyTorch reads its huge-page switch once,
    # at its first tensor.
    tune_cpu_allocator()
    quiet_known_warnings()
    args = parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")
    from sslgraph.utils.preempt import stop_signals  # imports torch: not for --help

    try:
        with stop_signals(), _run_lock(args):
            return _dispatch(args)
    except Preempted as err:
        print(f"sslgraph: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except SSLGraphError as err:
        if debug:
            raise
        print(f"sslgraph: error: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        # A full disk, a quota or a read-only folder hit outside the project's own writers (TensorBoard, a
        # library's cache): the user can fix it, so it is one line too. Any other OSError is unexpected.
        if debug or err.errno not in _USER_OS_ERRORS:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"sslgraph: error: {_USER_OS_ERRORS[err.errno]}{where} ({err.strerror or err}); free space or "
              f"choose a writable --out, then rerun the same command to continue", file=sys.stderr)
        return OS_ERROR_EXIT
    except KeyboardInterrupt:
        print("sslgraph: interrupted; rerun the same command (with --resume for pretrain) to continue",
              file=sys.stderr)
        return 130


def _run_lock(args: argparse.Namespace) -> AbstractContextManager[None]:
    """Commands on an existing run directory (``--run``) hold its lock, so they never write beside another
    command; ``pretrain`` and ``run`` take the lock of ``--out`` themselves."""
    run_dir = getattr(args, "run_dir", None)
    if run_dir is None or not Path(run_dir).is_dir():
        return nullcontext()  # a missing run directory is reported by the command itself
    from sslgraph.run import RunDir
    from sslgraph.run.lock import run_lock

    return run_lock(RunDir(run_dir))


def _dispatch(args: argparse.Namespace) -> int:
    from sslgraph.run import RunDir
    from sslgraph.run.settings import load_settings
    from sslgraph.utils.misc import resolve_device

    if args.command == "report":
        from sslgraph.run.report import write_report

        for path in write_report(RunDir(args.run_dir)):
            print(path)
        return 0
    if args.command == "ablate":
        from sslgraph.run.ablate import run_ablation

        cfg = load_settings(preset=args.preset, config_file=args.config_file, overrides=args.overrides,
                            data_root=args.data_root, out_dir=args.out_dir)
        if args.out_dir is None:
            cfg.out_dir = f"{cfg.out_dir}-ablation"
        run_ablation(cfg)
        return 0
    if args.command in ("pretrain", "run"):
        cfg = load_settings(preset=args.preset, config_file=args.config_file, overrides=args.overrides,
                            data_root=args.data_root, out_dir=args.out_dir)
        if args.command == "pretrain":
            from sslgraph.run.pretrain import pretrain

            pretrain(cfg, resume={None: False, "yes": True, "auto": "auto"}[args.resume])
        else:
            from sslgraph.run.pipeline import run_pipeline

            run_pipeline(cfg, from_stage=args.from_stage, started_at=args.started_at)
        return 0

    run = RunDir(args.run_dir)
    overrides = list(args.overrides)
    if args.command == "export-graphs":
        overrides += [f"method.export_features={args.features}"] if args.features else []
        overrides += [f"method.export_edges={args.edges}"] if args.edges else []
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
