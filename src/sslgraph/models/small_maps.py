"""Exact convolutions on feature maps smaller than their kernel, as one matrix product.

A ResNet with its ImageNet stem at 32 px ends on 2x2 (``layer3``) and 1x1 (``layer4``) maps. A 3x3 convolution
with zero padding on a 1x1 map only ever multiplies its centre tap by a real pixel; on a 2x2 map each output
sees 4 of the 9 taps. The library kernels still run the whole 3x3 window, and oneDNN's backward for such maps
is several times slower than its forward (on a 2-core CPU in bf16, ``layer4``'s three 1x1-map convolutions took
a fifth of a ResNet-18 training step). Written as the linear map it is, ``[B, Ci*Hi*Wi] @ [Ci*Hi*Wi, Co*Ho*Wo]``,
with the matrix gathered from the taps that touch real pixels, the same convolution costs only the products
that are not with padding. The result is the convolution itself (same parameters, same state-dict keys, the
same values up to summation order), so weights move freely between this and ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tap_index(
    in_size: tuple[int, int],
    *,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[Tensor, tuple[int, int]]:
    """For each (output pixel, input pixel) pair, the flat kernel tap that joins them, or ``kh * kw`` if none.

    Returns ``[Ho*Wo, Hi*Wi]`` (row-major pixels) and the output size ``(Ho, Wo)``.
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = in_size, kernel_size, stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    oy = torch.arange(ho).view(ho, 1, 1, 1)
    ox = torch.arange(wo).view(1, wo, 1, 1)
    iy = torch.arange(h).view(1, 1, h, 1)
    ix = torch.arange(w).view(1, 1, 1, w)
    # Input pixel iy meets tap ty of output oy when iy = oy * stride - padding + ty * dilation.
    ty, tx = iy - oy * sh + ph, ix - ox * sw + pw
    valid = (ty % dh == 0) & (tx % dw == 0)
    ty, tx = ty // dh, tx // dw
    valid &= (ty >= 0) & (ty < kh) & (tx >= 0) & (tx < kw)
    index = torch.where(valid, ty * kw + tx, kh * kw)
    return index.reshape(ho * wo, h * w), (ho, wo)


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs as one matrix product when the input map has no more pixels than the kernel.

    There the dense operator has at most as many entries as the convolution has multiply-adds (which include
    the products with padding). Larger maps, grouped convolutions and non-zero padding modes take
    ``nn.Conv2d``'s path unchanged.
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Conv2d's own argument name
        kh, kw = self.kernel_size
        h, w = input.shape[-2:]
        if (h * w > kh * kw or self.groups != 1 or self.padding_mode != "zeros"
                or isinstance(self.padding, str) or input.dim() != 4):
            return super().forward(input)
        select, (ho, wo) = self._selection(h, w, input.device)
        c_out, c_in = self.out_channels, self.in_channels
        # Gathering the taps by a 0/1 matrix product keeps the backward a matrix product too (an indexed gather's
        # backward is a scatter-add, which cost more than the convolution it replaces).
        matrix = torch.matmul(self.weight.flatten(2), select.to(self.weight.dtype))  # [Co, Ci, Po*Pi]
        # [Po, Co, Pi, Ci]: pixel-major on both sides, so a channels-last input and output need no copy.
        matrix = matrix.view(c_out, c_in, ho * wo, h * w).permute(2, 0, 3, 1).reshape(ho * wo * c_out, h * w * c_in)
        batch = input.shape[0]
        out = F.linear(input.permute(0, 2, 3, 1).reshape(batch, h * w * c_in), matrix, None)
        out = out.view(batch, ho, wo, c_out).permute(0, 3, 1, 2)
        if self.bias is not None:
            out = out + self.bias.view(1, c_out, 1, 1)
        return out

    def _selection(self, h: int, w: int, device: torch.device) -> tuple[Tensor, tuple[int, int]]:
        """``[kh*kw, Ho*Wo*Hi*Wi]``: column (output pixel, input pixel) is one-hot at the tap joining them, or
        all zero where none does; cached per input size and device."""
        cache: dict[tuple[int, int, torch.device], tuple[Tensor, tuple[int, int]]] = self.__dict__.setdefault(
            "_selection_cache", {})
        key = (h, w, device)
        if key not in cache:
            index, out_size = tap_index((h, w), kernel_size=self.kernel_size, stride=self.stride,
                                        padding=self.padding, dilation=self.dilation)  # type: ignore[arg-type]
            taps = self.kernel_size[0] * self.kernel_size[1]
            select = F.one_hot(index.flatten(), taps + 1)[:, :taps].T.to(torch.float32)
            cache[key] = (select.contiguous().to(device), out_size)
        return cache[key]


def use_small_map_convs(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Conv2d`` under ``module`` by a :class:`SmallMapConv2d` with the same parameters.

    In place (parameters are moved, not copied); returns ``module``.
    """
    return _swap_convs(module, source=nn.Conv2d, target=SmallMapConv2d)


def use_plain_convs(module: nn.Module) -> nn.Module:
    """The inverse of :func:`use_small_map_convs` (to measure what it buys), in place; returns ``module``."""
    return _swap_convs(module, source=SmallMapConv2d, target=nn.Conv2d)


def _swap_convs(module: nn.Module, *, source: type[nn.Conv2d], target: type[nn.Conv2d]) -> nn.Module:
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not source:
                continue
            conv = target(child.in_channels, child.out_channels, child.kernel_size,  # type: ignore[arg-type]
                          stride=child.stride, padding=child.padding, dilation=child.dilation,  # type: ignore[arg-type]
                          groups=child.groups, bias=child.bias is not None, padding_mode=child.padding_mode,
                          device="meta")
            conv.weight = child.weight
            conv.bias = child.bias
            setattr(parent, name, conv)
    return module
