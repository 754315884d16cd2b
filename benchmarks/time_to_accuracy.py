"""Time to accuracy: sslgraph's CPU preset against lightly's SimCLR on the same data, machine and clock.

Each side trains for ``--minutes`` of wall-clock training time, one after the other, and is evaluated with
*our* kNN protocol (k = 20, T = 0.07, cosine; all clean training images vote for every test image) every
``--eval-every`` seconds of training; evaluation time is not on the clock.

- ours: ``sslgraph pretrain --preset cifar10-cpu`` with ``optim.budget_minutes=--minutes`` (the preset's
  method, objective, backbone and schedule), its teacher evaluated; the clock is the sum of the training
  steps' time of each epoch, read from the run's log (one evaluation per epoch).
- lightly: its own blocks as in its CIFAR-10 example — torchvision ResNet-18 (ImageNet stem, 32 px input),
  ``SimCLRProjectionHead``, ``NTXentLoss``, ``SimCLRTransform(input_size=32, gaussian_blur=0.0)`` run by PIL in
  one ``DataLoader`` worker, batch 256, SGD (lr 0.06, momentum 0.9, weight decay 5e-4).

Prints a table, writes ``benchmarks/results/time_to_accuracy.json`` and ``docs/img/time_to_accuracy.png``.

    python benchmarks/time_to_accuracy.py --data-root ../shared/datasets --minutes 15

lightly is not a dependency of sslgraph; ``make bench-peer`` installs it into the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the timings match its runs

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
FIGURE = ROOT / "docs" / "img" / "time_to_accuracy.png"
# --sides name -> the curve's name in the table, the JSON and the plot
CURVES = {"ours": "sslgraph cifar10-cpu", "lightly": "lightly SimCLR"}


def knn_top1(backbone: torch.nn.Module, train, test, *, mean, std) -> float:
    """Our protocol: clean, eval-mode, L2-normalised backbone features; weighted kNN k=20, T=0.07."""
    from sslgraph.eval.knn import knn_accuracy

    def embed(images: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 1000):
                x = (images[i:i + 1000].float() / 255 - m) / s
                out.append(F.normalize(backbone(x).flatten(1), dim=1))
        return torch.cat(out)

    was = backbone.training
    backbone.eval()
    accuracy = knn_accuracy(embed(train.images), train.targets, embed(test.images), test.targets, ks=[20],
                            temperature=0.07)[20]
    backbone.train(was)
    return float(accuracy)


PRESET = "cifar10-cpu"


def ours_overrides(*, minutes: float, seed: int) -> list[str]:
    """Our side's config overrides: ``minutes`` of steps only, as lightly's clock (the preset's stage budget
    would also charge the kNN monitors, and its whole-pipeline limit, which needs a stage budget, has no
    pipeline to bound here), and a kNN evaluation at initialisation and after every epoch."""
    return [f"optim.budget_minutes={minutes}", "optim.budget_scope=steps", "pipeline.time_limit_minutes=null",
            "monitor.knn_every=1", "monitor.knn_at_init=true", f"seed={seed}"]


def run_ours(args: argparse.Namespace) -> list[dict[str, float]]:
    """sslgraph's preset through its own command line; one kNN record per epoch in log.jsonl (or the log of
    such a run already made, ``--ours-log``)."""
    if args.ours_log:
        return curve_from_log([json.loads(line) for line in Path(args.ours_log).read_text().splitlines()
                               if line.strip()])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "sslgraph", "pretrain", "--preset", PRESET, "--data-root", args.data_root,
               "--out", str(out), *ours_overrides(minutes=args.minutes, seed=args.seed)]
        subprocess.run(cmd, check=True)
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
        shutil.copy(out / "log.jsonl", RESULTS.with_name("time_to_accuracy_ours_log.jsonl"))
    return curve_from_log(records)


def curve_from_log(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """(training seconds, kNN top-1, image pairs trained on) points: the clock is the sum of the epochs' step
    time."""
    points, clock, pairs = [], 0.0, 0.0
    for record in records:
        seconds = record.get("epoch_seconds", 0.0)
        clock += seconds
        pairs += record.get("images_per_sec", 0.0) * seconds
        if "knn_top1" in record:
            points.append({"seconds": clock, "knn_top1": record["knn_top1"], "pairs": round(pairs)})
    return points


def run_lightly(args: argparse.Namespace, train, test) -> list[dict[str, float]]:
    """lightly's SimCLR on the same images (PIL transforms in one worker), evaluated every ``eval_every`` s."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class Views(Dataset):
        def __init__(self) -> None:
            self.transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)

        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, i: int):
            image = Image.fromarray(train.images[i].permute(1, 2, 0).numpy())
            return self.transform(image)

    torch.manual_seed(args.seed)
    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1], nn.Flatten())
    model = nn.Sequential(backbone, SimCLRProjectionHead(512, 512, 128))
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(Views(), batch_size=256, shuffle=True, drop_last=True, num_workers=1,
                        persistent_workers=True)
    torch.set_num_threads(args.threads)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # what SimCLRTransform normalises with
    points = [{"seconds": 0.0, "knn_top1": knn_top1(backbone, train, test, mean=mean, std=std), "pairs": 0}]
    clock, next_eval, budget, pairs = 0.0, args.eval_every, args.minutes * 60, 0
    while clock < budget:
        start = time.perf_counter()
        for x0, x1 in loader:  # SimCLRTransform gives two views per image; the loader stacks each
            loss = criterion(model(x0), model(x1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock += time.perf_counter() - start
            pairs += x0.shape[0]
            if clock >= min(next_eval, budget):
                points.append({"seconds": clock, "knn_top1": knn_top1(backbone, train, test, mean=mean, std=std),
                               "pairs": pairs})
                print(f"lightly {clock:7.1f} s  kNN {points[-1]['knn_top1']:.2f}  {pairs / clock:.0f} pairs/s",
                      flush=True)
                next_eval += args.eval_every
                if clock >= budget:
                    break
            start = time.perf_counter()
    return points


def at(points: list[dict[str, float]], seconds: float) -> float:
    """The last accuracy measured at or before ``seconds`` (the curve as a step function)."""
    before = [p["knn_top1"] for p in points if p["seconds"] <= seconds + 1e-6]
    return before[-1] if before else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_root = os.environ.get("SSLGRAPH_DATA")
    parser.add_argument("--data-root", default=data_root, required=data_root is None,
                        help="folder holding cifar10/ (or the CIFAR-10 root); default: $SSLGRAPH_DATA")
    parser.add_argument("--minutes", type=float, default=15.0, help="training clock of each side")
    parser.add_argument("--eval-every", type=float, default=180.0, help="lightly: seconds of training per kNN")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="ours,lightly")
    parser.add_argument("--keep-other-sides", action="store_true",
                        help="keep the curves of the sides not run this time from the existing results file "
                             "(e.g. re-measure ours after a change that cannot affect lightly's side)")
    parser.add_argument("--ours-log", default=None, help="our side from this log.jsonl of a finished run (pretrain "
                        "with monitor.knn_every=1 monitor.knn_at_init=true) instead of training it again")
    args = parser.parse_args()

    from sslgraph.config import DataConfig
    from sslgraph.data.datasets import build_dataset

    data = DataConfig(root=args.data_root)
    train, test = build_dataset(data, "train"), build_dataset(data, "test")
    curves: dict[str, list[dict[str, float]]] = {}
    sides = args.sides.split(",")
    kept: dict[str, str] = {}
    if args.keep_other_sides and RESULTS.exists():
        previous = json.loads(RESULTS.read_text())
        for side, name in CURVES.items():
            if side not in sides and name in previous["curves"]:
                curves[name] = previous["curves"][name]
                kept[name] = previous.get("measured", {}).get(name, "an earlier run of this script")
    today = time.strftime("%Y-%m-%d")
    measured = dict(kept)
    if "ours" in sides:
        curves[CURVES["ours"]] = run_ours(args)
        measured[CURVES["ours"]] = today
    if "lightly" in sides:
        curves[CURVES["lightly"]] = run_lightly(args, train, test)
        measured[CURVES["lightly"]] = today
    for name, when in kept.items():
        print(f"{name}: kept from {when}")

    grid = sorted({round(p["seconds"]) for points in curves.values() for p in points})
    print(f"\n{'seconds':>8} " + " ".join(f"{name:>22}" for name in curves))
    for s in grid:
        print(f"{s:8d} " + " ".join(f"{at(points, s):22.2f}" for points in curves.values()))
    for name, points in curves.items():
        last = points[-1]
        if last["seconds"] > 0 and "pairs" in last:
            print(f"{name}: {last['pairs']:,} image pairs in {last['seconds']:.0f} s of steps, "
                  f"{last['pairs'] / last['seconds']:.0f} pairs/s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"minutes": args.minutes, "protocol": "kNN k=20 T=0.07, 50,000 train / 10,000 test",
                                   "machine_threads": args.threads, "measured": measured, "curves": curves},
                                  indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, points in curves.items():
        ax.plot([p["seconds"] / 60 for p in points], [p["knn_top1"] for p in points], marker="o", label=name)
    ax.set_xlabel("training wall-clock (minutes, 2 CPU cores)")
    ax.set_ylabel("kNN top-1 (%), k=20, CIFAR-10 test")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    print(f"wrote {RESULTS} and {FIGURE}")


if __name__ == "__main__":
    main()
