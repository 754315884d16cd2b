"""Precision choice: bf16 autocast on CUDA by default, none on the CPU (where it made the backward pass slower)."""

from __future__ import annotations

import torch

from sslgraph.utils.misc import autocast_dtype


def test_auto_precision_is_bf16_on_cuda_and_full_on_the_cpu() -> None:
    assert autocast_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16  # asked for explicitly
    assert autocast_dtype("fp32", torch.device("cuda", 0)) is None
    assert autocast_dtype("fp16", torch.device("cuda", 0)) is torch.float16
