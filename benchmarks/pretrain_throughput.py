"""Images/s and model FLOP utilisation of the real pretraining loop next to the bare forward+backward it runs on.

- loop: what ``Trainer.train_one_epoch`` does per step — gather the uint8 batch, make both views on the
  device (:class:`~sslgraph.data.batch_aug.BatchAugment`), teacher forward where needed, student forward,
  the objective's loss, backward, optimiser, EMA, and the method's hooks — timed over real batches.
- bare: the student's backbone + head forward, the same loss and backward, on one fixed batch of views: the
  ceiling the loop can approach. ``loop/bare`` is the share of that ceiling the loop reaches. ``--compile``
  also times the bare step through ``torch.compile`` (what ``optim.compile=true`` would buy).
- graph overhead: the ``graph`` method's loop (teacher crop-1 features for its bank, bank searches and
  updates over all N training images, FIFO graph updates) against the ``dino`` method's loop, same objective.
  Split in two: the bank and graph work itself (the method's ``after_step``, timed inside the loop) and the
  rest, mostly the teacher's crop-1 forward, which the ``dino`` objective runs anyway and ``simclr`` does not.
  The banks are filled first (random unit rows: the search costs the same), as after the first epoch; a bank
  searched in its principal directions (``method.bank_search_dim``) refits them ``method.bank_refits_per_pass``
  times per epoch, and those refits' time, spread over the epoch's steps, is added to the bank and graph work.
- MFU: FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
  convolutions, forward and backward) times steps per second, over the device's dense bf16 peak from
  :data:`PEAK_TFLOPS` (``--peak-tflops`` overrides). A CPU has no such table entry: there the ceiling is a
  measured matrix product in the loop's precision (bf16 where the CPU has it natively, else float32;
  ``peak_source`` says which), so the ratio reads "share of what this CPU's matrix products reach", not a
  hardware peak.

    SSLGRAPH_DATA=../shared/datasets python benchmarks/pretrain_throughput.py [--rounds 4] [--steps 4] [--device cuda]

Every run is the same step as training (the configured precision: ``optim.precision=auto`` is bf16 autocast on
CUDA and on CPUs with native bf16, float32 elsewhere).
Prints a table and writes benchmarks/results/pretrain_throughput.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the timings match its runs

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from sslgraph.config import load_config  # noqa: E402
from sslgraph.graph.bank import MemoryBank  # noqa: E402
from sslgraph.training.trainer import Trainer  # noqa: E402
from sslgraph.utils.misc import autocast_dtype, flush_denormals  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched by a substring of
# torch.cuda.get_device_name(); the first match wins, so the more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def device_peak(device: torch.device, *, override: float | None,
                dtype: torch.dtype = torch.float32) -> tuple[float | None, str]:
    """(peak FLOP/s, where it comes from) of ``device``; CPUs and unknown GPUs get a measured matmul ceiling."""
    if override is not None:
        return override * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"bf16 dense peak of {key} (data sheet)"
    name = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
    return matmul_ceiling(device, dtype=dtype), f"measured {name} matmul ceiling (the loop's precision)"


def matmul_ceiling(device: torch.device, *, dtype: torch.dtype = torch.float32, size: int = 2048,
                   steps: int = 5) -> float:
    """FLOP/s of a large matrix product in ``dtype`` on ``device``: what this machine's kernels reach at best."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = min(timed(lambda: a @ b, steps=steps, device=device) for _ in range(3))  # best of three: a busy
    return 2 * size**3 / seconds                                                          # machine only slows it


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], *, steps: int, device: torch.device, warmup: int = 2) -> float:
    """Seconds per call, with the device's queue drained before and after."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and convolutions, forward and backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def endless(trainer: Trainer, *, epoch: int) -> Iterator[Any]:
    """Real batches of ``epoch``, starting over when a (small) data set runs out."""
    trainer.sampler.set_epoch(epoch)
    while True:
        yield from trainer.batches


def loop_step(trainer: Trainer) -> Callable[[], None]:
    """One loop body over consecutive real batches of epoch 1."""
    trainer.student.train()
    trainer.teacher.train()
    batches = endless(trainer, epoch=1)
    counter = iter(range(10**9))

    def step() -> None:
        views, indices = trainer._views(next(batches), epoch=1)
        trainer.training_step(views, indices, epoch=1, step=next(counter) % trainer.iters_per_epoch)

    return step


def bare_step(trainer: Trainer, *, compiled: bool = False) -> Callable[[], None]:
    """Student forward, the objective's loss and backward on one fixed batch of views."""
    views, indices = trainer._views(next(endless(trainer, epoch=1)), epoch=1)
    memory_format = torch.channels_last if trainer.channels_last else torch.contiguous_format
    # the global views in one batch, the local crops (multi-crop) in another, as the loop does
    inputs = [torch.cat(group).contiguous(memory_format=memory_format) for group in (views[:2], views[2:]) if group]
    batch = indices.shape[0]
    with torch.no_grad(), trainer._autocast():
        teacher_out = trainer.teacher(inputs[0])[1].view(2, batch, -1) if trainer.objective.needs_teacher else None
    student = torch.compile(trainer.student) if compiled else trainer.student

    def step() -> None:
        trainer.student.zero_grad(set_to_none=True)
        with trainer._autocast():
            out = torch.cat([student(x)[1] for x in inputs]).view(len(views), batch, -1)
            loss = trainer.objective.loss(out, teacher_out, epoch=1)
        loss.backward()

    return step


def time_hook(trainer: Trainer) -> dict[str, float]:
    """Wrap the method's per-step hook (bank searches and updates, graph updates) to accumulate its time."""
    totals = {"seconds": 0.0, "calls": 0}
    method = trainer.method
    if not method.uses_step_features:
        return totals
    original = method.after_step

    def after_step(**kwargs: Any) -> None:
        sync(trainer.device)
        started = time.perf_counter()
        original(**kwargs)
        sync(trainer.device)
        totals["seconds"] += time.perf_counter() - started
        totals["calls"] += 1

    method.after_step = after_step  # type: ignore[method-assign]
    return totals


def fill_banks(trainer: Trainer) -> float:
    """Fill the method's banks with random unit rows (a full bank, as in every epoch after the first) and
    return the seconds per step of their projection refits: each bank searched at every step refits
    ``method.bank_refits_per_pass`` times per pass of ``num_samples`` rows; one that is only ranked among the
    teacher's candidates (``method.student_search=teacher``) refits only when searched, at epoch ends, and
    counts nothing here; banks searched at full width never refit. The refits are added as this average, so
    none may fall due inside the few timed steps and be counted twice."""
    per_step = 0.0
    generator = torch.Generator().manual_seed(0)
    method = trainer.method
    only_ranked = getattr(method, "student_bank", None) if trainer.cfg.method.student_search == "teacher" else None
    for bank in (value for value in vars(method).values() if isinstance(value, MemoryBank)):
        rows = torch.randn(bank.num_samples, bank.dim, generator=generator)
        bank.fill(torch.nn.functional.normalize(rows, dim=1).to(bank.device))
        if bank.search_projection is not None:
            if bank is not only_ranked:
                refit = timed(bank.fit_search_projection, steps=2, device=bank.device, warmup=1)
                per_step += refit * trainer.cfg.optim.batch_size / bank.refit_every
            bank.refit_every = 2**62  # averaged above instead
    return per_step


class Cases:
    """One method's timed callables (the loop, and the bare step for the first method) with their FLOPs."""

    def __init__(self, trainer: Trainer, *, bare: bool, compiled: bool) -> None:
        self.trainer = trainer
        self.refit_seconds_per_step = fill_banks(trainer)
        self.hook = time_hook(trainer)
        self.calls: dict[str, Callable[[], None]] = {"loop": loop_step(trainer)}
        self.flops = {"loop": count_flops(self.calls["loop"])}
        if bare:
            self.calls["bare"] = bare_step(trainer)
            self.flops["bare"] = count_flops(self.calls["bare"])
            if compiled:
                self.calls["bare_compiled"] = bare_step(trainer, compiled=True)
                timed(self.calls["bare_compiled"], steps=0, device=trainer.device, warmup=3)  # compile off the clock
        self.seconds: dict[str, list[float]] = {name: [] for name in self.calls}
        self.hook_seconds: list[float] = []


def measure_interleaved(cases: dict[str, Cases], *, rounds: int, steps: int) -> None:
    """``rounds`` rounds of ``steps`` steps of every case in turn: a drift of the machine's pace (seen here as
    +-20 % over minutes) then falls on every case alike instead of on whichever ran last."""
    for _ in range(rounds):
        for case in cases.values():
            seconds_before, calls_before = case.hook["seconds"], case.hook["calls"]
            for name, fn in case.calls.items():
                case.seconds[name].append(timed(fn, steps=steps, device=case.trainer.device, warmup=1))
            if case.hook["calls"] > calls_before:  # the hook's mean over this round's calls, warm-up included
                case.hook_seconds.append((case.hook["seconds"] - seconds_before)
                                         / (case.hook["calls"] - calls_before) + case.refit_seconds_per_step)


def row_of(case: Cases, *, peak: float | None) -> dict[str, Any]:
    """One method's row from its rounds: each case's median seconds per step; ratios as medians of the ratios
    within a round."""
    batch = case.trainer.cfg.optim.batch_size
    loop = statistics.median(case.seconds["loop"])
    row: dict[str, Any] = {"n_train": len(case.trainer.train_base), "batch": batch, "loop_images_per_s": batch / loop,
                           "loop_gflop_per_image": case.flops["loop"] / batch / 1e9,
                           "loop_tflop_per_s": case.flops["loop"] / loop / 1e12,
                           "loop_seconds_per_round": case.seconds["loop"]}
    if peak:
        row["loop_mfu"] = case.flops["loop"] / loop / peak
    if case.hook_seconds:
        row["bank_graph_seconds_per_step"] = statistics.median(case.hook_seconds)
        row["bank_refit_seconds_per_step"] = case.refit_seconds_per_step
    if "bare" in case.calls:
        bare = statistics.median(case.seconds["bare"])
        row.update(bare_images_per_s=batch / bare,
                   loop_over_bare=statistics.median(b / lo for b, lo in zip(case.seconds["bare"],
                                                                              case.seconds["loop"])),
                   bare_gflop_per_image=case.flops["bare"] / batch / 1e9,
                   bare_tflop_per_s=case.flops["bare"] / bare / 1e12, bare_seconds_per_round=case.seconds["bare"])
        if peak:
            row["bare_mfu"] = case.flops["bare"] / bare / peak
    if "bare_compiled" in case.calls:
        compiled = statistics.median(case.seconds["bare_compiled"])
        row["bare_compiled_images_per_s"] = batch / compiled
        if peak:
            row["bare_compiled_mfu"] = case.flops["bare"] / compiled / peak
    return row


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The rows as a Markdown table (what the README quotes)."""
    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else ""

    lines = ["| method | loop img/s | bare img/s | loop / bare | GFLOP/img (fwd+bwd) | loop MFU | bare MFU "
             "| bare compiled img/s | vs `dino` loop |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        overhead = f"{100 * row['graph_overhead']:+.1f} % time per step" if "graph_overhead" in row else ""
        if "bank_graph_overhead" in row:
            overhead += f" (bank + graph work {100 * row['bank_graph_overhead']:+.1f} %)"
        lines.append(f"| `{name}` | {row['loop_images_per_s']:.1f} | {cell(row, 'bare_images_per_s', '.1f')} "
                     f"| {cell(row, 'loop_over_bare', '.2f')} | {cell(row, 'bare_gflop_per_image', '.2f')} "
                     f"| {cell(row, 'loop_mfu', '.1%')} | {cell(row, 'bare_mfu', '.1%')} "
                     f"| {cell(row, 'bare_compiled_images_per_s', '.1f')} | {overhead} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each timing every case in turn")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default="dino,graph", help="comma-separated methods (the first gets the bare "
                                                                "step; graph is compared with dino)")
    parser.add_argument("--compile", action="store_true", help="also time the bare step through torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: table/measured)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_throughput.json"))
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    precision = load_config(preset=args.preset, overrides=args.overrides).optim.precision
    peak, peak_source = device_peak(device, override=args.peak_tflops,
                                    dtype=autocast_dtype(precision, device) or torch.float32)
    methods = [m for m in args.methods.split(",") if m]
    cases: dict[str, Cases] = {}
    for i, method in enumerate(methods):
        cfg = load_config(preset=args.preset, overrides=[*args.overrides, f"method.name={method}",
                                                          f"device={args.device}", "out_dir=/tmp/sslgraph-bench"])
        cases[method] = Cases(Trainer(cfg, device=device), bare=i == 0, compiled=args.compile)
    with flush_denormals(device.type == "cpu"):  # as Trainer.fit runs its steps
        measure_interleaved(cases, rounds=args.rounds, steps=args.steps)
    rows = {method: row_of(case, peak=peak) for method, case in cases.items()}
    if "dino" in cases and "graph" in cases:
        # Per round, so that both loops' times come from the same minutes.
        rows["graph"]["graph_overhead"] = statistics.median(
            g / d - 1 for g, d in zip(cases["graph"].seconds["loop"], cases["dino"].seconds["loop"]))
        if cases["graph"].hook_seconds:
            rows["graph"]["bank_graph_overhead"] = statistics.median(
                h / d for h, d in zip(cases["graph"].hook_seconds, cases["dino"].seconds["loop"]))

    markdown = table(rows)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
                                                                                    or platform.machine())
    print(f"{device_name}: peak {peak / 1e12 if peak else float('nan'):.2f} TFLOP/s ({peak_source})")
    print(markdown)
    result = {"preset": args.preset, "overrides": args.overrides, "device": args.device, "device_name": device_name,
              "peak_tflops": peak / 1e12 if peak else None, "peak_source": peak_source,
              "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
              "torch": torch.__version__, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(f"{device_name}, peak {peak_source}\n\n{markdown}\n")
    print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
