"""Seconds per epoch and peak memory of graph-BYOL refinement (stage B) on synthetic kNN graphs.

Graphs follow the export layout: training nodes first, every node receives ``E*V = 15`` edges from random
training nodes (weights 1-3), two views with independent features and edges.

- Full batch, N = 60,000 (CIFAR-10 train + test): the default model (GCN 2 x 768, JK max) at input widths
  192 (ViT-tiny) and 384 (ViT-small), and the narrower model (hidden 256) of the CPU preset at widths 192 and
  512 (its ResNet-18). Runs ``refine_graphs`` itself; seconds per epoch come from its log, the first epoch excluded
  when more than one is run; "other" is set-up + final embedding.
- Mini-batch, N = 1,330,000 (ImageNet-1K scale), default model, 4,096 seed nodes, fan-out [10, 10]: only
  ``--batches`` batches are timed, and the epoch time is *extrapolated* to ceil(N / 4,096) batches.
- Parameter-free propagation (``refine.encoder=appnp``), N = 60,000 and 1,330,000, width 192: the whole
  refinement, timed end to end (no extrapolation): both streams' propagation matrices, the label-free choice
  of alpha and hops over the default candidates (k-means of each stream, every setting propagated), and the
  final propagation.

Every case runs in its own process. Peak memory: the resident high-water mark after resetting it once the
graphs exist (CPU, Linux), or ``torch.cuda.max_memory_allocated`` (GPU); "before" is the resident memory at
that point (libraries + graphs), and the graphs' own size is listed.

    python benchmarks/refine.py [--device auto|cpu|cuda] [--epochs 2] [--batches 2] [--quick]

Writes ``benchmarks/results/refine.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the timings match its runs

import torch  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from sslgraph.config import RefineConfig  # noqa: E402
from sslgraph.refine.train import (  # noqa: E402
    NeighbourSampler, build_model, graph_view, propagate_graphs, refine_graphs, train_step)
from sslgraph.utils.io import atomic_write_text, read_jsonl  # noqa: E402
from sslgraph.utils.misc import resolve_device  # noqa: E402

DEGREE = 15
RESULTS = Path(__file__).resolve().parent / "results" / "refine.json"
CASES = {
    "full-d192": {"mode": "full", "nodes": 60_000, "in_dim": 192, "hidden": 768},
    "full-d384": {"mode": "full", "nodes": 60_000, "in_dim": 384, "hidden": 768},
    "full-d192-h256": {"mode": "full", "nodes": 60_000, "in_dim": 192, "hidden": 256},
    "full-d512-h256": {"mode": "full", "nodes": 60_000, "in_dim": 512, "hidden": 256},
    "minibatch-1.33M": {"mode": "minibatch", "nodes": 1_330_000, "in_dim": 192, "hidden": 768},
    "propagate-60k": {"mode": "propagate", "nodes": 60_000, "in_dim": 192, "hidden": 0},
    "propagate-1.33M": {"mode": "propagate", "nodes": 1_330_000, "in_dim": 192, "hidden": 0},
}


def synthetic_graph(num_nodes: int, in_dim: int, *, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    num_train = num_nodes * 5 // 6
    target = torch.arange(num_nodes).repeat_interleave(DEGREE)
    source = torch.randint(0, num_train, (num_nodes * DEGREE,), generator=gen)
    source = torch.where(source == target, (source + 1) % num_train, source)
    node = torch.arange(num_nodes)
    return Data(x=torch.randn(num_nodes, in_dim, generator=gen), edge_index=torch.stack([source, target]),
                edge_weight=torch.randint(1, 4, (num_nodes * DEGREE,), generator=gen).float(),
                y=node % 10, train_mask=node < num_train, test_mask=node >= num_train, num_train=num_train)


def graph_mib(data: Data) -> float:
    tensors = (data.x, data.edge_index, data.edge_weight, data.y, data.train_mask, data.test_mask)
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("cannot reset the resident peak; it includes graph creation", file=sys.stderr)


def resident_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def graph_pair(case: dict, device: torch.device) -> tuple[Data, Data, float]:
    """The case's two synthetic views, then the memory peak reset: ``(teacher, student, resident MiB now)``."""
    teacher = synthetic_graph(case["nodes"], case["in_dim"], seed=0)
    student = synthetic_graph(case["nodes"], case["in_dim"], seed=1)
    reset_peak(device)
    return teacher, student, resident_mib(device)


def run_full(case: dict, device: torch.device, epochs: int) -> dict:
    teacher, student, before = graph_pair(case, device)
    hidden = case["hidden"]
    cfg = RefineConfig(batching="full", epochs=epochs, hidden_dim=hidden, projector_dim=hidden, predictor_dim=hidden)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        started = time.perf_counter()
        refine_graphs(teacher, student, cfg, device=device, progress=False, log_path=log)
        total = time.perf_counter() - started
        seconds = [r["seconds"] for r in read_jsonl(log)]
    timed = seconds[1:] if len(seconds) > 1 else seconds
    epoch_s = sum(timed) / len(timed)
    return {"epoch_s": epoch_s, "first_epoch_s": seconds[0], "other_s": total - sum(seconds),
            "epochs_run": len(seconds), "extrapolated": False, "peak_mib": peak_mib(device), "before_mib": before,
            "graphs_mib": 2 * graph_mib(teacher), "est_100_epochs_min": (100 * epoch_s + total - sum(seconds)) / 60}


def run_minibatch(case: dict, device: torch.device, batches: int) -> dict:
    teacher, student, before = graph_pair(case, device)
    cfg = RefineConfig(batching="minibatch")
    started = time.perf_counter()
    samplers = [NeighbourSampler(graph_view(g), cfg.num_neighbors) for g in (teacher, student)]
    setup_s = time.perf_counter() - started
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(case["in_dim"], cfg).to(device).train()
    optimizer = torch.optim.Adam(model.online_parameters(), lr=cfg.lr)
    order = torch.randperm(case["nodes"], generator=generator)
    sample_s, step_s, sizes = [], [], []
    for seeds in order.split(cfg.batch_size)[:batches]:
        t0 = time.perf_counter()
        views = [sampler.sample(seeds, generator)[1].to(device) for sampler in samplers]
        t1 = time.perf_counter()
        train_step(model, optimizer, views[0], views[1], ema=cfg.ema, feature_mask=0.0, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sample_s.append(t1 - t0)
        step_s.append(time.perf_counter() - t1)
        sizes.append(views[0].num_nodes)
    per_batch = (sum(sample_s) + sum(step_s)) / len(step_s)
    num_batches = math.ceil(case["nodes"] / cfg.batch_size)
    return {"epoch_s": per_batch * num_batches, "batch_s": per_batch, "sample_s": sum(sample_s) / len(sample_s),
            "batches_timed": len(step_s), "batches_per_epoch": num_batches, "subgraph_nodes": sum(sizes) / len(sizes),
            "setup_s": setup_s, "extrapolated": True, "peak_mib": peak_mib(device), "before_mib": before,
            "graphs_mib": 2 * graph_mib(teacher)}


def run_propagate(case: dict, device: torch.device) -> dict:
    """The parameter-free refinement end to end, with the label-free choice of alpha and hops."""
    teacher, student, before = graph_pair(case, device)
    cfg = RefineConfig(encoder="appnp")
    started = time.perf_counter()
    result = propagate_graphs(teacher, student, cfg)
    total = time.perf_counter() - started
    settings = len(result.selection["scores"]) if result.selection else 1
    return {"epoch_s": total, "settings_tried": settings, "alpha": result.alpha, "hops": result.hops,
            "extrapolated": False, "propagate": True, "peak_mib": peak_mib(device), "before_mib": before,
            "graphs_mib": 2 * graph_mib(teacher)}


def run_one(name: str, args: argparse.Namespace) -> dict:
    case = dict(CASES[name])
    if args.quick:
        case["nodes"] //= 10
    device = resolve_device(args.device)
    if case["mode"] == "full":
        result = run_full(case, device, args.epochs)
    elif case["mode"] == "propagate":
        result = run_propagate(case, device)
    else:
        result = run_minibatch(case, device, args.batches)
    return {"case": name, **case, "device": str(device), "threads": torch.get_num_threads(), **result}


def table(rows: list[dict]) -> str:
    lines = ["| case | N | in | hidden | s/epoch (appnp: whole run) | peak MiB (before) | graphs MiB | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("propagate"):
            notes = (f"whole refinement, no training: label-free choice among {r['settings_tried']} settings "
                     f"(chose alpha={r['alpha']:g}, hops={r['hops']}) + final propagation")
        elif r["extrapolated"]:
            notes = (f"extrapolated from {r['batches_timed']} of {r['batches_per_epoch']} batches "
                     f"({r['batch_s']:.2f} s/batch, sampling {r['sample_s']:.2f} s, "
                     f"~{r['subgraph_nodes'] / 1e3:.0f}k nodes/subgraph)")
        else:
            notes = (f"{r['epochs_run']} epochs, first {r['first_epoch_s']:.1f} s, other {r['other_s']:.1f} s; "
                     f"100 epochs ~ {r['est_100_epochs_min']:.1f} min")
        lines.append(f"| {r['case']} | {r['nodes']:,} | {r['in_dim']} | {r['hidden']} | {r['epoch_s']:.2f} | "
                     f"{r['peak_mib']:.0f} ({r['before_mib']:.0f}) | {r['graphs_mib']:.0f} | {notes} |")
    return "\n".join(lines)


def load_average() -> float | None:
    """The 1-minute load average (how busy the machine was), where the OS reports one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=2, help="full-batch epochs per case")
    parser.add_argument("--batches", type=int, default=2, help="mini-batches timed for the extrapolation")
    parser.add_argument("--quick", action="store_true", help="10x fewer nodes (a smoke test of this script)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--one", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)), flush=True)
        return

    rows = []
    for name in args.cases:
        command = [sys.executable, __file__, "--one", name, "--device", args.device, "--epochs", str(args.epochs),
                   "--batches", str(args.batches)] + (["--quick"] if args.quick else [])
        print(f"running {name} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"case {name} failed with exit code {done.returncode}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        row["load_average_1min"] = load_average()
        rows.append(row)
    print(table(rows))
    report = {"rows": rows, "load_average_1min": load_average(), "cpu_count": os.cpu_count(), "quick": args.quick,
              "torch": torch.__version__}
    if not args.quick:
        # a run of some cases keeps the other cases' rows of an earlier run (each row says when it was measured)
        earlier = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
        fresh = {row["case"] for row in rows}
        report["rows"] = [row for row in earlier if row["case"] not in fresh] + rows
        atomic_write_text(RESULTS, json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
