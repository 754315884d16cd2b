"""Throughput of the CPU preset's candidate backbones at 32 px, as the training loop runs them.

For each configuration: parameter count, eval-mode forward images/s (no gradient) and train-mode
forward+backward images/s, in the loop's precision (``optim.precision=auto``: bf16 autocast where the CPU has
native bf16), channels-last for ResNets and with denormals flushed, as in :class:`~sslgraph.training.Trainer`.
``resnet18 (torchvision convs)`` is the same network with every convolution left to ``nn.Conv2d``: the row
beside it shows what :mod:`sslgraph.models.small_maps` buys on ``layer3``'s 2x2 and ``layer4``'s 1x1 maps.
The ``width`` rows are ResNet-18 at fewer channels (``model.width``; the CPU preset's ``model.cpu_width`` and
``model.cpu_float32_width``).
Rows run interleaved, ``--rounds`` times, and the best round is kept, because this machine's pace drifts.
Prints a table and writes ``benchmarks/results/backbone_speed.json``.

    python benchmarks/backbone_speed.py [--rounds 3] [--min-seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the timings match its runs

import torch  # noqa: E402

from sslgraph.models.backbones import Backbone, ResNetBackbone, build_backbone  # noqa: E402
from sslgraph.models.small_maps import use_plain_convs  # noqa: E402
from sslgraph.utils.io import atomic_write_text  # noqa: E402
from sslgraph.utils.misc import autocast_dtype, flush_denormals  # noqa: E402

IMAGE_SIZE = 32
# (label, registry name, patch size, cifar stem, torchvision's own convolutions, model.width)
CONFIGS: list[tuple[str, str, int, bool, bool, int | None]] = [
    ("resnet18", "resnet18", 16, False, False, None),
    ("resnet18 (torchvision convs)", "resnet18", 16, False, True, None),
    ("resnet18, CIFAR stem", "resnet18", 16, True, False, None),
    ("resnet18, width 48", "resnet18", 16, False, False, 48),
    ("resnet18, width 32", "resnet18", 16, False, False, 32),
    ("resnet_mini (width 16)", "resnet_mini", 16, False, False, None),
    ("vit_mini/8", "vit_mini", 8, False, False, None),
]


def _images_per_second(step: Callable[[], None], *, batch: int, min_seconds: float) -> float:
    """One untimed warm-up step, then as many steps as fit in ``min_seconds`` (at least one)."""
    step()
    steps, start = 0, time.perf_counter()
    while steps < 1 or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def _measure(backbone: Backbone, *, forward_batch: int, train_batch: int, min_seconds: float,
             dtype: torch.dtype | None) -> tuple[float, float]:
    memory_format = torch.channels_last if isinstance(backbone, ResNetBackbone) else torch.contiguous_format
    backbone.to(memory_format=memory_format)
    eval_images = torch.randn(forward_batch, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous(memory_format=memory_format)
    train_images = torch.randn(train_batch, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous(memory_format=memory_format)

    def autocast() -> contextlib.AbstractContextManager[None]:
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def forward() -> None:
        with torch.no_grad(), autocast():
            backbone(eval_images)

    def forward_backward() -> None:
        backbone.zero_grad(set_to_none=True)
        with autocast():
            out = backbone(train_images)
        out.float().square().mean().backward()

    backbone.eval()
    forward_rate = _images_per_second(forward, batch=forward_batch, min_seconds=min_seconds)
    backbone.train()
    train_rate = _images_per_second(forward_backward, batch=train_batch, min_seconds=min_seconds)
    return forward_rate, train_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="as optim.precision (auto: bf16 where the CPU has it natively)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept per row")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--forward-batch", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=512, help="both views of the preset's batch of 256")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "backbone_speed.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = autocast_dtype(args.precision, torch.device("cpu"))
    backbones = {}
    for label, name, patch_size, cifar_stem, plain, width in CONFIGS:
        backbone = build_backbone(name, image_size=IMAGE_SIZE, patch_size=patch_size, cifar_stem=cifar_stem,
                                  width=width)
        backbones[label] = use_plain_convs(backbone) if plain else backbone
    rates: dict[str, list[tuple[float, float]]] = {label: [] for label in backbones}
    with flush_denormals(True):
        for _ in range(args.rounds):
            for label, backbone in backbones.items():
                rates[label].append(_measure(backbone, forward_batch=args.forward_batch,
                                             train_batch=args.train_batch, min_seconds=args.min_seconds,
                                             dtype=dtype))
    results = [{"backbone": label,
                "params_m": sum(p.numel() for p in backbones[label].parameters()) / 1e6,
                "forward_img_s": max(f for f, _ in rates[label]),
                "train_img_s": max(t for _, t in rates[label]),
                "rounds": [{"forward_img_s": f, "train_img_s": t} for f, t in rates[label]]}
               for label in backbones]

    precision = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    print(f"CPU, {args.threads} threads, {IMAGE_SIZE} px, {precision}, torch {torch.__version__}, "
          f"best of {args.rounds} rounds")
    print("| backbone | params (M) | forward img/s | forward+backward img/s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['backbone']} | {r['params_m']:.2f} | {r['forward_img_s']:.0f} | {r['train_img_s']:.0f} |")

    payload = {
        "device": "cpu",
        "threads": args.threads,
        "image_size": IMAGE_SIZE,
        "precision": precision,
        "forward_batch": args.forward_batch,
        "train_batch": args.train_batch,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    atomic_write_text(args.output, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
