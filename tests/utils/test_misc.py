"""Precision choice (bf16 autocast by default where bf16 is native: CUDA, AVX512-BF16/AMX CPUs) and denormals."""

from __future__ import annotations

import pytest
import torch

from sslgraph.utils.misc import autocast_dtype, flush_denormals, native_bf16


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


def test_flush_denormals_zeroes_denormal_results_inside_and_restores_the_default_after() -> None:
    tiny = torch.tensor([1e-30], dtype=torch.float32)
    with flush_denormals():
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU cannot flush denormals")
        assert float(tiny * 1e-10) == 0.0  # 1e-40 is a float32 denormal
    assert float(tiny * 1e-10) != 0.0
    with flush_denormals(enabled=False):
        assert float(tiny * 1e-10) != 0.0
