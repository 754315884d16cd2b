"""Host-memory allocation for CPU work: keep large tensors from faulting their pages in again at every step.

Why: glibc hands a freed block above its mmap threshold (128 KiB, raised at run time up to 32 MiB) back to the
kernel, so the next tensor of that size faults its pages in again, 4 KiB at a time, each zeroed by the kernel.
Training and evaluation allocate and free the same large buffers over and over: on a 2-core CPU the batched
views spent 40-50 % of their time in such faults, and the refinement's label-free rule, whose temporaries
are hundreds of MiB, takes 17 million of them on CIFAR-10 (README, "Learning on a short clock", says what the
settings gave and where they gave nothing). Two settings remove most of the faults without changing a result:

- PyTorch's ``THP_MEM_ALLOC_ENABLE``: CPU tensors of 2 MiB or more are placed on transparent huge pages (512
  times fewer faults) where the kernel offers them (``/sys/kernel/mm/transparent_hugepage/enabled`` is
  ``madvise`` or ``always``). PyTorch reads it once, when it first needs it, so it is set before any work;
- glibc's ``mallopt``: blocks up to 32 MiB come from the heap (the largest mmap threshold glibc accepts), and
  freed heap memory is kept for reuse instead of being trimmed.

The command line applies both at start-up; a library user calls :func:`tune_cpu_allocator` first thing, or
exports ``SSLGRAPH_TUNE_ALLOCATOR=0`` to leave the process as it is. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

TUNE_ENV_VAR = "SSLGRAPH_TUNE_ALLOCATOR"
THP_ENV_VAR = "THP_MEM_ALLOC_ENABLE"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def huge_pages_offered(mode_file: Path = THP_MODE_FILE) -> bool:
    """Whether the kernel gives transparent huge pages to memory that asks for them (mode ``madvise`` or
    ``always``; the selected mode is the bracketed word)."""
    try:
        text = mode_file.read_text()
    except OSError:
        return False
    return "[always]" in text or "[madvise]" in text


def tune_cpu_allocator(*, environ: MutableMapping[str, str] | None = None,
                       mode_file: Path = THP_MODE_FILE) -> dict[str, bool]:
    """Apply both settings to this process on Linux; returns which took effect (``huge_pages``, ``malloc``).

    Call it before the first large tensor. A ``THP_MEM_ALLOC_ENABLE`` the user exported is left as it is, and
    ``SSLGRAPH_TUNE_ALLOCATOR=0`` turns the whole function off. Elsewhere (macOS, Windows, musl) it does nothing.
    ``environ`` (default ``os.environ``) is where the switches are read and set; the glibc setting always applies
    to this process.
    """
    env = os.environ if environ is None else environ
    applied = {"huge_pages": False, "malloc": False}
    if env.get(TUNE_ENV_VAR, "1") == "0" or not sys.platform.startswith("linux"):
        return applied
    if huge_pages_offered(mode_file):
        env.setdefault(THP_ENV_VAR, "1")
        applied["huge_pages"] = env[THP_ENV_VAR] == "1"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied["malloc"] = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                        TRIM_THRESHOLD))
    return applied
