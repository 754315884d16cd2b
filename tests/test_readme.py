"""The README's library snippet runs as written (on a small graph file where it expects a run's graph)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from sslgraph.graph.export import save_graph

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text(encoding="utf-8").split("## Using the library", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert snippet is not None
    gen = torch.Generator().manual_seed(0)
    num_train, num_test = 30, 10
    node = torch.arange(num_train + num_test)
    targets = node.repeat_interleave(3)
    sources = (targets + 1 + torch.randint(0, num_train - 1, targets.shape, generator=gen)) % num_train
    keep = sources != targets
    save_graph(Data(x=torch.randn(len(node), 8, generator=gen), edge_index=torch.stack([sources[keep], targets[keep]]),
                    edge_weight=torch.ones(int(keep.sum())), y=node % 3, train_mask=node < num_train,
                    test_mask=node >= num_train, num_train=num_train), tmp_path / "runs/c10/graphs/teacher.pt")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(snippet.group(1), str(README), "exec"), namespace)
    assert 0.0 <= namespace["top1"][10] <= 100.0  # type: ignore[index]
