"""Time and memory of one bank + graph update step, as the ``graph`` method runs it per stream and batch.

One step = search a batch of 256 L2-normalised features against the bank (exact chunked matrix product or
faiss), overwrite the batch rows, then add the batch's ``E`` nearest non-self neighbours to the kNN graph.
Banks hold random features. N = 50,000 uses the CIFAR-10 settings (topk 10, V 3, E 5); N = 1,281,167 the
ImageNet-1K ones (topk 3, V 10, E 1). Every configuration runs in its own process; after set-up the peak
is reset (Linux ``/proc/self/clear_refs``, or the CUDA allocator's statistics) and the step's extra peak
memory is ``ru_maxrss`` (CPU) or ``torch.cuda.max_memory_allocated`` (GPU) minus the resident memory
before the step. The table also lists the analytic tensor bytes of the bank and the graph.

    python benchmarks/graph_update.py [--quick] [--device auto|cpu|cuda]

Writes ``benchmarks/results/graph_update.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the timings match its runs

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sslgraph.graph.bank import MemoryBank  # noqa: E402
from sslgraph.graph.knn_graph import KNNGraph, nearest_non_self  # noqa: E402
from sslgraph.utils.io import atomic_write_text  # noqa: E402
from sslgraph.utils.misc import resolve_device  # noqa: E402

BATCH = 256
SETTINGS = {50_000: {"topk": 10, "visits": 3, "edges": 5}, 1_281_167: {"topk": 3, "visits": 10, "edges": 1}}
IMAGENET_TEST = 50_000
RESULTS = Path(__file__).resolve().parent / "results" / "graph_update.json"


def reset_peak(device: torch.device) -> None:
    """Start a fresh peak measurement: CUDA allocator statistics, or Linux's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # also resets ru_maxrss
    except OSError:
        print("cannot reset the resident peak: step peaks include set-up", file=sys.stderr)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resident_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(num: int, dim: int, backend: str, repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    s = SETTINGS[num]
    gen = torch.Generator(device=device).manual_seed(0)
    bank = MemoryBank(num, dim, topk=s["topk"], vote_window=s["visits"], backend=backend, device=device)
    graph = KNNGraph(num, edges_per_node=s["edges"], visits=s["visits"], device=device)
    for start in range(0, num, 65_536):
        rows = torch.randn(min(65_536, num - start), dim, generator=gen, device=device)
        bank.features[start:start + rows.shape[0]] = F.normalize(rows, dim=1)
    bank.filled.fill_(True)
    sync(device)
    reset_peak(device)
    resident = resident_bytes(device)

    search_times, update_times = [], []
    for step in range(warmup + repeats):
        indices = torch.randperm(num, generator=gen, device=device)[:BATCH]
        feats = F.normalize(torch.randn(BATCH, dim, generator=gen, device=device), dim=1)
        sync(device)
        t0 = time.perf_counter()
        sim, idx = bank.search(feats)
        sync(device)
        t1 = time.perf_counter()
        sim, idx = sim.to(device), idx.to(device)
        bank.update(indices, feats, sim, idx)
        graph.add(indices, *nearest_non_self(idx, sim, indices, s["edges"]))
        sync(device)
        t2 = time.perf_counter()
        if step >= warmup:  # warm-up steps settle allocators and kernels
            search_times.append(t1 - t0)
            update_times.append(t2 - t1)
    search = sum(search_times) / repeats
    update = sum(update_times) / repeats
    return {"N": num, "d": dim, "backend": backend, "device": str(device), "repeats": repeats, "warmup": warmup, **s,
            "search_ms": 1e3 * search, "update_add_ms": 1e3 * update, "step_ms": 1e3 * (search + update),
            "bank_bytes": bank.nbytes, "graph_bytes": graph.nbytes,
            "step_peak_extra_bytes": max(peak_bytes(device) - resident, 0)}


def imagenet1k_memory(dim: int = 768, topk: int = 3, visits: int = 10, edges: int = 1) -> dict[str, int]:
    """Analytic bytes of everything the ``graph`` method keeps for ImageNet-1K (both streams)."""
    num = 1_281_167
    teacher_bank = num * MemoryBank.bytes_per_sample(dim=dim, topk=topk, vote_window=visits)
    # The student bank's lists feed only the student graph: E + 1 entries (GraphMethod).
    student_bank = num * MemoryBank.bytes_per_sample(dim=dim, topk=edges + 1, vote_window=0)
    train_graphs = 2 * num * KNNGraph.bytes_per_node(edges_per_node=edges, visits=visits)
    test_graphs = 2 * IMAGENET_TEST * KNNGraph.bytes_per_node(edges_per_node=edges, visits=visits)
    test_features = 2 * IMAGENET_TEST * dim * 4
    parts = {"teacher_bank": teacher_bank, "student_bank": student_bank, "train_graphs": train_graphs,
             "test_graphs": test_graphs, "test_features": test_features}
    return {**parts, "total": sum(parts.values())}


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="N = 50,000 only")
    parser.add_argument("--one", nargs=5, metavar=("N", "D", "BACKEND", "REPEATS", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.one:
        num, dim, backend, repeats, warmup = args.one
        print(json.dumps(run_one(int(num), int(dim), backend, int(repeats), int(warmup), device)))
        return

    backends = ["exact"]
    try:
        import faiss  # noqa: F401

        backends.append("faiss")
    except ImportError:
        print("faiss not installed: exact backend only", file=sys.stderr)
    sizes = [50_000] if args.quick else [50_000, 1_281_167]
    rows = []
    for num in sizes:
        for dim in (384, 768):
            for backend in backends:
                # At 1.28M a search takes seconds on a CPU: one timed step, no warm-up, keeps the run short.
                repeats, warmup = (5, 1) if num <= 50_000 else (1, 0)
                cmd = [sys.executable, __file__, "--device", args.device, "--one", str(num), str(dim), backend,
                       str(repeats), str(warmup)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"N={r['N']:>9,} d={r['d']:>3} {r['backend']:>5}: search {r['search_ms']:8.1f} ms  "
                      f"update+add {r['update_add_ms']:6.1f} ms  step peak +{gib(r['step_peak_extra_bytes'])} GiB  "
                      f"bank {gib(r['bank_bytes'])} GiB  graph {gib(r['graph_bytes'])} GiB", flush=True)

    memory = imagenet1k_memory()
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "batch": BATCH, "rows": rows,
              "imagenet1k_memory_bytes": memory}
    atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")
    print("\n| N | d | backend | search ms | update+add ms | step ms | step peak extra GiB | bank GiB | graph GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['N']:,} | {r['d']} | {r['backend']} | {r['search_ms']:.1f} | {r['update_add_ms']:.1f} | "
              f"{r['step_ms']:.1f} | {gib(r['step_peak_extra_bytes'])} | {gib(r['bank_bytes'])} | "
              f"{gib(r['graph_bytes'])} |")
    print("\nImageNet-1K (N=1,281,167, topk 3, V 10, E 1, d 768), graph method, both streams: "
          + ", ".join(f"{k} {gib(v)} GiB" for k, v in memory.items()))
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
