"""Precision choice: bf16 autocast by default where bf16 is native (CUDA, AVX512-BF16/AMX CPUs), else float32."""

from __future__ import annotations

import pytest
import torch

from sslgraph.utils.misc import autocast_dtype, native_bf16


def test_auto_precision_is_bf16_where_native_and_full_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not native_bf16(torch.device("cpu"))
    assert autocast_dtype("auto", torch.device("cpu")) is None  # emulated bf16 would be slower than float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16  # asked for explicitly
    assert autocast_dtype("fp32", torch.device("cuda", 0)) is None
    assert autocast_dtype("fp16", torch.device("cuda", 0)) is torch.float16
