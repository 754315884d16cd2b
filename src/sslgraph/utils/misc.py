"""Seeding, device choice, RNG state capture and progress bars."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

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
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, disable: bool | None = None,
             leave: bool = False) -> Iterator[T]:
    """A tqdm bar on the main process only (and only on a terminal unless asked)."""
    if disable is None:
        disable = not dist.is_main() or not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, dynamic_ncols=True))


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
