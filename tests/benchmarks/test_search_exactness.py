"""The search-exactness benchmark's counting, on hand-made lists and tiny banks, and its run's overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sslgraph.config import load_config, validate
from sslgraph.graph.bank import MemoryBank

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import search_exactness  # noqa: E402


def test_agreement_counts_equal_sets_and_found_entries() -> None:
    exact = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    found = torch.tensor([[3, 1, 2], [4, 5, 0], [0, 1, 2]])  # the same set in another order; two of three; none
    assert search_exactness.agreement(found, exact) == (1, 5, 9)


def test_compare_on_banks_whose_searches_are_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(300, 8, generator=gen), dim=1)
    teacher = MemoryBank(300, 8, topk=4, vote_window=0, search_precision="fp32")
    student = MemoryBank(300, 8, topk=2, vote_window=0, search_precision="fp32")
    teacher.fill(feats)
    student.fill(feats)
    queries = feats[:10]
    found = search_exactness.compare(teacher, student, teacher_feats=queries, student_feats=queries)
    # exact searches; the student's 2 best are among the teacher's 4 on the same features
    assert found == {mode: (10, 10 * k, 10 * k) for mode, k in
                     (("teacher", 4), ("student_own", 2), ("student_from_teacher", 2))}
    # a student whose features disagree with the teacher's: its own search stays exact, the teacher's rows miss
    student.fill(F.normalize(torch.randn(300, 8, generator=gen), dim=1))
    other = F.normalize(torch.randn(10, 8, generator=gen), dim=1)
    found = search_exactness.compare(teacher, student, teacher_feats=queries, student_feats=other)
    assert found["student_own"] == (10, 20, 20)
    assert found["student_from_teacher"][1] < 20


def test_the_run_overrides_pass_the_config_checks() -> None:
    cfg = load_config(preset="cifar10-cpu", overrides=search_exactness.run_overrides(
        ["method.student_search=own"], minutes=2.0, device="cpu"))
    validate(cfg)
    assert cfg.optim.budget_minutes == 2.0 and cfg.optim.budget_scope == "steps"
    assert cfg.method.name == "graph" and cfg.method.student_search == "own" and cfg.monitor.knn_every == 0
