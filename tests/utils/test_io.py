"""Atomic writes keep the previous file when writing fails; safe loading refuses pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sslgraph.utils import io as sio
from sslgraph.utils.io import CheckpointError, append_jsonl, atomic_save, read_jsonl, safe_load, write_jsonl


def test_atomic_save_round_trip(tmp_path: Path) -> None:
    state = {"epoch": 3, "w": torch.arange(4.0), "nested": {"names": ["a", "b"], "none": None}}
    atomic_save(state, tmp_path / "ck.pt")
    loaded = safe_load(tmp_path / "ck.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], state["w"]) and loaded["nested"] == state["nested"]


def test_full_disk_keeps_previous_checkpoint_and_leaves_no_temp_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ck.pt"
    atomic_save({"epoch": 1}, target)

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, payload):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError, match="No space left on device; its previous version is intact; free disk"):
        atomic_save({"epoch": 2}, target)
    # Without a previous version the message must not claim one survived.
    with pytest.raises(CheckpointError, match=r"new\.pt: No space left on device; nothing was written there \(there "
                                              r"was no previous version\)"):
        atomic_save({"epoch": 2}, tmp_path / "new.pt")
    monkeypatch.undo()
    assert safe_load(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_append_to_a_full_disk_is_a_checkpoint_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.os, "fsync", no_space)
    with pytest.raises(CheckpointError, match=r"log\.jsonl: No space left on device; the records before"):
        append_jsonl(tmp_path / "log.jsonl", {"epoch": 0})


def test_safe_load_refuses_arbitrary_objects_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("x")}, path)  # not a tensor/primitive: would need unpickling a class
    with pytest.raises(CheckpointError, match="evil.pt"):
        safe_load(path)
    with pytest.raises(CheckpointError, match="file not found"):
        safe_load(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="cut.pt"):
        safe_load(tmp_path / "cut.pt")


def test_jsonl_ignores_a_line_cut_short_and_rewrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"epoch": 0, "loss": 1.5})
    append_jsonl(path, {"epoch": 1, "loss": 1.2})
    with open(path, "a") as handle:
        handle.write('{"epoch": 2, "lo')
    assert [r["epoch"] for r in read_jsonl(path)] == [0, 1]
    write_jsonl(path, read_jsonl(path)[:1])
    assert read_jsonl(path) == [{"epoch": 0, "loss": 1.5}]
