"""Per-iteration and per-epoch schedules (learning rate, weight decay, teacher momentum, teacher temperature).

Each schedule is precomputed as a float64 tensor indexed by the global iteration (or epoch), so resuming a run
only needs the iteration counter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cosine_schedule(
    base: float,
    final: float,
    *,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0,
    start_warmup: float = 0.0,
    total_iters: int | None = None,
) -> Tensor:
    """Linear warm-up from ``start_warmup`` to ``base``, then a half cosine from ``base`` towards ``final``.

    After ``W = round(warmup_epochs * iters_per_epoch)`` evenly spaced warm-up values (both ends included),
    iteration ``W + t`` has value ``final + (base - final) / 2 * (1 + cos(pi * t / T))`` with ``T`` the number of
    post-warm-up iterations. ``total_iters`` (e.g. what a wall-clock budget allows) replaces
    ``epochs * iters_per_epoch`` as the length.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"cosine_schedule: epochs and iters_per_epoch must be >= 1, got {epochs}, {iters_per_epoch}")
    total = epochs * iters_per_epoch if total_iters is None else total_iters
    if total < 1:
        raise ValueError(f"cosine_schedule: total_iters must be >= 1, got {total}")
    warmup_iters = round(warmup_epochs * iters_per_epoch)
    if not 0 <= warmup_iters <= total:
        raise ValueError(f"cosine_schedule: warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs}")
    rest = total - warmup_iters
    warmup = torch.linspace(start_warmup, base, warmup_iters, dtype=torch.float64)
    t = torch.arange(rest, dtype=torch.float64)
    cosine = final + 0.5 * (base - final) * (1.0 + torch.cos(math.pi * t / max(rest, 1)))
    return torch.cat([warmup, cosine])


def stretch_tail(schedule: Tensor, *, start: int, total: int) -> Tensor:
    """``schedule[:start]`` unchanged, the rest resampled linearly onto ``total - start`` iterations.

    A wall-clock budget re-plans the run's length from the measured pace: the remaining part of every schedule
    is stretched or squeezed so that it stays continuous at ``start`` and still ends on its last value.
    """
    length = schedule.shape[0]
    if not 0 <= start < length or total < start:
        raise ValueError(f"stretch_tail: need 0 <= start < {length} and total >= start, got start={start}, "
                         f"total={total}")
    tail = total - start
    if tail <= 1:  # nothing left, or only the last value
        return torch.cat([schedule[:start], schedule[-1:][:tail]])
    pos = torch.linspace(start, length - 1, tail, dtype=torch.float64)
    low = pos.floor().long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    frac = (pos - low).to(schedule.dtype)
    return torch.cat([schedule[:start], torch.lerp(schedule[low], schedule[high], frac)])


def teacher_momentum_schedule(m0: float, *, epochs: int, iters_per_epoch: int,
                              total_iters: int | None = None, end: float = 1.0) -> Tensor:
    """EMA momentum ``end - (end - m0) (cos(pi it / T) + 1) / 2`` with ``T = total - 1``: ``m0`` first, exactly
    ``end`` last (DINO's 1 by default: the teacher freezes as the run ends; below 1 it keeps following).

    The cosine spans every iteration of the run (``total_iters`` when a budget sets the length). A
    single-iteration run keeps ``m0``.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(
            f"teacher_momentum_schedule: epochs and iters_per_epoch must be >= 1, got {epochs}, {iters_per_epoch}"
        )
    total = epochs * iters_per_epoch if total_iters is None else total_iters
    it = torch.arange(total, dtype=torch.float64)
    return end - (end - m0) * (torch.cos(math.pi * it / max(total - 1, 1)) + 1.0) / 2.0


def teacher_temp_schedule(warmup_temp: float, temp: float, *, warmup_epochs: int, epochs: int) -> Tensor:
    """Teacher temperature per epoch: linear from ``warmup_temp`` to ``temp`` over ``warmup_epochs``, then ``temp``."""
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"teacher_temp_schedule: warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs}")
    warmup = torch.linspace(warmup_temp, temp, warmup_epochs, dtype=torch.float64)
    constant = torch.full((epochs - warmup_epochs,), temp, dtype=torch.float64)
    return torch.cat([warmup, constant])


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule: ``base_lr`` is quoted for a global batch of 256."""
    return base_lr * global_batch / 256
