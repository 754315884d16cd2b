"""One writer per run directory: a lock file that names the process holding it.

Two commands writing the same ``--out`` at once would interleave checkpoints and logs; the second one refuses
instead. The lock file is created atomically (``O_EXCL``) and records pid, host and start time, so a refusal
says who holds the run, and a lock left behind by a process that died on this host (``kill -9``, a crash) is
recognised as stale and taken over. A lock from another host cannot be checked; the message says how to remove
it. The same process may take a run's lock again (``sslgraph run`` calls the pretraining stage, which locks too).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sslgraph.errors import LockError
from sslgraph.run.rundir import RunDir
from sslgraph.utils import dist

# Lock files this process holds, with how many times each was taken.
_held: dict[Path, int] = {}


def _key(run: RunDir) -> Path:
    return Path(os.path.abspath(run.lock))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or damaged: treated as a lock of unknown owner
    return owner if isinstance(owner, dict) else {}


def _stale(owner: dict[str, Any]) -> bool:
    """Held by a process of this host that no longer runs."""
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return True


def acquire(run: RunDir) -> None:
    """Take the run's lock or raise :class:`LockError` naming the holder."""
    path = _key(run)
    if path in _held:
        _held[path] += 1
        return
    run.root.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock is removed and the creation retried; another process may win the race
        if _try_create(path):
            _held[path] = 1
            return
        owner = _read_owner(path)
        if owner is None:
            continue  # released in between
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            _held[path] = 1  # left by this very process (an earlier call that did not release it)
            return
        if _stale(owner):
            path.unlink(missing_ok=True)
            continue
        who = (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}" if owner
               else "an unknown process")
        raise LockError(f"{run.root} is being written by another sslgraph process ({who}); wait for it to finish "
                        f"or use another --out. If that process is gone, delete {path}")
    raise LockError(f"could not take the lock {path}; retry, or delete it if no sslgraph process uses {run.root}")


def release(run: RunDir) -> None:
    path = _key(run)
    count = _held.get(path, 0)
    if count > 1:
        _held[path] = count - 1
        return
    _held.pop(path, None)
    if count:
        owner = _read_owner(path)
        if owner is not None and owner.get("pid") == os.getpid():
            path.unlink(missing_ok=True)


@contextmanager
def run_lock(run: RunDir) -> Iterator[None]:
    """Hold the run's lock in the block (main process only: the other DDP processes write nothing).

    A directory created only to hold the lock is removed again when the block fails before writing anything,
    so a run that stops at start-up (a bad option) leaves no trace.
    """
    # Before the process group exists every process is "main"; torchrun's RANK tells them apart then.
    if not dist.is_main() or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    created = not run.root.exists()
    acquire(run)
    try:
        yield
    finally:
        release(run)
        if created and run.root.is_dir() and not any(run.root.iterdir()):
            run.root.rmdir()
