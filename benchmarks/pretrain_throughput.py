"""Images/s of the pretraining step next to the bare forward+backward of the same backbone on the same batch.

The training step (``Trainer.training_step``) runs the teacher forward, the student forward and backward,
the DINO loss, gradient clipping, the optimiser, the EMA teacher update, the centre update and the graph
method's bank and graph updates. The bare step is the student backbone alone, forward and backward on the
same two views: the ceiling the loop can approach. Data loading is excluded from both (a fixed batch).
The last column is the share of the step spent in the graph method's bank search, bank update and graph
update (``method.after_step``) for the CPU preset's settings.

    SSLGRAPH_DATA=../shared/datasets python benchmarks/pretrain_throughput.py [--batch 64] [--steps 5]

Prints a table and writes benchmarks/results/pretrain_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sslgraph.config import load_config
from sslgraph.methods.base import Trainer

CASES = {
    "vit_mini/8 (cifar10-cpu preset)": ["model.backbone=vit_mini", "model.patch_size=8"],
    "vit_tiny/4": ["model.backbone=vit_tiny", "model.patch_size=4"],
    "resnet18 (cifar stem)": ["model.backbone=resnet18", "model.cifar_stem=true"],
}


def timed(fn, *, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(overrides: list[str], *, batch: int, steps: int, device: str) -> dict[str, float]:
    cfg = load_config(preset="cifar10-cpu", overrides=[
        *overrides, f"optim.batch_size={batch}", "data.train_subset=1000", "data.test_subset=100",
        "data.num_workers=0", f"device={device}", "out_dir=/tmp/sslgraph-bench"])
    trainer = Trainer(cfg, device=torch.device(device))
    crop1, crop2, indices, _ = next(iter(trainer.loader))
    trainer.student.train()
    step_seconds = timed(lambda: trainer.training_step(crop1, crop2, indices, epoch=1, step=0), steps=steps)

    backbone = trainer.student.backbone
    views = torch.cat([crop1, crop2]).to(device)

    def bare() -> None:
        backbone.zero_grad(set_to_none=True)
        backbone(views).sum().backward()

    bare_seconds = timed(bare, steps=steps)
    with torch.no_grad():
        feats = trainer.teacher.backbone(crop1.to(device)).float()
    graph_seconds = timed(lambda: trainer.method.after_step(indices=indices.to(device), teacher_feats=feats,
                                                            student_feats=feats), steps=steps)
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    return {"backbone_params_m": round(params, 2), "step_images_per_s": batch / step_seconds,
            "bare_fwd_bwd_images_per_s": batch / bare_seconds, "step_over_bare": bare_seconds / step_seconds,
            "bank_graph_share_of_step": graph_seconds / step_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images per step (two views each)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_throughput.json"))
    args = parser.parse_args()

    rows = {name: measure(overrides, batch=args.batch, steps=args.steps, device=args.device)
            for name, overrides in CASES.items()}
    header = (f"{'backbone':34s} {'params(M)':>9s} {'step img/s':>11s} {'bare fwd+bwd img/s':>19s} "
              f"{'step/bare':>9s} {'bank+graph':>10s}")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:34s} {row['backbone_params_m']:9.2f} {row['step_images_per_s']:11.1f} "
              f"{row['bare_fwd_bwd_images_per_s']:19.1f} {row['step_over_bare']:9.2f} "
              f"{100 * row['bank_graph_share_of_step']:9.2f}%")
    result = {"device": args.device, "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
