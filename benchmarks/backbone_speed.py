"""Throughput of the small backbones on the CPU, to size the CPU preset.

For each configuration: parameter count, eval-mode forward images/s (no grad) and train-mode forward+backward
images/s. Prints a table and writes ``benchmarks/results/backbone_speed.json``.

    python benchmarks/backbone_speed.py [--threads 2] [--min-seconds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sslgraph.models.backbones import Backbone, build_backbone
from sslgraph.utils.io import atomic_write_text

IMAGE_SIZE = 32
# (label, registry name, patch size, cifar stem)
CONFIGS: list[tuple[str, str, int, bool]] = [
    ("vit_mini/4", "vit_mini", 4, False),
    ("vit_mini/8", "vit_mini", 8, False),
    ("vit_tiny/4", "vit_tiny", 4, False),
    ("resnet18-cifar", "resnet18", 16, True),
]


@dataclass
class Result:
    backbone: str
    params_m: float
    forward_batch: int
    forward_img_s: float
    train_batch: int
    train_img_s: float


def _images_per_second(step: Callable[[], None], *, batch: int, min_seconds: float) -> float:
    """One untimed warm-up step, then as many steps as fit in ``min_seconds`` (at least one)."""
    step()
    steps, start = 0, time.perf_counter()
    while steps < 1 or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def _measure(label: str, backbone: Backbone, *, forward_batch: int, train_batch: int, min_seconds: float) -> Result:
    params = sum(p.numel() for p in backbone.parameters())
    eval_images = torch.randn(forward_batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    train_images = torch.randn(train_batch, 3, IMAGE_SIZE, IMAGE_SIZE)

    def forward() -> None:
        with torch.no_grad():
            backbone(eval_images)

    def forward_backward() -> None:
        backbone.zero_grad(set_to_none=True)
        backbone(train_images).square().mean().backward()

    backbone.eval()
    forward_rate = _images_per_second(forward, batch=forward_batch, min_seconds=min_seconds)
    backbone.train()
    train_rate = _images_per_second(forward_backward, batch=train_batch, min_seconds=min_seconds)
    return Result(label, params / 1e6, forward_batch, forward_rate, train_batch, train_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--forward-batch", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "backbone_speed.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for label, name, patch_size, cifar_stem in CONFIGS:
        backbone = build_backbone(name, image_size=IMAGE_SIZE, patch_size=patch_size, cifar_stem=cifar_stem)
        results.append(_measure(label, backbone, forward_batch=args.forward_batch, train_batch=args.train_batch,
                                min_seconds=args.min_seconds))

    print(f"CPU, {args.threads} threads, {IMAGE_SIZE} px, torch {torch.__version__}")
    print(f"{'backbone':<16}{'params (M)':>11}{'fwd img/s':>12}{'fwd+bwd img/s':>15}")
    for r in results:
        print(f"{r.backbone:<16}{r.params_m:>11.2f}{r.forward_img_s:>12.0f}{r.train_img_s:>15.0f}")

    payload = {
        "device": "cpu",
        "threads": args.threads,
        "image_size": IMAGE_SIZE,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": [asdict(r) for r in results],
    }
    atomic_write_text(args.output, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
