"""Stage A in a run directory: ``config.yaml``, ``log.jsonl`` + TensorBoard, ``checkpoint.pt`` and, for a method
that keeps graphs, ``graphs/*.pt`` (written by the method's end-of-training hook through :class:`RunDirSink`).

Under ``torchrun`` every process calls :func:`pretrain`; only the main process writes.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from sslgraph.config import Config
from sslgraph.errors import CheckpointError, ConfigError
from sslgraph.graph.export import save_graph
from sslgraph.run.rundir import RunDir
from sslgraph.training.checkpoint import load_checkpoint, save_checkpoint
from sslgraph.training.outputs import MemorySink, TrainingSink
from sslgraph.training.trainer import Trainer
from sslgraph.utils import dist
from sslgraph.utils.io import append_jsonl, write_jsonl
from sslgraph.utils.misc import cpu_threads, cpu_threads_for, resolve_device


class RunDirSink:
    """Writes what the loop produces into a run directory: records to the log and TensorBoard, checkpoint states
    and graphs atomically."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.writer: Any = None  # opened on the first record, so a run that fails to start leaves no tb/

    def write_record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.run.log, record)
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run.tensorboard))
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"pretrain/{key}", value, record["epoch"])
        self.writer.flush()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_checkpoint(state, self.run.checkpoint)

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        return [save_graph(data, self.run.graph(stream)) for stream, data in graphs.items()]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def check_fresh(run: RunDir, *, resume: bool) -> None:
    """A new run must not overwrite a checkpoint; continuing one is what ``--resume`` is for."""
    if run.checkpoint.is_file() and not resume:
        raise ConfigError(f"out_dir: {run.root} already holds a checkpoint; pass --resume to continue it or "
                          f"choose another --out")


def write_config(run: RunDir, cfg: Config) -> None:
    """Main process: (re)write the run's ``config.yaml`` once everything is built."""
    if dist.is_main():
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
    dist.barrier()


def restore(trainer: Trainer, run: RunDir) -> None:
    """Continue from the run's checkpoint; log records past it are dropped so each epoch is logged once."""
    restore_state(trainer, run.checkpoint)
    if dist.is_main():
        print(f"[sslgraph] resumed from {run.checkpoint} at epoch {trainer.start_epoch}", flush=True)
        write_jsonl(run.log, [r for r in run.read_log() if r["epoch"] < trainer.start_epoch])


def restore_state(trainer: Trainer, path: Path) -> None:
    """Load a checkpoint into ``trainer``; one written by another version of the loop is a user error."""
    state = load_checkpoint(path, map_location=trainer.device)
    try:
        trainer.load_state_dict(state)
    except KeyError as err:
        raise CheckpointError(f"{path}: no entry {err} for this version of the training loop; start a new run "
                              f"or use the version that wrote it") from None


def pretrain(cfg: Config, *, resume: bool = False) -> RunDir:
    """Run (or, with ``resume``, continue) stage A in ``cfg.out_dir``."""
    run = RunDir(cfg.out_dir)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # On the CPU the loader workers get cores of their own; the caller's thread count is restored afterwards.
    threads = cpu_threads(cpu_threads_for(num_workers=cfg.data.num_workers)) if device.type == "cpu" else nullcontext()
    check_fresh(run, resume=resume)
    dist.init_distributed(device)
    try:
        with threads:
            sink: TrainingSink = RunDirSink(run) if dist.is_main() else MemorySink()
            try:
                trainer = Trainer(cfg, device=device, sink=sink)
                write_config(run, cfg)
                if resume and run.checkpoint.is_file():
                    restore(trainer, run)
                trainer.fit()
            finally:
                if isinstance(sink, RunDirSink):
                    sink.close()
    finally:
        dist.destroy_distributed()
    return run
