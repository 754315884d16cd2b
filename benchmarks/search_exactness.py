"""How often the bank searches of a real pretraining return the exact top-k lists, per epoch.

Runs the preset's pretraining (``graph`` method) for a budget of minutes and, every ``--every`` steps, before
the banks are updated, compares each stream's lists with an exact float32 search of the whole bank:

- teacher: the search the run uses (bfloat16 and/or ``method.bank_search_dim`` principal directions, candidates
  re-scored exactly);
- student, ``own``: the same kind of search of the whole student bank (``method.student_search=own``);
- student, ``teacher``: the teacher search's candidates ranked exactly in the student bank
  (``method.student_search=teacher``: one bank product per step instead of two).

A list counts as exact when it holds the same samples as the exact one (the order within a list follows the
exact scores in every mode); recall is the share of the exact lists' entries found. The run itself follows the
preset's ``method.student_search`` (override it to train either way).

    SSLGRAPH_DATA=../shared/datasets python benchmarks/search_exactness.py [--minutes 6] [--every 40] [key=value ...]

Prints a table per epoch and writes benchmarks/results/search_exactness.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

from sslgraph.utils.allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the command line does: before the first tensor, so the run matches its runs

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from sslgraph.config import load_config  # noqa: E402
from sslgraph.graph.bank import MemoryBank, topk_cosine  # noqa: E402
from sslgraph.training.trainer import Trainer  # noqa: E402
from sslgraph.utils.io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_exactness.json"
MODES = ("teacher", "student_own", "student_from_teacher")


def agreement(found: Tensor, exact: Tensor) -> tuple[int, int, int]:
    """(lists equal as sets, entries of the exact lists found, entries in all) for ``[B, k]`` index lists."""
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)).any(dim=1)  # [B, k]: each exact entry found or not
    return int(hits.all(dim=1).sum()), int(hits.sum()), hits.numel()


def compare(teacher_bank: MemoryBank, student_bank: MemoryBank, *, teacher_feats: Tensor,
            student_feats: Tensor) -> dict[str, tuple[int, int, int]]:
    """Each mode's agreement with the exact search, for one batch, on the banks before their update."""
    tq = F.normalize(teacher_feats.float(), dim=1)
    sq = F.normalize(student_feats.float(), dim=1)
    _, teacher_idx, candidates = teacher_bank.search_with_candidates(tq)
    teacher_exact = topk_cosine(tq, teacher_bank.features, teacher_bank.topk)[1]
    student_exact = topk_cosine(sq, student_bank.features, student_bank.topk)[1]
    return {"teacher": agreement(teacher_idx, teacher_exact),
            "student_own": agreement(student_bank.search(sq)[1], student_exact),
            "student_from_teacher": agreement(student_bank.rank(sq, candidates)[1], student_exact)}


def run_overrides(extra: list[str], *, minutes: float, device: str) -> list[str]:
    """The pretraining this benchmark runs: the graph method on a budget of ``minutes`` of steps, no kNN monitor."""
    return [*extra, "method.name=graph", f"device={device}", f"optim.budget_minutes={minutes}",
            "optim.budget_scope=steps", "pipeline.time_limit_minutes=null", "monitor.knn_every=0",
            "out_dir=/tmp/sslgraph-bench"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--minutes", type=float, default=6.0, help="budget of training steps (optim.budget_minutes)")
    parser.add_argument("--every", type=int, default=40, help="compare the searches every this many steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args(argv)
    if args.every < 1 or args.minutes <= 0:
        parser.error("--every must be >= 1 and --minutes > 0")

    cfg = load_config(preset=args.preset, overrides=run_overrides(args.overrides, minutes=args.minutes,
                                                                  device=args.device))
    trainer = Trainer(cfg, device=torch.device(args.device))
    method = trainer.method
    original = method.after_step
    step = 0
    # epoch -> mode -> [exact lists, entries found, entries]
    counts: dict[int, dict[str, list[int]]] = defaultdict(lambda: {mode: [0, 0, 0] for mode in MODES})

    def after_step(**kwargs: Any) -> None:
        nonlocal step
        if step % args.every == 0:
            epoch = step // trainer.iters_per_epoch
            found = compare(method.teacher_bank, method.student_bank, teacher_feats=kwargs["teacher_feats"],
                            student_feats=kwargs["student_feats"])
            for mode, values in found.items():
                counts[epoch][mode] = [a + b for a, b in zip(counts[epoch][mode], values)]
        step += 1
        original(**kwargs)

    method.after_step = after_step  # type: ignore[method-assign]
    trainer.fit()
    purity = {record["epoch"]: {stream: record.get(f"{stream}_edge_same_class") for stream in ("teacher", "student")}
              for record in trainer.sink.records if record.get("epoch", -1) >= 0}

    rows = []
    for epoch in sorted(counts):
        row: dict[str, Any] = {"epoch": epoch, "lists": counts[epoch]["teacher"][2] // method.teacher_bank.topk}
        for mode in MODES:
            exact_lists, found, entries = counts[epoch][mode]
            row[f"{mode}_exact"] = exact_lists / row["lists"]
            row[f"{mode}_recall"] = found / entries
        row["fifo_same_class"] = purity.get(epoch, {})
        rows.append(row)
    lines = ["| epoch | lists | teacher search exact | student own search exact | student from teacher's "
             "candidates exact (recall) | FIFO edges same-class teacher / student |", "|---|---|---|---|---|---|"]
    for row in rows:
        shares = row["fifo_same_class"]
        purity_cell = " / ".join(f"{100 * shares[s]:.1f} %" if shares.get(s) is not None else "-"
                                 for s in ("teacher", "student"))
        lines.append(f"| {row['epoch']} | {row['lists']} | {100 * row['teacher_exact']:.1f} % "
                     f"| {100 * row['student_own_exact']:.1f} % | {100 * row['student_from_teacher_exact']:.1f} % "
                     f"({100 * row['student_from_teacher_recall']:.2f} %) | {purity_cell} |")
    table = "\n".join(lines)
    print(table)
    me = trainer.cfg.method
    result = {"preset": args.preset, "overrides": args.overrides, "minutes": args.minutes, "every": args.every,
              "steps": step, "device": args.device, "device_name": platform.processor() or platform.machine(),
              "torch": torch.__version__, "student_search": me.student_search, "bank_search_dim": me.bank_search_dim,
              "bank_refits_per_pass": me.bank_refits_per_pass,
              "teacher_topk": method.teacher_bank.topk, "student_topk": method.student_bank.topk, "epochs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
