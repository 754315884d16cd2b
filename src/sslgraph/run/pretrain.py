"""Stage A in a run directory: ``config.yaml``, ``log.jsonl`` + TensorBoard, ``checkpoint.pt``, ``features.pt``
(the final networks' clean features, for evaluation) and, for a method that keeps graphs, ``graphs/*.pt``
(written by the method's end-of-training hook through :class:`RunDirSink`).

Under ``torchrun`` every process calls :func:`pretrain`; only the main process writes, holding the run's lock
file. The checkpoint also records a fingerprint of the data set, and resuming on another data set is refused.
Unreadable images are listed in ``unreadable_images.txt`` (all of them, whether they stop the run or are
skipped with ``data.skip_corrupt``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch_geometric.data import Data

from sslgraph.config import Config, to_dict
from sslgraph.data.datasets import split_fingerprints
from sslgraph.errors import CheckpointError, ConfigError, Preempted, UnreadableImagesError
from sslgraph.graph.export import save_graph
from sslgraph.run.lock import run_lock
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
        # What identifies the data set (set once the trainer has built it); saved with every checkpoint.
        self.data_fingerprint: dict[str, Any] | None = None

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
        if self.data_fingerprint is not None:
            state = {**state, "data": self.data_fingerprint}
        save_checkpoint(state, self.run.checkpoint)

    def save_graphs(self, graphs: dict[str, Data]) -> list[Path]:
        return [save_graph(data, self.run.graph(stream)) for stream, data in graphs.items()]

    def save_features(self, record: dict[str, Any]) -> None:
        self.run.write_features(record)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


Resume = bool | Literal["auto"]


def check_fresh(run: RunDir, *, resume: Resume) -> None:
    """A new run must not overwrite a checkpoint; continuing one is what ``--resume`` is for, and ``--resume``
    without a checkpoint is a mistake (a mistyped ``--out``) unless it is ``auto``."""
    if run.checkpoint.is_file() and not resume:
        raise ConfigError(f"out_dir: {run.root} already holds a checkpoint; pass --resume to continue it or "
                          f"choose another --out")
    if resume is True and not run.checkpoint.is_file():
        raise CheckpointError(f"--resume: nothing to resume, no checkpoint at {run.checkpoint}; check --out, or "
                              f"pass --resume auto to start afresh when there is none")


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
        at = f", step {trainer.start_step}" if trainer.start_step else ""
        print(f"[sslgraph] resumed from {run.checkpoint} at epoch {trainer.start_epoch}{at}", flush=True)
        write_jsonl(run.log, [r for r in run.read_log() if r["epoch"] < trainer.start_epoch])


def restore_state(trainer: Trainer, path: Path) -> None:
    """Load a checkpoint into ``trainer``; one written by another version of the loop is a user error."""
    state = load_checkpoint(path, map_location=trainer.device)
    check_same_data(state.get("data"), data_fingerprints(trainer), path=path)
    check_same_network(state["config"].get("model", {}), to_dict(trainer.cfg)["model"], path=path)
    try:
        trainer.load_state_dict(state)
    except KeyError as err:
        raise CheckpointError(f"{path}: no entry {err} for this version of the training loop; start a new run "
                              f"or use the version that wrote it") from None


def data_fingerprints(trainer: Trainer) -> dict[str, Any]:
    return split_fingerprints(trainer.train_base, trainer.test_base)


# The model settings that change the networks' tensors: a checkpoint continues only under the same ones.
NETWORK_SHAPE_KEYS = ("backbone", "width", "cifar_stem", "patch_size", "out_dim", "head_hidden_dim",
                      "head_bottleneck_dim")


def check_same_network(saved: dict[str, Any], current: dict[str, Any], *, path: Path) -> None:
    """Refuse to continue a checkpoint whose networks this configuration builds differently (e.g. a width settled
    by model.cpu_width / cpu_float32_width on another kind of host)."""
    for key in NETWORK_SHAPE_KEYS:
        if key in saved and saved[key] != current.get(key):
            why = " (model.cpu_width / cpu_float32_width pick the width by the host)" if key == "width" else ""
            raise CheckpointError(f"{path}: trained with model.{key}={saved[key]}, this configuration builds "
                                  f"model.{key}={current.get(key)}{why}; resume with model.{key}={saved[key]} or "
                                  f"start a new run with another --out")


def check_same_data(saved: dict[str, Any] | None, current: dict[str, Any], *, path: Path) -> None:
    """Refuse to continue a checkpoint on another data set (its banks and graphs are keyed by image index)."""
    if saved is None:
        return  # written before checkpoints recorded their data set
    for split in ("train", "test"):
        before, now = saved.get(split, {}), current[split]
        if before == now:
            continue
        if before.get("size") != now["size"]:
            what = f"{now['size']} images now, {before.get('size')} when it was written"
        elif before.get("classes") != now["classes"]:
            what = f"other classes ({len(now['classes'])} now, {len(before.get('classes') or [])} then)"
        else:
            what = "the same number of images, but other files or labels"
        raise CheckpointError(f"{path}: written for another data set ({split} split: {what}); resume with the "
                              f"data it was trained on (data.root, data.*_subset, data.class_list, "
                              f"data.skip_corrupt) or start a new run with another --out")


def _write_unreadable(run: RunDir, by_split: dict[str, list[str]]) -> None:
    if dist.is_main() and any(by_split.values()):
        run.write_unreadable_images(by_split)


def _build_trainer(cfg: Config, run: RunDir, *, device: torch.device, sink: TrainingSink,
                   deadline: float | None = None) -> Trainer:
    """The trainer, with every unreadable image listed in the run directory (the message names a few)."""
    try:
        trainer = Trainer(cfg, device=device, sink=sink, deadline=deadline)
    except UnreadableImagesError as err:
        _write_unreadable(run, {err.split: err.paths})
        raise UnreadableImagesError(f"{err} (all {len(err.paths)} listed in {run.unreadable_images})",
                                    split=err.split, paths=err.paths) from err
    _write_unreadable(run, {"train": trainer.train_base.skipped, "test": trainer.test_base.skipped})
    if isinstance(sink, RunDirSink):
        sink.data_fingerprint = data_fingerprints(trainer)
    return trainer


def pretrain(cfg: Config, *, resume: Resume = False, deadline: float | None = None) -> RunDir:
    """Run (or continue) stage A in ``cfg.out_dir``.

    ``resume``: False starts a new run (refusing to overwrite a checkpoint); True continues the checkpoint (an
    error when there is none); ``"auto"`` continues when there is one and starts afresh otherwise. A stop
    signal raises :class:`~sslgraph.errors.Preempted` once the state at the current step is saved (the
    command line installs the signal handlers). ``deadline`` (a ``time.time()``, with a stage budget only) ends
    the stage by then if its budget would end it later.
    """
    run = RunDir(cfg.out_dir)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # On the CPU the loader workers get cores of their own; the caller's thread count is restored afterwards.
    threads = cpu_threads(cpu_threads_for(num_workers=cfg.data.num_workers)) if device.type == "cpu" else nullcontext()
    with run_lock(run):
        check_fresh(run, resume=resume)
        dist.init_distributed(device)
        try:
            with threads:
                sink: TrainingSink = RunDirSink(run) if dist.is_main() else MemorySink()
                try:
                    trainer = _build_trainer(cfg, run, device=device, sink=sink, deadline=deadline)
                    write_config(run, trainer.cfg)  # the host's widths settled
                    if resume and run.checkpoint.is_file():
                        restore(trainer, run)
                    trainer.fit()
                except Preempted as err:
                    raise Preempted(f"{err} [{run.checkpoint}]", signum=err.signum) from None
                finally:
                    if isinstance(sink, RunDirSink):
                        sink.close()
        finally:
            dist.destroy_distributed()
    return run
