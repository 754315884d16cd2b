"""The pretraining loop (DINO self-distillation) and the hooks through which a method extends it.

Read :meth:`Trainer.fit` top to bottom: it is the whole of stage A. The loop owns everything methods share
(data, networks, optimiser, schedules, mixed precision, DDP, the online kNN monitor, checkpoints, logs);
a :class:`Method` only sees the dataset indices and backbone features of each step, the epoch boundaries
and a :class:`TrainContext` that embeds clean images. ``dino`` uses no hook, ``adasim`` adds a memory bank
and neighbour bootstrapping, ``graph`` adds the two kNN graphs.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from sslgraph.config import Config, ConfigError, config_from_dict, to_dict, to_yaml
from sslgraph.data import EvalDataset, ImageDataset, PretrainDataset, TwoCropTransform, build_dataset, eval_transform
from sslgraph.eval.features import extract_features
from sslgraph.eval.knn import knn_accuracy
from sslgraph.losses.dino import dino_loss, teacher_batch_mean, updated_center
from sslgraph.models.backbones import build_backbone
from sslgraph.models.heads import DINOHead, SSLNetwork
from sslgraph.optim.params import cancel_last_layer_gradients, clip_gradients, param_groups
from sslgraph.optim.schedules import cosine_schedule, scaled_lr, teacher_momentum_schedule, teacher_temp_schedule
from sslgraph.utils import dist
from sslgraph.utils.io import append_jsonl, atomic_save, atomic_write_text, read_jsonl, safe_load, write_jsonl
from sslgraph.utils.misc import (cpu_threads, cpu_threads_for, progress, resolve_device, rng_state, seed_everything,
                                 set_rng_state)

Stream = Literal["teacher", "student"]
Split = Literal["train", "test"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainContext(Protocol):
    cfg: Config
    device: torch.device

    def embed(self, stream: Stream, split: Split) -> torch.Tensor:
        """``[N, D]`` L2-normalised backbone features of clean images, identical on every process."""
        ...


class Method:
    """Plain DINO: every hook is a no-op. Subclasses add banks, bootstrapping and graphs."""

    name: str = "dino"

    def __init__(self, cfg: Config, *, num_train: int, num_test: int, embed_dim: int,
                 train_labels: torch.Tensor, test_labels: torch.Tensor, device: torch.device) -> None:
        self.cfg = cfg
        self.num_train = num_train
        self.num_test = num_test
        self.embed_dim = embed_dim
        self.train_labels = train_labels
        self.test_labels = test_labels
        self.device = device

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first epoch of a fresh run (not on resume)."""

    def partners_for_epoch(self, epoch: int) -> torch.Tensor | None:
        """Per training index, the image crop 2 is taken from this epoch (None: the image itself)."""
        return None

    def after_step(self, *, indices: torch.Tensor, teacher_feats: torch.Tensor, student_feats: torch.Tensor) -> None:
        """This process's batch: dataset indices and detached backbone features of crop 1 (image x_i)."""

    def on_epoch_end(self, ctx: TrainContext, *, epoch: int) -> dict[str, float]:
        """End-of-epoch work; returns statistics for the epoch's log record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def export_graphs(self, ctx: TrainContext, out_dir: Path) -> list[Path]:
        raise ConfigError(f"method.name: method {self.name!r} keeps no kNN graphs; use method.name=graph")


def build_network(cfg: Config, *, drop_path_rate: float) -> SSLNetwork:
    backbone = build_backbone(cfg.model.backbone, image_size=cfg.data.image_size, patch_size=cfg.model.patch_size,
                              drop_path_rate=drop_path_rate, cifar_stem=cfg.model.cifar_stem)
    head = DINOHead(backbone.embed_dim, cfg.model.out_dim, hidden_dim=cfg.model.head_hidden_dim,
                    bottleneck_dim=cfg.model.head_bottleneck_dim, norm_last_layer=cfg.model.norm_last_layer)
    return SSLNetwork(backbone, head)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Trainer:
    """Builds everything a pretraining run needs from a :class:`Config` and runs or restores it."""

    def __init__(self, cfg: Config, *, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.out_dir = Path(cfg.out_dir)
        self.amp_dtype = autocast_dtype(cfg.optim.precision, device)

        seed_everything(cfg.seed)
        self.train_base, self.test_base = self._build_datasets()
        self._check_batch_size()

        self.student = build_network(cfg, drop_path_rate=cfg.model.drop_path_rate).to(device)
        self.teacher = build_network(cfg, drop_path_rate=0.0).to(device)
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

        self.pretrain_data = PretrainDataset(
            self.train_base,
            TwoCropTransform(cfg.aug, image_size=cfg.data.image_size, mean=cfg.data.mean, std=cfg.data.std),
            seed=cfg.seed)
        self.sampler = DistributedSampler(self.pretrain_data, num_replicas=dist.world_size(), rank=dist.rank(),
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.local_batch = cfg.optim.batch_size // dist.world_size()
        self.loader = DataLoader(self.pretrain_data, batch_size=self.local_batch, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", drop_last=True,
                                 persistent_workers=False)
        self.iters_per_epoch = len(self.loader)
        self.eval_sets = {split: EvalDataset(base, eval_transform(cfg.data))
                          for split, base in (("train", self.train_base), ("test", self.test_base))}

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.student))
        ipe = self.iters_per_epoch
        self.lr_schedule = cosine_schedule(scaled_lr(o.lr, o.batch_size), o.min_lr, epochs=o.epochs,
                                           iters_per_epoch=ipe, warmup_epochs=o.warmup_epochs)
        self.wd_schedule = cosine_schedule(o.weight_decay, o.weight_decay_end, epochs=o.epochs, iters_per_epoch=ipe)
        self.momentum_schedule = teacher_momentum_schedule(o.momentum_teacher, epochs=o.epochs, iters_per_epoch=ipe)
        self.teacher_temps = teacher_temp_schedule(o.warmup_teacher_temp, o.teacher_temp,
                                                   warmup_epochs=o.warmup_teacher_temp_epochs, epochs=o.epochs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.center = torch.zeros(1, cfg.model.out_dim, device=device)

        from sslgraph.methods import build_method  # the registry imports the method modules, which import this one

        self.method: Method = build_method(
            cfg, num_train=len(self.train_base), num_test=len(self.test_base), embed_dim=self.embed_dim,
            train_labels=self.train_base.targets, test_labels=self.test_base.targets, device=device)
        self.start_epoch = 0
        self._embed_cache: dict[tuple[str, str], torch.Tensor] = {}
        self.writer = None

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

    def _check_batch_size(self) -> None:
        batch, world, n = self.cfg.optim.batch_size, dist.world_size(), len(self.train_base)
        if batch % world:
            raise ConfigError(f"optim.batch_size: {batch} is not divisible by the {world} processes")
        if batch // world * world > n // world * world or batch > n:
            raise ConfigError(f"optim.batch_size: {batch} is larger than the training set ({n} images)")

    # ------------------------------------------------------------------ the context methods see
    def embed(self, stream: Stream, split: Split) -> torch.Tensor:
        """Clean, eval-mode, L2-normalised backbone features; cached until the networks change."""
        key = (stream, split)
        if key not in self._embed_cache:
            backbone = (self.teacher if stream == "teacher" else self.student).backbone
            was_training = backbone.training
            backbone.eval()

            def fn(x: torch.Tensor) -> torch.Tensor:
                with self._autocast():
                    return F.normalize(backbone(x).float(), dim=1)

            # Between epochs the training loader's workers are gone: on the CPU, inference takes every core.
            on_cpu = self.device.type == "cpu"
            threads = cpu_threads(cpu_threads_for(num_workers=0)) if on_cpu else nullcontext()
            try:
                with threads:
                    self._embed_cache[key] = extract_features(
                        fn, self.eval_sets[split], batch_size=self.cfg.monitor.eval_batch_size, device=self.device,
                        num_workers=0 if on_cpu else self.cfg.data.num_workers, desc=f"embed {stream}/{split}")
            finally:
                backbone.train(was_training)
        return self._embed_cache[key]

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def save_checkpoint(self, epoch: int) -> None:
        """State after ``epoch`` finished; ``epoch + 1`` is where a resumed run starts."""
        state = {
            "epoch": epoch + 1,
            "config": to_dict(self.cfg),
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "center": self.center,
            "method": self.method.state_dict(),
            "rng": rng_state(),
            "world_size": dist.world_size(),
        }
        if dist.is_main():
            atomic_save(state, self.checkpoint_path)
        dist.barrier()

    def load_checkpoint(self, path: Path | None = None) -> None:
        state = safe_load(path or self.checkpoint_path, map_location=self.device)
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.center = state["center"].to(self.device)
        self.method.load_state_dict(state["method"])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"])
        self._embed_cache.clear()

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False) -> Path:
        cfg = self.cfg
        self._prepare_run_dir(resume=resume)
        if resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
            self._log(f"resumed from {self.checkpoint_path} at epoch {self.start_epoch}")
            if dist.is_main():
                write_jsonl(self.out_dir / LOG_NAME,
                            [r for r in read_jsonl(self.out_dir / LOG_NAME) if r["epoch"] < self.start_epoch])
        else:
            if cfg.monitor.knn_at_init:
                self._write_record({"epoch": -1, "knn_top1": self.knn_monitor()})
            self.method.on_train_start(self)
        if dist.is_main():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"))

        for epoch in range(self.start_epoch, cfg.optim.epochs):
            record = self.train_one_epoch(epoch)
            record.update(self.method.on_epoch_end(self, epoch=epoch))
            every = cfg.monitor.knn_every
            if every and ((epoch + 1) % every == 0 or epoch + 1 == cfg.optim.epochs):
                record["knn_top1"] = self.knn_monitor()
            self.save_checkpoint(epoch)
            self._write_record(record)

        if self.cfg.method.name == "graph":
            paths = self.method.export_graphs(self, self.out_dir / "graphs")
            self._log("graphs written: " + ", ".join(str(p) for p in paths))
        if self.writer is not None:
            self.writer.close()
        return self.out_dir

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        o = self.cfg.optim
        self._embed_cache.clear()
        self.student.train()
        self.teacher.train()
        self.sampler.set_epoch(epoch)
        self.pretrain_data.set_epoch(epoch)
        self.pretrain_data.set_partners(self.method.partners_for_epoch(epoch))

        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        bar = progress(self.loader, desc=f"epoch {epoch + 1}/{o.epochs}", total=self.iters_per_epoch)
        for step, (crop1, crop2, indices, _) in enumerate(bar):
            loss = self.training_step(crop1, crop2, indices, epoch=epoch, step=step)
            loss_sum += loss.detach()
            seen += crop1.shape[0]
        elapsed = time.perf_counter() - start
        mean_loss = float(dist.all_reduce_mean(loss_sum / max(self.iters_per_epoch, 1)))
        last_it = min((epoch + 1) * self.iters_per_epoch, len(self.lr_schedule)) - 1
        return {
            "epoch": epoch,
            "loss": mean_loss,
            "lr": float(self.lr_schedule[last_it]),
            "weight_decay": float(self.wd_schedule[last_it]),
            "teacher_momentum": float(self.momentum_schedule[last_it]),
            "teacher_temp": float(self.teacher_temps[epoch]),
            "images_per_sec": seen * dist.world_size() / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
        }

    def training_step(self, crop1: torch.Tensor, crop2: torch.Tensor, indices: torch.Tensor, *, epoch: int,
                      step: int) -> torch.Tensor:
        """One iteration: schedules, teacher/student forward, DINO loss, update, EMA, centre, method hook."""
        o = self.cfg.optim
        it = epoch * self.iters_per_epoch + step
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr_schedule[it])
            group["weight_decay"] = float(self.wd_schedule[it]) if group["apply_wd"] else 0.0

        batch = crop1.shape[0]
        views = torch.cat([crop1, crop2]).to(self.device, non_blocking=True)
        with self._autocast():
            with torch.no_grad():
                teacher_feats, teacher_logits = self.teacher(views)
            student_feats, student_logits = self.student_forward(views)
            loss = dino_loss(student_logits.view(2, batch, -1), teacher_logits.view(2, batch, -1), self.center,
                             student_temp=o.student_temp, teacher_temp=float(self.teacher_temps[epoch]))

        if not bool(dist.all_reduce_sum(torch.isfinite(loss).logical_not().float()) == 0):
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, step {step}; stopping. The last good checkpoint "
                f"({self.checkpoint_path}) is intact: lower optim.lr, raise optim.clip_grad or use "
                f"optim.precision=fp32/bf16, then rerun with --resume.")

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if o.clip_grad:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.student, o.clip_grad)
        cancel_last_layer_gradients(self.student.head, epoch=epoch, freeze_epochs=o.freeze_last_layer)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        with torch.no_grad():
            self._update_teacher(float(self.momentum_schedule[it]))
            batch_mean = dist.all_reduce_mean(teacher_batch_mean(teacher_logits.float().view(2, batch, -1)))
            self.center = updated_center(self.center, batch_mean, momentum=o.center_momentum)
            self.method.after_step(indices=indices.to(self.device), teacher_feats=teacher_feats[:batch].float(),
                                   student_feats=student_feats[:batch].float())
        return loss

    @torch.no_grad()
    def _update_teacher(self, momentum: float) -> None:
        teacher_params = [p for p in self.teacher.parameters()]
        student_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)

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

    # ------------------------------------------------------------------ run directory and logs
    def _prepare_run_dir(self, *, resume: bool) -> None:
        if dist.is_main():
            if self.checkpoint_path.is_file() and not resume:
                raise ConfigError(f"out_dir: {self.out_dir} already holds a checkpoint; pass --resume to continue "
                                  f"it or choose another --out")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", to_yaml(self.cfg))
        dist.barrier()

    def _write_record(self, record: dict[str, Any]) -> None:
        if not dist.is_main():
            return
        append_jsonl(self.out_dir / LOG_NAME, record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"pretrain/{key}", value, record["epoch"])
            self.writer.flush()
        self._log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    @staticmethod
    def _log(message: str) -> None:
        if dist.is_main():
            print(f"[sslgraph] {message}", flush=True)


def pretrain(cfg: Config, *, resume: bool = False) -> Path:
    """Run (or resume) stage A as configured; under ``torchrun`` every process calls this."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # On the CPU the loader workers get cores of their own; the caller's thread count is restored afterwards.
    threads = cpu_threads(cpu_threads_for(num_workers=cfg.data.num_workers)) if device.type == "cpu" else nullcontext()
    dist.init_distributed(device)
    try:
        with threads:
            return Trainer(cfg, device=device).fit(resume=resume)
    finally:
        dist.destroy_distributed()


def export_graphs(run_dir: Path, *, device: torch.device, overrides: dict[str, Any] | None = None) -> list[Path]:
    """Write ``graphs/{teacher,student}.pt`` from a run's checkpoint (e.g. with other export options)."""
    state = safe_load(Path(run_dir) / CHECKPOINT_NAME)
    values = state["config"]
    values["out_dir"] = str(run_dir)
    for key, value in (overrides or {}).items():
        values["method"][key] = value
    cfg = config_from_dict(values)
    trainer = Trainer(cfg, device=device)
    trainer.load_checkpoint()
    return trainer.method.export_graphs(trainer, Path(run_dir) / "graphs")


def load_pretrained(run_dir: Path, *, device: torch.device) -> tuple[Config, nn.Module, nn.Module]:
    """The run's config and its teacher and student backbones (eval mode) from ``checkpoint.pt``."""
    state = safe_load(Path(run_dir) / CHECKPOINT_NAME, map_location=device)
    cfg = config_from_dict(state["config"])
    backbones = []
    for stream in ("teacher", "student"):
        network = build_network(cfg, drop_path_rate=0.0).to(device)
        network.load_state_dict(state[stream])
        backbones.append(network.backbone.eval())
    return cfg, backbones[0], backbones[1]
