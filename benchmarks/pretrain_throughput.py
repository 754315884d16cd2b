"""Images/s of the real pretraining loop (data included) next to the bare forward+backward it runs on.

- loop: what ``Trainer.train_one_epoch`` does per step — gather the uint8 batch, make both views on the
  device (:class:`~sslgraph.data.batch_aug.BatchAugment`), teacher forward where needed, student forward,
  the objective's loss, backward, optimiser, EMA, and the method's hooks — timed over real batches.
- bare: the student's backbone + head forward, the same loss and backward, on one fixed batch of views: the
  ceiling the loop can approach. ``loop/bare`` is the share of that ceiling the loop reaches.
- graph overhead: the ``graph`` method's loop (teacher crop-1 features for its bank, bank searches and
  updates over all N training images, FIFO graph updates) against the ``dino`` method's loop, same objective.

    SSLGRAPH_DATA=../shared/datasets python benchmarks/pretrain_throughput.py [--steps 10] [--device cuda]

Prints a table and writes benchmarks/results/pretrain_throughput.json. On a GPU the same script measures the
GPU path; MFU there is the achieved FLOP/s over the device's bf16 peak (``--peak-tflops``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sslgraph.config import load_config
from sslgraph.training.trainer import Trainer


def timed(fn, *, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def loop_seconds(trainer: Trainer, *, steps: int) -> float:
    """Seconds per step of the loop body over consecutive real batches of epoch 1."""
    trainer.student.train()
    trainer.teacher.train()
    trainer.sampler.set_epoch(1)
    batches = iter(trainer.batches)
    counter = iter(range(10**9))

    def step() -> None:
        views, indices = trainer._views(next(batches), epoch=1)
        trainer.training_step(views, indices, epoch=1, step=next(counter))

    return timed(step, steps=steps)


def bare_seconds(trainer: Trainer, *, steps: int) -> float:
    """Student forward, the objective's loss and backward on one fixed batch of views."""
    views, indices = trainer._views(next(iter(trainer.batches)), epoch=1)
    inputs = torch.cat(views)
    if trainer.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    batch = indices.shape[0]
    with torch.no_grad():
        teacher_out = trainer.teacher(inputs)[1].view(2, batch, -1) if trainer.objective.needs_teacher else None

    def step() -> None:
        trainer.student.zero_grad(set_to_none=True)
        with trainer._autocast():
            out = trainer.student(inputs)[1].view(2, batch, -1)
            loss = trainer.objective.loss(out, teacher_out, epoch=1)
        loss.backward()

    return timed(step, steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak, for MFU (GPU)")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_throughput.json"))
    args = parser.parse_args()

    rows = {}
    for method in ("dino", "graph"):
        cfg = load_config(preset=args.preset, overrides=[*args.overrides, f"method.name={method}",
                                                          f"device={args.device}", "out_dir=/tmp/sslgraph-bench"])
        trainer = Trainer(cfg, device=torch.device(args.device))
        batch = cfg.optim.batch_size
        loop = loop_seconds(trainer, steps=args.steps)
        row = {"n_train": len(trainer.train_base), "batch": batch, "loop_images_per_s": batch / loop}
        if method == "dino":
            bare = bare_seconds(trainer, steps=args.steps)
            row.update(bare_images_per_s=batch / bare, loop_over_bare=bare / loop)
        rows[method] = row
        del trainer
    rows["graph"]["graph_overhead"] = rows["dino"]["loop_images_per_s"] / rows["graph"]["loop_images_per_s"] - 1

    print(f"{'method':8s} {'N':>7s} {'batch':>5s} {'loop img/s':>10s} {'bare img/s':>10s} {'loop/bare':>9s} "
          f"{'vs dino':>8s}")
    for name, row in rows.items():
        bare = f"{row['bare_images_per_s']:10.1f}" if "bare_images_per_s" in row else f"{'':10s}"
        ratio = f"{row['loop_over_bare']:9.2f}" if "loop_over_bare" in row else f"{'':9s}"
        extra = f"{100 * row['graph_overhead']:+7.1f}%" if "graph_overhead" in row else ""
        print(f"{name:8s} {row['n_train']:7d} {row['batch']:5d} {row['loop_images_per_s']:10.1f} {bare} {ratio} "
              f"{extra:>8s}")
    result = {"preset": args.preset, "overrides": args.overrides, "device": args.device,
              "threads": torch.get_num_threads(), "steps": args.steps, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
