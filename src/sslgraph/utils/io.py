"""Crash-safe file writing and safe checkpoint loading (where a run keeps which file: :mod:`sslgraph.run.rundir`).

Every artefact a run depends on is written to a temporary file in the same directory, flushed to disk and
then renamed over the target, so a kill, a crash or a full disk leaves either the old file or the new one,
never a half-written one. Checkpoints are read with ``weights_only=True``: they hold tensors, numbers,
strings, lists and dicts only, so loading a file never executes code from it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sslgraph.errors import CheckpointError

__all__ = ["CheckpointError", "append_jsonl", "atomic_save", "atomic_save_figure", "atomic_write_text", "read_jsonl",
           "safe_load", "write_jsonl"]


def _atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise CheckpointError(f"could not write {target}: {err.strerror or err}; {_disk_hint(err)}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            left = ("its previous version is intact" if target.is_file() else
                    "nothing was written there (there was no previous version)")
            raise CheckpointError(f"could not write {target}: {err.strerror or err}; {left}; "
                                  f"{_disk_hint(err)}") from err
        raise
    return target


def _disk_hint(err: OSError) -> str:
    """What to do about a failed write, by cause."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space (or choose another --out), then rerun (pretrain: with --resume) to continue"
    if err.errno == errno.EFBIG:
        return "the file exceeds the file-size limit (ulimit -f); raise it, then rerun (pretrain: with --resume)"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable; choose another --out"
    return "check the disk, then rerun (pretrain: with --resume)"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_figure(figure: Any, path: str | os.PathLike, *, dpi: int) -> Path:
    """Render a matplotlib ``Figure`` in the format the suffix names (PNG without one) and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    return _atomic_write_bytes(path, buffer.getvalue())


def safe_load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """Load a file written by :func:`atomic_save` without unpickling arbitrary objects; ``mmap`` maps tensors
    lazily (cheap when only a few plain values of a large checkpoint are read)."""
    target = Path(path)
    if not target.is_file():
        raise CheckpointError(f"file not found: {target}")
    try:
        return torch.load(target, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several unrelated types for damaged files
        raise CheckpointError(f"could not load {target}: {err}") from err


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line; a single small write, so a kill never leaves a partial record."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise CheckpointError(f"could not append to {target}: {err.strerror or err}; the records before this one "
                              f"are intact; {_disk_hint(err)}") from err


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read JSON lines, ignoring a trailing line cut short by a crash."""
    target = Path(path)
    if not target.is_file():
        return []
    records = []
    for line in target.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replace a JSON-lines file atomically (used to drop records past a resumed checkpoint)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
