"""Seeding, device and precision choice, RNG state capture and progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from sslgraph.errors import ConfigError
from sslgraph.utils import dist

T = TypeVar("T")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks this process's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{dist.local_rank()}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use device=cpu")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (elsewhere bfloat16 is emulated and slow)."""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``optim.precision`` on ``device`` (None: full precision, no autocast).

    ``auto`` is bf16 wherever bf16 is native: on CUDA and on CPUs with AVX512-BF16 or AMX, where a ResNet-18
    training step at 32 px ran 1.45x faster than in float32 (channels-last, oneDNN). Elsewhere bf16 is
    emulated and slower than float32, so ``auto`` stays in full precision.
    """
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_threads_for(*, num_workers: int) -> int:
    """Intra-op threads that leave one core per data-loading worker and share the cores between local processes.

    Threads that share cores with loader workers or other processes spin against each other; on a 2-core
    machine that made a training step several times slower than with one thread.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cores // local_processes - num_workers)


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Temporarily use ``threads`` intra-op threads (e.g. all cores for inference between epochs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Treat denormal floats (below ~1e-38) as zero while inside, where the CPU supports it.

    Training produces such values (tiny gradients and their squares, decayed momenta), and x86 cores take a
    slow path for each one: on a 2-core CPU a ResNet-18 step of the CPU preset ran 10-15 % slower without
    this. Flushing them changes the results by less than float32 rounding. The setting is global to the
    process, so it is switched off again on the way out (off is PyTorch's default)."""
    if not enabled or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, disable: bool | None = None,
             leave: bool = False) -> tqdm:
    """A tqdm bar on the main process only (and only on a terminal unless asked); iterate it, or ``reset`` it
    when the length changes."""
    if disable is None:
        disable = not dist.is_main() or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, dynamic_ncols=True)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values, so a checkpoint loads with ``weights_only=True``."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": py_version,
        "python": list(py_internal),
        "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
