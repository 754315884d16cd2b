"""Stop requests from the outside (SIGTERM, SIGUSR1) and periodic checkpoints, for jobs that get pre-empted.

Cluster schedulers send SIGTERM (or SIGUSR1, a configurable warning signal in SLURM) some seconds before they kill
a job. :func:`stop_signals` turns those signals into a flag instead of an immediate exit; the training loops
poll :func:`requested` between steps, save their state at that step and raise
:class:`~sslgraph.errors.Preempted`. :class:`CheckpointClock` says when a time-based checkpoint is due, so a
``kill -9`` (no warning at all) costs at most that many minutes of work.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch

from sslgraph.utils import dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: int | None = None


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum


def requested() -> int | None:
    """The stop signal received since :func:`stop_signals` was entered, or None."""
    return _received


def clear() -> None:
    global _received
    _received = None


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 set the stop flag instead of ending the process.

    Signal handlers can only be set from the main thread; elsewhere this does nothing (the loops then never
    see a request). The previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class CheckpointClock:
    """Says when ``minutes`` have passed since the last checkpoint (never when ``minutes`` is None)."""

    def __init__(self, minutes: float | None) -> None:
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.last >= self.seconds

    def reset(self) -> None:
        self.last = time.monotonic()


def agree(stop: int | None, checkpoint_due: bool, *, device: torch.device) -> tuple[int | None, bool]:
    """The decision of the slowest-to-agree process: every process stops or checkpoints at the same step (each
    may have received the signal, or reached the time, at a different one). One tiny collective per step under
    DDP; the identity in a single process."""
    if not dist.is_dist():
        return stop, checkpoint_due
    flags = torch.tensor([stop or 0, int(checkpoint_due)], device=device, dtype=torch.long)
    flags = dist.all_reduce_max(flags)
    return (int(flags[0]) or None), bool(flags[1])
