"""The pretraining loop (DINO self-distillation): stage A without files.

Read :meth:`Trainer.fit` top to bottom: it is the whole of stage A. The loop owns everything methods share
(data, networks, optimiser, schedules, mixed precision, DDP, the online kNN monitor, checkpoint states, log
records); a :class:`~sslgraph.methods.hooks.Method` extends it through its hooks. What the loop produces goes
to a :class:`~sslgraph.training.outputs.TrainingSink` on the main process; it never names a file (the run
layer, :mod:`sslgraph.run.pretrain`, decides where things are written).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.data import Data

from sslgraph.config import Config, local_crop_size, to_dict, with_host_width
from sslgraph.data import EvalDataset, ImageDataset, build_dataset, eval_transform
from sslgraph.data.transforms import IMAGENET_CROP_RATIO
from sslgraph.data.batch_aug import BatchAugment, join_views, missing_cpp_compiler, view_recipes
from sslgraph.data.batches import PretrainBatches
from sslgraph.errors import ConfigError, NonFiniteLossError, Preempted
from sslgraph.eval.features import extract_features, feature_record, feature_settings, network_fingerprint
from sslgraph.eval.knn import knn_accuracy
from sslgraph.methods import Method, Split, Stream, build_method
from sslgraph.models.network import build_network
from sslgraph.optim.params import cancel_last_layer_gradients, clip_gradients, param_groups
from sslgraph.optim.schedules import cosine_schedule, scaled_lr, stretch_tail, teacher_momentum_schedule
from sslgraph.training.objectives import Objective, build_objective
from sslgraph.training.outputs import MemorySink, TrainingSink
from sslgraph.utils import dist, preempt
from sslgraph.utils.misc import (autocast_dtype, cpu_threads, cpu_threads_for, flush_denormals, progress, rng_state,
                                 seed_everything, set_rng_state)

__all__ = ["NonFiniteLossError", "Trainer"]

# With optim.budget_minutes, steps CALIBRATION_SKIP..CALIBRATION_STEPS-1 of the first epoch are timed.
CALIBRATION_SKIP = 3
CALIBRATION_STEPS = 15
# optim.budget_scope=stage reserves END_MARGIN x the end of training's embedding passes, timed at calibration, plus
# END_FIXED_SECONDS: on a 2-core CPU the last kNN monitor and the graph export took 110 s, 85 of them embedding
# 120,000 images (the rest: neighbour searches and about 1 GB of writes).
END_MARGIN = 1.3
END_FIXED_SECONDS = 10.0
# "No non-finite loss seen" for the on-device record of the first step with one.
NO_BAD_STEP = 2**62


def budget_warmup_epochs(warmup_epochs: float, *, epochs: int, iters_per_epoch: int, total_iters: int) -> float:
    """``optim.warmup_epochs``, unless a wall-clock budget leaves fewer iterations than the warm-up: then the
    warm-up keeps its share of ``optim.epochs`` within the budget's ``total_iters``."""
    if round(warmup_epochs * iters_per_epoch) <= total_iters:
        return warmup_epochs
    return warmup_epochs / epochs * total_iters / iters_per_epoch


class Trainer:
    """Builds everything a pretraining run needs from a :class:`Config` and runs or restores it.

    It is also the :class:`~sslgraph.methods.hooks.TrainContext` its method sees. ``sink`` receives the log
    records, checkpoint states and graphs (default: kept in memory).
    """

    def __init__(self, cfg: Config, *, device: torch.device, sink: TrainingSink | None = None,
                 deadline: float | None = None) -> None:
        # The stage's clock (optim.budget_scope=stage counts from here: set-up, data loading and all).
        self._clock_start = time.perf_counter()
        # A time.time() by which the stage, end of training included, must be over (``sslgraph run``'s time limit
        # less its later stages); it can shorten the stage budget, never lengthen it.
        if deadline is not None and cfg.optim.budget_scope != "stage":
            raise ValueError("a deadline needs optim.budget_scope=stage (it shortens the stage budget)")
        self.deadline = deadline
        self.device = device
        self.sink: TrainingSink = sink if sink is not None else MemorySink()
        self.amp_dtype = autocast_dtype(cfg.optim.precision, device)
        # model.cpu_width / cpu_float32_width settled for this host; the checkpoint (and config.yaml) keep the result.
        on_cpu = device.type == "cpu"
        self.cfg = cfg = with_host_width(cfg, cpu=on_cpu, cpu_float32=on_cpu and self.amp_dtype is None)
        self._check_local_crop_size()

        seed_everything(cfg.seed)
        self.train_base, self.test_base = self._build_datasets()
        self._check_batch_size()

        self.student = build_network(cfg, drop_path_rate=cfg.model.drop_path_rate).to(device)
        self.teacher = build_network(cfg, drop_path_rate=0.0).to(device)
        # ResNets run faster on channels-last inputs on both CPU and GPU; ViTs see no difference.
        self.channels_last = cfg.model.backbone.startswith("resnet")
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        if dist.is_dist() and device.type == "cuda":
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.student_ddp: nn.Module = self.student
        if dist.is_dist():
            device_ids = [device.index] if device.type == "cuda" else None
            self.student_ddp = DistributedDataParallel(self.student, device_ids=device_ids)
        self.student_forward: nn.Module = torch.compile(self.student_ddp) if cfg.optim.compile else self.student_ddp
        self.embed_dim = self.student.backbone.embed_dim

        # The loader only gathers uint8 images (from the cache, or decoded by workers); the views are made on
        # the device, as a function of (seed, epoch, index) only.
        self.sampler = DistributedSampler(range(len(self.train_base)), num_replicas=dist.world_size(),
                                          rank=dist.rank(), shuffle=True, seed=cfg.seed, drop_last=True)
        self.local_batch = cfg.optim.batch_size // dist.world_size()
        self.batches = PretrainBatches(
            self.train_base, sampler=self.sampler, batch_size=self.local_batch, device=device,
            num_workers=cfg.data.num_workers, storage_size=round(cfg.data.image_size / IMAGENET_CROP_RATIO),
            cache_on_device=device.type == "cuda")
        compile_views = cfg.aug.compile
        if compile_views and (missing := missing_cpp_compiler(device)):
            # The same views either way, so a machine without a compiler runs the preset eagerly instead of failing.
            self._log(f"aug.compile: {missing}; the views are made without it (the same views, slower)")
            compile_views = False
        elif compile_views:
            self._log("aug.compile: the first batch compiles the views (about 20 s on 2 CPU cores, a few seconds "
                      "from the compiler's disk cache)")
        self.augment = BatchAugment(view_recipes(cfg.aug, image_size=cfg.data.image_size), mean=cfg.data.mean,
                                    std=cfg.data.std, seed=cfg.seed, compile=compile_views,
                                    channels_last=self.channels_last)
        self.iters_per_epoch = len(self.batches)
        self.eval_sets = {split: EvalDataset(base, eval_transform(cfg.data))
                          for split, base in (("train", self.train_base), ("test", self.test_base))}

        o = cfg.optim
        self.objective: Objective = build_objective(cfg, device=device)
        groups = param_groups(self.student)
        if o.optimizer == "sgd":
            # Fused: one kernel over all parameters, the same updates as the default implementation bit for bit,
            # and about 5x faster on a 2-core CPU (2 instead of 9-11 ms per ResNet-18 step).
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=0.0, momentum=o.sgd_momentum,
                                                                    nesterov=True, fused=True)
        else:
            # One fused kernel per step on CUDA instead of a loop over parameter groups; the CPU keeps the
            # reference implementation (identical results there).
            self.optimizer = torch.optim.AdamW(groups, fused=device.type == "cuda")
        # The run's length in iterations: optim.epochs, or what optim.budget_minutes allows (set in fit()).
        self.total_iters = o.epochs * self.iters_per_epoch
        # With a budget: the calibrated length, then each re-plan (iterations done, new length), and the seconds
        # of training steps spent so far. The schedules are a function of these, so a resumed run rebuilds them.
        self._planned_iters = self.total_iters
        self._replans: list[tuple[int, int]] = []
        self._budget_spent = 0.0
        # optim.budget_scope=stage: seconds earlier processes of this run spent (restored from the checkpoint) and
        # the reserve for the end of training, estimated at calibration.
        self._stage_before = 0.0
        self._end_reserve = 0.0
        self._build_schedules()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

        self.method: Method = build_method(
            cfg, num_train=len(self.train_base), num_test=len(self.test_base), embed_dim=self.embed_dim,
            train_labels=self.train_base.targets, test_labels=self.test_base.targets, device=device)
        self.start_epoch = 0
        # Steps of start_epoch already trained (a checkpoint written mid-epoch) and that epoch's running totals.
        self.start_step = 0
        self._epoch_progress: dict[str, Any] | None = None
        self._calibrated = cfg.optim.budget_minutes is None
        self.checkpoint_clock = preempt.CheckpointClock(cfg.optim.checkpoint_every_minutes)
        self.resumed = False
        self._embed_cache: dict[tuple[str, str], torch.Tensor] = {}

    def _build_schedules(self) -> None:
        """Per-iteration lr, weight decay and teacher momentum over the planned length, each re-plan of a
        budget then stretching or squeezing what was left of them (so they end on their last values)."""
        o, ipe, total = self.cfg.optim, self.iters_per_epoch, self._planned_iters
        warmup = budget_warmup_epochs(o.warmup_epochs, epochs=o.epochs, iters_per_epoch=ipe, total_iters=total)
        schedules = [
            cosine_schedule(scaled_lr(o.lr, o.batch_size), o.min_lr, epochs=o.epochs, iters_per_epoch=ipe,
                            warmup_epochs=warmup, total_iters=total),
            cosine_schedule(o.weight_decay, o.weight_decay_end, epochs=o.epochs, iters_per_epoch=ipe,
                            total_iters=total),
            teacher_momentum_schedule(o.momentum_teacher, epochs=o.epochs, iters_per_epoch=ipe, total_iters=total,
                                      end=o.momentum_teacher_end),
        ]
        for done, new_total in self._replans:
            schedules = [stretch_tail(s, start=done, total=new_total) for s in schedules]
            total = new_total
        self.total_iters = total
        self.lr_schedule, self.wd_schedule, self.momentum_schedule = schedules

    @property
    def epochs(self) -> int:
        """Epochs this run trains: ``optim.epochs``, or as many (the last one partial) as the budget allows."""
        return -(-self.total_iters // self.iters_per_epoch)

    @property
    def _stage_scope(self) -> bool:
        return self.cfg.optim.budget_scope == "stage"

    def _stage_seconds(self) -> float:
        """Wall-clock seconds of the pretraining stage so far, earlier processes of a resumed run included."""
        return self._stage_before + time.perf_counter() - self._clock_start

    def _deadline_seconds(self) -> float:
        """Seconds until the deadline (infinite without one)."""
        return math.inf if self.deadline is None else self.deadline - time.time()

    def _steps_seconds_left(self, *, spent: float, to_deadline: float) -> tuple[float, str]:
        """Stage scope: what the steps may still use, the end of training's reserve taken off (the stage budget's
        rest or the time to the deadline, whichever is shorter), and a note for the log when the deadline is."""
        budget_left = float(self.cfg.optim.budget_minutes) * 60 - spent
        note = f"; the time limit leaves {max(to_deadline, 0.0) / 60:.2f} min" if to_deadline < budget_left else ""
        return min(budget_left, to_deadline) - self._end_reserve, note

    def _set_budget(self, seconds_per_step: float, *, steps_done: int) -> None:
        """Lay the schedules over the iterations that fit in ``optim.budget_minutes`` (slowest process counts).

        Iterations before the calibration ran on the provisional schedules of ``optim.epochs``; from here on
        every schedule (the teacher momentum's cosine included) is indexed over the ``total_iters`` set here, so
        the last iteration of the run is the schedule's last value. With ``optim.budget_scope=stage`` the steps
        get what the stage has left once its time so far and the end of training's reserve are taken off.
        """
        minutes = float(self.cfg.optim.budget_minutes)
        reserve = self._end_seconds() if self._stage_scope else 0.0
        local = [seconds_per_step, reserve, self._stage_seconds() if self._stage_scope else 0.0,
                 -self._deadline_seconds()]  # negated: the slowest process's max is the earliest deadline
        per_step, reserve, spent, late = (float(v) for v in dist.all_reduce_max(
            torch.tensor(local, dtype=torch.float64, device=self.device)))
        if self._stage_scope:
            self._end_reserve = reserve
            left, note = self._steps_seconds_left(spent=spent, to_deadline=-late)
            planned = steps_done + int(max(left, 0.0) / per_step)
            how = f" ({spent:.0f} s spent, {reserve:.0f} s kept for the end of training{note})"
        else:
            planned, how = int(minutes * 60 / per_step), ""
        self._planned_iters = max(CALIBRATION_STEPS + 1, planned)
        self._replans = []
        self._build_schedules()
        self._log(f"budget {minutes:g} min{how}: {per_step * 1000:.0f} ms per step -> {self.total_iters} iterations "
                  f"({self.total_iters / self.iters_per_epoch:.2f} epochs)")

    def _end_seconds(self) -> float:
        """The end of training's estimated seconds: its embedding passes (the method's, see
        :meth:`~sslgraph.methods.hooks.Method.final_embeddings`, and the last kNN monitor's) at the pace of one
        pass over a few batches of held-out images timed now, times ``END_MARGIN``, plus ``END_FIXED_SECONDS``."""
        keys = set(self.method.final_embeddings())
        if self.cfg.monitor.knn_every:
            keys |= {("teacher", "train"), ("teacher", "test")}
        images = sum(len(self.eval_sets[split]) for _, split in keys)
        if not images:
            return END_FIXED_SECONDS
        sample = min(len(self.eval_sets["test"]), 4 * self.cfg.monitor.eval_batch_size)
        start = time.perf_counter()
        self._embed_pass("teacher", "test", limit=sample, desc=None)
        rate = sample / max(time.perf_counter() - start, 1e-9)
        return END_MARGIN * images / rate + END_FIXED_SECONDS

    def _replan_budget(self, *, epoch: int, seconds: float) -> None:
        """After ``epoch`` (its steps took ``seconds``): fit the rest of the run into what is left of the budget
        at that epoch's pace. The first steps' calibration misjudges a long run's pace either way on a 2-core
        CPU (618 ms calibrated against about 700 later in one run, 770 against 618 in another), and the pace
        drifts within a run. A resumed epoch counts only the seconds after the resume."""
        if self.cfg.optim.budget_minutes is None or not self._calibrated:
            return
        done = min((epoch + 1) * self.iters_per_epoch, self.total_iters)
        steps = done - epoch * self.iters_per_epoch
        spent = self._stage_seconds() if self._stage_scope else self._budget_spent + seconds
        spent_pace = dist.all_reduce_max(torch.tensor([spent, seconds / max(steps, 1), -self._deadline_seconds()],
                                                      dtype=torch.float64, device=self.device))
        self._budget_spent, pace, late = (float(v) for v in spent_pace)
        if done >= self.total_iters:
            return
        if self._stage_scope:
            left, note = self._steps_seconds_left(spent=self._budget_spent, to_deadline=-late)
        else:
            left, note = float(self.cfg.optim.budget_minutes) * 60 - self._budget_spent, ""
        new_total = done + max(0, int(left / pace))
        if new_total == self.total_iters:
            return
        self._log(f"budget: {self._budget_spent / 60:.2f} of {self.cfg.optim.budget_minutes:g} min spent{note}, "
                  f"{pace * 1000:.0f} ms per step -> {new_total} iterations instead of {self.total_iters} "
                  f"({new_total / self.iters_per_epoch:.2f} epochs)")
        self._replans.append((done, new_total))
        self._build_schedules()

    # ------------------------------------------------------------------ set-up checks
    def _build_datasets(self) -> tuple[ImageDataset, ImageDataset]:
        """The main process decodes (and caches) first, so the others read the cache instead of racing it."""
        built: tuple[ImageDataset, ImageDataset] | None = None
        if dist.is_main():
            built = (build_dataset(self.cfg.data, "train"), build_dataset(self.cfg.data, "test"))
        dist.barrier()
        if built is None:
            built = (build_dataset(self.cfg.data, "train", progress=False),
                     build_dataset(self.cfg.data, "test", progress=False))
        return built

    def _check_local_crop_size(self) -> None:
        """Refuse ResNet local crops whose last stage would see a 1x1 map under bf16 on the CPU: oneDNN's bf16
        backward of that 3x3 stride-2 convolution returned NaN weight gradients here (torch 2.14.1, at random)."""
        a, m = self.cfg.aug, self.cfg.model
        if not (a.local_crops and self.device.type == "cpu" and self.amp_dtype is torch.bfloat16
                and m.backbone.startswith("resnet")):
            return
        stride = 4 if m.cifar_stem else 16  # input pixels per pixel of the third stage's output
        size = local_crop_size(a, image_size=self.cfg.data.image_size)
        if size <= stride:
            raise ConfigError(f"aug.local_crop_size: {size} px local crops reach the ResNet's last stage as a 1x1 map, "
                              f"whose bf16 backward on the CPU can give NaN gradients; use more than {stride} px or "
                              f"optim.precision=fp32")

    def _check_batch_size(self) -> None:
        batch, world, n = self.cfg.optim.batch_size, dist.world_size(), len(self.train_base)
        if batch % world:
            raise ConfigError(f"optim.batch_size: {batch} is not divisible by the {world} processes")
        if batch // world * world > n // world * world or batch > n:
            raise ConfigError(f"optim.batch_size: {batch} is larger than the training set ({n} images)")

    # ------------------------------------------------------------------ the context methods see
    def embed(self, stream: Stream, split: Split) -> torch.Tensor:
        """Clean, eval-mode, L2-normalised backbone features; the unnormalised ones are cached until the networks
        change (and handed to the sink at the end of training, see :meth:`finish`)."""
        return F.normalize(self._clean_features(stream, split), dim=1)

    def _backbone(self, stream: Stream) -> nn.Module:
        return (self.teacher if stream == "teacher" else self.student).backbone

    def _clean_features(self, stream: Stream, split: Split) -> torch.Tensor:
        key = (stream, split)
        if key not in self._embed_cache:
            self._embed_cache[key] = self._embed_pass(stream, split, desc=f"embed {stream}/{split}")
        return self._embed_cache[key]

    def _embed_pass(self, stream: Stream, split: Split, *, desc: str | None, limit: int | None = None) -> torch.Tensor:
        """Unnormalised eval-mode features of the split's first ``limit`` clean images (all by default); a
        progress bar named ``desc`` (none without)."""
        backbone = self._backbone(stream)
        was_training = backbone.training
        backbone.eval()

        def fn(x: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return backbone(x).float()

        # Between epochs the training loader's workers are gone: on the CPU, inference takes every core.
        on_cpu = self.device.type == "cpu"
        threads = cpu_threads(cpu_threads_for(num_workers=0)) if on_cpu else nullcontext()
        try:
            with threads:
                return extract_features(fn, self.eval_sets[split], batch_size=self.cfg.monitor.eval_batch_size,
                                        device=self.device, num_workers=0 if on_cpu else self.cfg.data.num_workers,
                                        progress=desc is not None, desc=desc or "", limit=limit)
        finally:
            backbone.train(was_training)

    def finish(self) -> None:
        """The end of training: the method's end hook (e.g. its graphs), then the clean features embedded for
        it and for the kNN monitor go to the sink (``eval.reuse_features``), so that evaluation need not embed
        the data set again."""
        self.method.on_train_end(self)
        if not self.cfg.eval.reuse_features or not dist.is_main() or not self._embed_cache:
            return
        features: dict[str, dict[str, torch.Tensor]] = {}
        for (stream, split), value in self._embed_cache.items():
            features.setdefault(stream, {})[split] = value
        networks = {stream: network_fingerprint(self._backbone(stream)) for stream in features}
        settings = feature_settings(self.cfg.data, train_set=self.train_base, test_set=self.test_base,
                                    amp_dtype=self.amp_dtype)
        self.sink.save_features(feature_record(features, networks=networks, settings=settings))

    def save_graphs(self, graphs: dict[Stream, Data]) -> list[Path]:
        """The method's graphs go to the sink on the main process; every process waits for the write."""
        paths = self.sink.save_graphs(graphs) if dist.is_main() else []
        dist.barrier()
        if paths:
            self._log("graphs written: " + ", ".join(str(p) for p in paths))
        return paths

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self, epoch: int) -> dict[str, Any]:
        """State after ``epoch`` finished; ``epoch + 1`` is where a resumed run starts."""
        return {
            "epoch": epoch + 1,
            "config": to_dict(self.cfg),
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "objective": self.objective.state_dict(),
            "total_iters": self.total_iters,
            "budget_plan": {"planned_iters": self._planned_iters, "replans": [list(r) for r in self._replans],
                            "spent_seconds": self._stage_seconds() if self._stage_scope else self._budget_spent,
                            "end_reserve_seconds": self._end_reserve},
            "finished": epoch + 1 >= self.epochs,
            "method": self.method.state_dict(),
            "rng": rng_state(),
            "world_size": dist.world_size(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint state: networks, optimiser, centre, method, RNG; :meth:`fit` then resumes."""
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.objective.load_state_dict(state["objective"])
        plan = state.get("budget_plan")
        if plan is not None:
            self._planned_iters = int(plan["planned_iters"])
            self._replans = [(int(done), int(total)) for done, total in plan["replans"]]
            self._budget_spent = float(plan["spent_seconds"])
            # A resumed stage goes on counting from the checkpoint's clock (the time between the two is not work).
            self._stage_before = self._budget_spent if self._stage_scope else 0.0
            self._end_reserve = float(plan.get("end_reserve_seconds", 0.0))
        else:  # a checkpoint from before re-planning: one plan over its length
            self._planned_iters, self._replans = int(state["total_iters"]), []
        self._build_schedules()
        self.method.load_state_dict(state["method"])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.start_step = int(state.get("step", 0))
        self._epoch_progress = state.get("epoch_progress")
        self._calibrated = bool(state.get("calibrated", True))
        self.resumed = True
        self._embed_cache.clear()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train from :attr:`start_epoch` to ``optim.epochs``, then let the method finish (e.g. build its graphs).

        A fresh run first records the kNN monitor at initialisation and starts the method; a restored one
        (:meth:`load_state_dict`) goes straight to its next epoch.
        """
        # On the CPU, denormal floats take a slow path in every kernel that meets them (utils.misc).
        with flush_denormals(self.device.type == "cpu"):
            self._fit()

    def _fit(self) -> None:
        cfg = self.cfg
        if not self.resumed:
            if cfg.monitor.knn_at_init:
                self._write_record({"epoch": -1, "knn_top1": self.knn_monitor()})
            self.method.on_train_start(self)

        epoch = self.start_epoch
        while epoch < self.epochs:  # with a budget, each epoch's end may change how many there are
            record = self.train_one_epoch(epoch)
            self._replan_budget(epoch=epoch, seconds=record["epoch_seconds"])
            record.update(self.method.on_epoch_end(self, epoch=epoch))
            every = cfg.monitor.knn_every
            if every and ((epoch + 1) % every == 0 or epoch + 1 == self.epochs):
                record["knn_top1"] = self.knn_monitor()
            self._save_checkpoint(epoch)
            self._write_record(record)
            self.checkpoint_clock.reset()
            epoch += 1
            if epoch < self.epochs:
                self._stop_if_requested(f"after epoch {epoch - 1} (the checkpoint of its end is saved)")

        self.finish()

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        self._embed_cache.clear()
        self.student.train()
        self.teacher.train()
        self.sampler.set_epoch(epoch)
        self.batches.set_partners(self.method.partners_for_epoch(epoch))
        calibrate = epoch == 0 and not self._calibrated
        steps = min(self.iters_per_epoch, self.total_iters - epoch * self.iters_per_epoch)

        # Loss and the first non-finite step stay on the device; the host reads them every monitor.log_every
        # steps and at the epoch's end, so a step never waits for the device.
        loss_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((), NO_BAD_STEP, dtype=torch.long, device=self.device)
        log_every = self.cfg.monitor.log_every
        seen = 0
        # A run resumed from a mid-epoch checkpoint skips the steps done and keeps the epoch's running loss.
        first, self.start_step = self.start_step, 0
        restored, self._epoch_progress = self._epoch_progress, None
        if first:
            self.batches.start_step = first
            if restored is not None:
                loss_sum += restored["loss_sum"].to(self.device)
        self._sync()
        start = calibration_start = time.perf_counter()
        bar = progress(self.batches, desc=f"epoch {epoch + 1}/{self.epochs}", total=steps)
        bar.update(first)
        for step, batch in enumerate(bar, start=first):
            if calibrate and step - first == CALIBRATION_SKIP:
                self._sync()
                calibration_start = time.perf_counter()
            if calibrate and step - first == CALIBRATION_STEPS:
                self._sync()
                self._set_budget((time.perf_counter() - calibration_start) / (CALIBRATION_STEPS - CALIBRATION_SKIP),
                                 steps_done=step)
                self._calibrated = True
                steps = min(self.iters_per_epoch, self.total_iters)
                bar.reset(total=steps)
                bar.update(step)
            if step >= steps:
                break
            views, indices = self._views(batch, epoch=epoch)
            loss = self.training_step(views, indices, epoch=epoch, step=step).detach()
            loss_sum += loss
            first_bad = torch.where(torch.isfinite(loss), first_bad, first_bad.clamp(max=step))
            seen += indices.shape[0]
            if (step + 1) % log_every == 0:
                self._check_finite(first_bad, epoch=epoch)
                if not bar.disable:
                    bar.set_postfix(loss=f"{float(loss_sum) / (step + 1):.4g}")
            self._checkpoint_mid_epoch(epoch=epoch, done=step + 1, steps=steps, loss_sum=loss_sum,
                                       first_bad=first_bad)
        bar.close()
        self._check_finite(first_bad, epoch=epoch)
        mean_loss = float(dist.all_reduce_mean(loss_sum / max(steps, 1)))  # waits for the epoch's last step
        elapsed = time.perf_counter() - start
        last_it = epoch * self.iters_per_epoch + steps - 1
        return {
            "epoch": epoch,
            "loss": mean_loss,
            "lr": float(self.lr_schedule[last_it]),
            "weight_decay": float(self.wd_schedule[last_it]),
            "teacher_momentum": float(self.momentum_schedule[last_it]),
            **self.objective.log_values(epoch),
            "images_per_sec": seen * dist.world_size() / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
        }

    def _views(self, batch: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor], *,
               epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The augmented views of a uint8 batch: two global views (crop 2 from the partner images when
        bootstrapping), then any local crops of the anchor images."""
        images, partners, indices = batch
        sources = [None, partners] + [None] * self.cfg.aug.local_crops
        views = self.augment(images, indices, epoch=epoch, sources=sources)
        return views, indices

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor, *, epoch: int,
                      step: int) -> torch.Tensor:
        """One iteration: schedules, teacher/student forward, the objective's loss, update, EMA, method hook."""
        o = self.cfg.optim
        it = epoch * self.iters_per_epoch + step
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr_schedule[it])
            group["weight_decay"] = float(self.wd_schedule[it]) if group["apply_wd"] else 0.0

        batch = indices.shape[0]
        inputs, local_inputs = join_views(views[:2]), join_views(views[2:]) if len(views) > 2 else None
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            if local_inputs is not None:
                local_inputs = local_inputs.contiguous(memory_format=torch.channels_last)
        teacher_feats = teacher_out = None
        with self._autocast():
            with torch.no_grad():
                if self.objective.needs_teacher:
                    teacher_feats, teacher_out = self.teacher(inputs)
                    teacher_out = teacher_out.view(2, batch, -1)
                elif self.method.uses_step_features:  # the teacher bank needs the teacher's crop-1 features
                    teacher_feats = self.teacher.backbone(inputs[:batch])
            student_feats, student_out = self.student_forward(inputs)
            if local_inputs is not None:  # multi-crop: the smaller local crops go through the student separately
                student_out = torch.cat([student_out, self.student_forward(local_inputs)[1]])
            loss = self.objective.loss(student_out.view(len(views), batch, -1), teacher_out, epoch=epoch)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if o.clip_grad:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.student, o.clip_grad)
        if hasattr(self.student.head, "last_layer"):
            cancel_last_layer_gradients(self.student.head, epoch=epoch, freeze_epochs=o.freeze_last_layer)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        with torch.no_grad():
            # A teacher that ran in train mode this step has its own normalisation statistics; one that did not
            # (a student-only objective without banks) follows the student's, or they would stay at their
            # initial values and its eval-mode features would be meaningless.
            teacher_ran = self.objective.needs_teacher or self.method.uses_step_features
            self._update_teacher(float(self.momentum_schedule[it]), buffers=not teacher_ran)
            self.objective.after_step(teacher_out)
            if self.method.uses_step_features:
                assert teacher_feats is not None
                self.method.after_step(indices=indices.to(self.device), teacher_feats=teacher_feats[:batch].float(),
                                       student_feats=student_feats[:batch].float())
        return loss

    def _checkpoint_mid_epoch(self, *, epoch: int, done: int, steps: int, loss_sum: torch.Tensor,
                              first_bad: torch.Tensor) -> None:
        """After ``done`` steps of ``epoch``: save the state at this step when a stop signal arrived or
        ``optim.checkpoint_every_minutes`` passed, and stop for a signal (:class:`Preempted`).

        A single process decides at every step without reading the device; under DDP the processes agree every
        ``monitor.log_every`` steps (one small collective), so all of them save and stop at the same step.
        """
        if done >= steps or (dist.is_dist() and done % self.cfg.monitor.log_every):
            return  # the epoch's end checkpoints anyway
        signum, due = preempt.agree(preempt.requested(), self.checkpoint_clock.due(), device=self.device)
        if signum is None and not due:
            return
        self._check_finite(first_bad, epoch=epoch)  # never save a state that went non-finite
        if dist.is_main():
            state = self.state_dict(epoch - 1)  # "epoch": this one, not finished
            state.update(step=done, epoch_progress={"loss_sum": loss_sum.detach().cpu()}, calibrated=self._calibrated)
            self.sink.save_checkpoint(state)
        dist.barrier()
        self.checkpoint_clock.reset()
        self._stop_if_requested(f"at epoch {epoch}, step {done} of {steps} (the checkpoint of that step is saved)",
                                signum=signum)

    def _stop_if_requested(self, where: str, *, signum: int | None = None) -> None:
        if signum is None:
            signum, _ = preempt.agree(preempt.requested(), False, device=self.device)
        if signum is not None:
            raise Preempted(f"stopped by {preempt.signal_name(signum)} {where}; rerun the same command (pretrain: "
                            f"with --resume or --resume auto) to continue from there", signum=signum)

    def _check_finite(self, first_bad: torch.Tensor, *, epoch: int) -> None:
        """Stop when any process saw a non-finite loss (one host read of a device value, so called rarely)."""
        bad = int(-dist.all_reduce_max(-first_bad))
        if bad != NO_BAD_STEP:
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, step {bad}; stopping. The last good checkpoint ({epoch} "
                f"epochs finished) is intact: lower optim.lr, raise optim.clip_grad or use "
                f"optim.precision=fp32/bf16, then rerun with --resume.")

    def _sync(self) -> None:
        """Wait for the device's queued work (only where wall-clock time is measured)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def _update_teacher(self, momentum: float, *, buffers: bool = False) -> None:
        """EMA of the student's parameters; with ``buffers`` also of its floating-point buffers (BatchNorm
        running statistics), integer buffers copied."""
        teacher_params = [p for p in self.teacher.parameters()]
        student_params = [p.detach() for p in self.student.parameters()]
        # teacher + (1 - m) (student - teacher) = m teacher + (1 - m) student, in one pass over the weights.
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        if not buffers:
            return
        pairs = list(zip(self.teacher.buffers(), self.student.buffers()))
        floats = [(t, s) for t, s in pairs if t.is_floating_point()]
        if floats:
            torch._foreach_lerp_([t for t, _ in floats], [s for _, s in floats], 1.0 - momentum)
        for t, s in pairs:
            if not t.is_floating_point():
                t.copy_(s)

    def knn_monitor(self) -> float:
        """Weighted kNN top-1 (%) of the teacher backbone: clean training images vote for clean test images."""
        mo = self.cfg.monitor
        train = self.embed("teacher", "train")
        labels = self.train_base.targets.to(self.device)
        if mo.knn_train_subset is not None and mo.knn_train_subset < len(train):
            generator = torch.Generator().manual_seed(self.cfg.seed)
            keep = torch.randperm(len(train), generator=generator)[:mo.knn_train_subset]
            train, labels = train[keep.to(self.device)], labels[keep.to(self.device)]
        accuracy = knn_accuracy(train, labels, self.embed("teacher", "test"), self.test_base.targets.to(self.device),
                                ks=[mo.knn_k], temperature=mo.knn_temperature)
        return float(accuracy[mo.knn_k])

    # ------------------------------------------------------------------ outputs
    def _save_checkpoint(self, epoch: int) -> None:
        if dist.is_main():
            self.sink.save_checkpoint(self.state_dict(epoch))
        dist.barrier()

    def _write_record(self, record: dict[str, Any]) -> None:
        if not dist.is_main():
            return
        self.sink.write_record(record)
        self._log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    @staticmethod
    def _log(message: str) -> None:
        if dist.is_main():
            print(f"[sslgraph] {message}", flush=True)
