"""Batched augmentation on the training device: a whole batch of uint8 images becomes views in a few tensor ops.

Why not per-image PIL/v2 transforms in loader workers: on a 2-core CPU the per-image path costs as much as the
training step, and on a GPU it cannot keep up. Why not kornia or ``torchvision.transforms.v2``: v2 draws one
parameter set per call (one crop box for the whole batch), and kornia draws its parameters from torch's
global generator, so a view would depend on batch composition, process count and call order. Here every random
number is a counter-based hash of ``(seed, epoch, index, view, slot)``: a view is a pure function of those
five values, whatever the batch, device, worker or process layout, which keeps DDP and resumed runs exact.

The recipe is DINO's (and SimCLR's): random resized crop + horizontal flip (two batched matrix products),
colour jitter (brightness, contrast, saturation, hue — applied in that fixed order, where torchvision shuffles
the order per image), random grayscale, Gaussian blur with a per-sample sigma (separable, one grouped
convolution per axis), solarisation, normalisation.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from sslgraph.config import AugConfig, local_crop_size
from sslgraph.data.transforms import blur_kernel_size, blur_sigma

_M32 = 0xFFFFFFFF
_HASH_MUL = 0x45D9F3B  # < 2**31: products of 32-bit values stay below 2**63, no signed overflow
_GOLDEN = 0x9E3779B9

# Slots of the per-sample random stream; each draws an independent uniform number.
_SLOTS = 14
(_SCALE, _RATIO, _LEFT, _TOP, _FLIP, _JIT_P, _BRIGHT, _CONTRAST, _SAT, _HUE, _GRAY, _BLUR_P, _SIGMA,
 _SOLAR) = range(_SLOTS)


def _mix32(x: Tensor) -> Tensor:
    """A well-mixing 32-bit integer hash on int64 tensors holding values in ``[0, 2**32)``."""
    x = ((x >> 16) ^ x) * _HASH_MUL & _M32
    x = ((x >> 16) ^ x) * _HASH_MUL & _M32
    return (x >> 16) ^ x


def sample_keys(indices: Tensor, *, seed: int, epoch: int, view: int) -> Tensor:
    """One 32-bit key per sample from ``(seed, epoch, index, view)``; the root of all of its random numbers."""
    key = _mix32(torch.full_like(indices, (seed * _GOLDEN) & _M32, dtype=torch.long))
    key = _mix32(key ^ (epoch & _M32))
    key = _mix32(key ^ (indices.long() & _M32))
    return _mix32(key ^ ((view * _GOLDEN + 1) & _M32))


def uniform(keys: Tensor, slot: int) -> Tensor:
    """A float32 in ``[0, 1)`` per key for random-number ``slot`` (24 random bits)."""
    return uniforms(keys, slots=[slot]).squeeze(1)


def uniforms(keys: Tensor, *, slots: Sequence[int] = range(_SLOTS)) -> Tensor:
    """``[B, len(slots)]``: :func:`uniform` of every key for each slot, in one hash pass over a ``[B, S]`` tensor
    instead of one per slot (the per-slot draws were about two hundred tiny operators per view)."""
    salts = torch.tensor([(slot + 1) * 0x27D4EB2D & _M32 for slot in slots], dtype=torch.long, device=keys.device)
    h = _mix32(keys.unsqueeze(1) ^ salts)
    return (h >> 8).float() / float(1 << 24)


@dataclass(frozen=True)
class ViewRecipe:
    """What one view does; probabilities of 0 skip a step entirely."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 3
    solarize_p: float = 0.0


def view_recipes(aug: AugConfig, *, image_size: int) -> list[ViewRecipe]:
    """DINO's two global views from the config (view 1 always blurred, view 2 rarely blurred, sometimes
    solarised), then ``aug.local_crops`` small local crops (multi-crop) of ``aug.local_crop_size`` pixels.

    Blur kernel and sigma follow the image size (the reference's sigma 0.1-2.0 at 224 px, scaled), as in
    :func:`sslgraph.data.transforms.blur_sigma`.
    """
    common = dict(size=image_size, scale=(aug.crop_scale_min, aug.crop_scale_max), flip_p=aug.flip_p,
                  jitter_p=aug.jitter_p, brightness=aug.jitter_brightness, contrast=aug.jitter_contrast,
                  saturation=aug.jitter_saturation, hue=aug.jitter_hue, grayscale_p=aug.grayscale_p,
                  blur_sigma=blur_sigma(aug, image_size),
                  blur_kernel=blur_kernel_size(image_size, aug.blur_kernel_frac))
    recipes = [ViewRecipe(blur_p=aug.blur_p1, solarize_p=0.0, **common),  # type: ignore[arg-type]
               ViewRecipe(blur_p=aug.blur_p2, solarize_p=aug.solarize_p2, **common)]  # type: ignore[arg-type]
    if aug.local_crops:
        size = local_crop_size(aug, image_size=image_size)
        local = {**common, "size": size, "scale": (aug.local_crop_scale_min, aug.local_crop_scale_max),
                 "blur_sigma": blur_sigma(aug, size), "blur_kernel": blur_kernel_size(size, aug.blur_kernel_frac)}
        recipes += [ViewRecipe(blur_p=aug.local_blur_p, solarize_p=0.0, **local)  # type: ignore[arg-type]
                    for _ in range(aug.local_crops)]
    return recipes


@dataclass
class ViewParams:
    """Per-sample parameters of one view, all drawn from the hash stream (exposed for tests and pictures)."""

    boxes: Tensor       # [B, 4] integer crop box: left, top, width, height in source pixels
    flip: Tensor        # [B] bool
    jitter: Tensor      # [B] bool: colour jitter applied
    brightness: Tensor  # [B] factors (1 where not jittered)
    contrast: Tensor
    saturation: Tensor
    hue: Tensor         # [B] shift in [-hue, hue] (0 where not jittered)
    grayscale: Tensor   # [B] bool
    sigma: Tensor       # [B] blur sigma in pixels (0: no blur)
    solarize: Tensor    # [B] bool


def draw_params(recipe: ViewRecipe, keys: Tensor, *, height: int, width: int) -> ViewParams:
    """Per-sample parameters for images of ``height x width``: one draw per sample, no rejection loop.

    The crop box follows torchvision's RandomResizedCrop (area fraction uniform in ``scale``, log aspect ratio
    uniform in ``ratio``, integer box); where the box does not fit, its sides are clamped to the image instead
    of retrying, so every sample costs the same.
    """
    u = uniforms(keys).unbind(1)  # one column per slot
    area = height * width * (recipe.scale[0] + (recipe.scale[1] - recipe.scale[0]) * u[_SCALE])
    log_lo, log_hi = math.log(recipe.ratio[0]), math.log(recipe.ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[_RATIO])
    w = torch.sqrt(area * aspect).round().clamp(1, width)
    h = torch.sqrt(area / aspect).round().clamp(1, height)
    left = torch.floor(u[_LEFT] * (width - w + 1)).clamp(max=width - w)
    top = torch.floor(u[_TOP] * (height - h + 1)).clamp(max=height - h)

    def factor(slot: int, strength: float) -> Tensor:
        return 1 + strength * (2 * u[slot] - 1)

    jitter = u[_JIT_P] < recipe.jitter_p
    one = torch.ones_like(area)
    blur = u[_BLUR_P] < recipe.blur_p
    sigma = recipe.blur_sigma[0] + (recipe.blur_sigma[1] - recipe.blur_sigma[0]) * u[_SIGMA]
    return ViewParams(
        boxes=torch.stack([left, top, w, h], dim=1),
        flip=u[_FLIP] < recipe.flip_p,
        jitter=jitter,
        brightness=torch.where(jitter, factor(_BRIGHT, recipe.brightness), one),
        contrast=torch.where(jitter, factor(_CONTRAST, recipe.contrast), one),
        saturation=torch.where(jitter, factor(_SAT, recipe.saturation), one),
        hue=torch.where(jitter, recipe.hue * (2 * u[_HUE] - 1), 0 * one),
        grayscale=u[_GRAY] < recipe.grayscale_p,
        sigma=torch.where(blur, sigma, 0 * one),
        solarize=u[_SOLAR] < recipe.solarize_p,
    )


# --------------------------------------------------------------------------------------------------------------
# The operations, each on a float batch [B, 3, H, W] in [0, 1] with per-sample parameters [B].


def resample_matrix(start: Tensor, length: Tensor, *, in_size: int, out_size: int) -> Tensor:
    """``[B, out_size, in_size]`` weights that resample ``[start, start + length)`` of an axis to ``out_size``.

    Triangle (bilinear) filter whose support widens with the downscaling factor and is renormalised inside the
    crop: the weights torchvision/PIL use for ``resize(..., antialias=True)``, so upsampling equals bilinear
    interpolation of the cropped region and downsampling is antialiased.
    """
    scale = (length / out_size).unsqueeze(1)                                   # [B, 1]
    support = scale.clamp(min=1.0)
    centre = start.unsqueeze(1) + scale * (torch.arange(out_size, device=start.device, dtype=start.dtype) + 0.5)
    pixel = torch.arange(in_size, device=start.device, dtype=start.dtype) + 0.5  # pixel centres
    weight = (1 - ((pixel.view(1, 1, -1) - centre.unsqueeze(2)) / support.unsqueeze(2)).abs()).clamp(min=0)
    inside = (pixel.view(1, 1, -1) > start.view(-1, 1, 1)) & (pixel.view(1, 1, -1) < (start + length).view(-1, 1, 1))
    weight = weight * inside
    return weight / weight.sum(dim=2, keepdim=True).clamp(min=1e-12)


def resized_crop(images: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each sample's integer box, resize it to ``size`` and mirror where ``flip``: two batched matrix
    products with separable resampling matrices (no per-sample loop). Matches torchvision's ``resized_crop``
    with ``antialias=True`` followed by ``hflip``, up to rounding."""
    batch, channels, height, width = images.shape
    left, top, w, h = boxes.to(images.dtype).unbind(1)
    rows = resample_matrix(top, h, in_size=height, out_size=size)              # [B, S, H]
    cols = resample_matrix(left, w, in_size=width, out_size=size)              # [B, S, W]
    cols = torch.where(flip.view(-1, 1, 1), cols.flip(1), cols)
    # One product per sample and axis with the channels folded into the rows/columns (1.5x faster on a CPU
    # than broadcasting the matrices over the channels, which makes B*C tiny products).
    x = torch.bmm(images.reshape(batch, channels * height, width), cols.transpose(1, 2))  # [B, C*H, S]
    x = x.view(batch, channels, height, size).transpose(1, 2).reshape(batch, height, channels * size)
    x = torch.bmm(rows, x)                                                     # [B, S, C*S]
    return x.view(batch, size, channels, size).permute(0, 2, 1, 3).contiguous()


def _gray(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, as PIL and torchvision; ``[B, 1, H, W]``."""
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * images + (1 - factor) * other`` as PIL's blend, in one pass (``lerp``), clamped to [0, 1]."""
    return torch.lerp(other.expand_as(images), images, factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, _gray(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, _gray(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (fraction of a turn) per sample, through HSV as torchvision does.

    Value (the channel maximum) and the max-min spread are unchanged by a hue rotation, and value times
    saturation is that spread, so RGB comes back as ``max - spread * ramp(k)`` per channel with
    ``k = (n + 6 hue) mod 6``: no saturation, no hue in [0, 1) (the one modulo at the end covers both
    torchvision's), about half the tensor operations of the textbook conversion, and the hot spot of the
    batched views.
    """
    r, g, b = images.unbind(1)
    maxc = images.amax(dim=1)
    spread = maxc - images.amin(dim=1)
    # Grey pixels (spread 0) have every channel difference exactly 0, so any finite inverse gives them hue 0.
    inverse = spread.clamp(min=1e-30).reciprocal_()
    # Hue in sixths of a turn, up to a multiple of 6 (the modulo below removes it); (b - r) / spread + 2 as
    # (b - r + 2 spread) / spread, so the three branches share one multiply.
    sixths = torch.where(maxc == r, g - b, torch.where(maxc == g, torch.add(b - r, spread, alpha=2.0),
                                                        torch.add(r - g, spread, alpha=4.0)))
    sixths.mul_(inverse).add_(6.0 * shift.view(-1, 1, 1))
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(sixths.unsqueeze(1) + n, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return torch.addcmul(maxc.unsqueeze(1), spread.unsqueeze(1), ramp, value=-1.0)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a sigma per sample (0: unchanged), reflect padding as torchvision."""
    b, c, height, width = images.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    safe = sigma.clamp(min=1e-6).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(images.dtype).expand(b, -1)
    kernel = torch.where((sigma > 0).view(-1, 1), kernel, identity)
    weight = kernel.repeat_interleave(c, dim=0)  # [B*C, K]
    x = images.reshape(1, b * c, height, width)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), weight.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), weight.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, height, width)


def solarize(images: Tensor, mask: Tensor, threshold: float = 128 / 255) -> Tensor:
    flipped = torch.where(images >= threshold, 1 - images, images)
    return torch.where(mask.view(-1, 1, 1, 1), flipped, images)


def jitter_and_grey(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor,
                    jitter: Tensor, grayscale: Tensor, *, use_jitter: bool, use_hue: bool, use_grey: bool,
                    scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """Colour jitter, then random grayscale as a select over the whole batch (then ``x * scale + shift`` where
    given: the normalisation, for views with no blur or solarisation after these steps): the elementwise tail
    of a view in one tensor-only function, so that ``torch.compile`` (``aug.compile``) fuses its twenty-odd
    passes over the batch (the hue rotation alone is about twenty) into a few loops. Same values as eager."""
    if use_jitter:
        x = adjust_brightness(x, brightness)
        x = adjust_contrast(x, contrast)
        x = adjust_saturation(x, saturation)
        if use_hue:
            x = torch.where(jitter.view(-1, 1, 1, 1), adjust_hue(x, hue), x)
    if use_grey:
        x = torch.where(grayscale.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    if scale is not None and shift is not None:
        x = torch.addcmul(shift, x, scale)
    return x


def _cpp_compiler() -> str:
    """The C++ compiler ``torch.compile`` would call on a CPU (``CXX`` or its default)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        return str(get_cpp_compiler())
    except Exception:  # an internal of torch: fall back to what it reads
        return os.environ.get("CXX", "g++")


def missing_cpp_compiler(device: torch.device | str) -> str | None:
    """Why ``aug.compile`` cannot run on ``device`` (``None`` when it can): on a CPU ``torch.compile`` builds C++
    at the first batch and needs a compiler; on a GPU its kernels come from Triton and need none."""
    if torch.device(device).type != "cpu":
        return None
    compiler = _cpp_compiler()
    if shutil.which(compiler) is None:
        return (f"torch.compile on the CPU needs a C++ compiler and {compiler!r} was not found (install one or "
                f"point CXX at it)")
    return None


def _param_tensors(recipe: ViewRecipe, keys: Tensor, height: int, width: int) -> tuple[Tensor, ...]:
    """:func:`draw_params` as a tuple of tensors in field order, the form ``torch.compile`` fuses (about seventy
    tiny ops)."""
    p = draw_params(recipe, keys, height=height, width=width)
    return tuple(getattr(p, f.name) for f in fields(p))


def _colour(colour: Callable[..., Tensor], x: Tensor, params: ViewParams, recipe: ViewRecipe, *, grey: bool,
            scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """``colour`` (:func:`jitter_and_grey` or its compiled form) with the view's parameters and recipe; ``grey``:
    whether it also makes the grey samples."""
    return colour(x, params.brightness, params.contrast, params.saturation, params.hue, params.jitter,
                  params.grayscale, use_jitter=recipe.jitter_p > 0, use_hue=recipe.jitter_p > 0 and recipe.hue > 0,
                  use_grey=grey and recipe.grayscale_p > 0, scale=scale, shift=shift)


def apply_view(images: Tensor, params: ViewParams, recipe: ViewRecipe, *,
               fused: Callable[..., Tensor] | None = None) -> Tensor:
    """One view of a float batch in ``[0, 1]`` with the given per-sample parameters; values stay in ``[0, 1]``.

    ``fused``: the compiled :func:`jitter_and_grey` for the colour steps instead of the eager one.
    """
    x = resized_crop(images, params.boxes, params.flip, recipe.size)
    # Eager on a CPU, only the samples drawn grey (a fifth of the batch by default) are converted, in place;
    # elsewhere a select over the whole batch (indexing by a mask would make the host wait for a GPU).
    grey_in_place = fused is None and not x.is_cuda
    x = _colour(fused or jitter_and_grey, x, params, recipe, grey=not grey_in_place)
    if grey_in_place and recipe.grayscale_p > 0:
        grey = params.grayscale.nonzero().squeeze(1)
        x[grey] = _gray(x[grey]).expand(-1, 3, -1, -1)
    if recipe.blur_p > 0:
        x = gaussian_blur(x, params.sigma, recipe.blur_kernel)
    if recipe.solarize_p > 0:
        x = solarize(x, params.solarize)
    return x


class BatchAugment:
    """Makes the views of a pretraining batch on the device the images are on.

    ``recipes`` lists the views in order (e.g. two global crops, then local crops); view ``v`` of image
    ``indices[b]`` at ``epoch`` depends only on ``(seed, epoch, indices[b], v)``. ``sources`` lets a view be
    taken from another image (a bootstrapped neighbour) while keeping the key of the anchor index.

    Consecutive views of one recipe are made as one batch. ``compile=True`` runs them through ``torch.compile``:
    a recipe with no blur or solarisation as one graph (:func:`fused_views`: draw, crop, colour steps and
    normalisation), otherwise the draw and the colour steps (:func:`jitter_and_grey`). On a 2-core CPU both views
    of 256 images at 32 px took 10.6-12.2 instead of 20-21.5 ms; the first batch of each shape pays the
    compilation (about 21 s there, a few seconds from the compiler's disk cache; on a CPU it needs a C++
    compiler).
    """

    def __init__(self, recipes: Sequence[ViewRecipe], *, mean: Sequence[float], std: Sequence[float],
                 seed: int, compile: bool = False, channels_last: bool = False) -> None:
        if not recipes:
            raise ValueError("BatchAugment needs at least one view recipe")
        self.fused: Callable[..., Tensor] | None = (
            torch.compile(jitter_and_grey, dynamic=False) if compile else None)
        self._draw: Callable[..., tuple[Tensor, ...]] | None = (
            torch.compile(_param_tensors, dynamic=False) if compile else None)
        self._views: Callable[..., Tensor] | None = torch.compile(fused_views, dynamic=False) if compile else None
        self.recipes = list(recipes)
        self._groups = view_groups(self.recipes)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.seed = seed
        # Views written in the layout the network reads (ResNets: channels-last), so the step does not copy them.
        self.channels_last = channels_last
        # (x - mean) / std as one multiply-add pass: x * (1 / std) + (-mean / std).
        self._scale, self._shift = 1.0 / self.std, -self.mean / self.std

    def params(self, view: int, indices: Tensor, *, epoch: int, height: int, width: int) -> ViewParams:
        """View ``view``'s per-sample parameters for ``indices`` (for tests and pictures)."""
        keys = sample_keys(indices, seed=self.seed, epoch=epoch, view=view)
        return self._params(self.recipes[view], keys, height=height, width=width)

    def _params(self, recipe: ViewRecipe, keys: Tensor, *, height: int, width: int) -> ViewParams:
        if self._draw is not None:
            return ViewParams(*self._draw(recipe, keys, height, width))
        return draw_params(recipe, keys, height=height, width=width)

    def normalize(self, x: Tensor) -> Tensor:
        return torch.addcmul(self._shift.to(x.device), x, self._scale.to(x.device))

    def __call__(self, images: Tensor, indices: Tensor, *, epoch: int,
                 sources: Sequence[Tensor | None] | None = None) -> list[Tensor]:
        """``images`` uint8 ``[B, 3, H, W]`` (or float in [0, 1]); returns one normalised float batch per view.

        ``sources[v]``, when given, is a uint8 batch aligned with ``images`` that view ``v`` is cut from instead.
        Consecutive views of one recipe (two global views without DINO's per-view blur and solarisation, as in
        the CPU preset; the local crops) are made as one batch: the same values, a fraction of the operator calls.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        height, width = images.shape[-2:]
        indices = indices.to(images.device)
        scale, shift = self._scale.to(images.device), self._shift.to(images.device)
        views: list[Tensor] = []
        base: Tensor | None = None  # the anchor images in [0, 1], converted once for the groups of one view
        for recipe, members in self._groups:
            srcs = [images if sources is None or sources[v] is None else sources[v] for v in members]
            if len(srcs) > 1:
                src = _to_unit_float(torch.cat(srcs))
            elif srcs[0] is images:
                src = base = _to_unit_float(images) if base is None else base
            else:
                src = _to_unit_float(srcs[0])
            keys = torch.cat([sample_keys(indices, seed=self.seed, epoch=epoch, view=v) for v in members])
            if self._views is not None and recipe.blur_p == 0 and recipe.solarize_p == 0:
                # Nothing after the colour steps but the normalisation: the whole group in one compiled graph.
                x = self._views(recipe, keys, src, scale, shift, channels_last=self.channels_last)
            else:
                params = self._params(recipe, keys, height=height, width=width)
                x = self.normalize(apply_view(src, params, recipe, fused=self.fused))
                x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
            views += x.chunk(len(members))
        return views


def view_groups(recipes: Sequence[ViewRecipe]) -> list[tuple[ViewRecipe, list[int]]]:
    """Runs of consecutive equal recipes, each with its view numbers: the batches :class:`BatchAugment` makes."""
    groups: list[tuple[ViewRecipe, list[int]]] = []
    for view, recipe in enumerate(recipes):
        if groups and groups[-1][0] == recipe:
            groups[-1][1].append(view)
        else:
            groups.append((recipe, [view]))
    return groups


def fused_views(recipe: ViewRecipe, keys: Tensor, images: Tensor, scale: Tensor, shift: Tensor, *,
                channels_last: bool = False) -> Tensor:
    """Normalised views of float ``images`` for a recipe with no blur or solarisation, one per key: parameter
    draw, crop, colour steps and normalisation in one tensor-only function, which ``torch.compile``
    (``aug.compile``) makes one graph of (the crop's two batched products stay library calls). ``channels_last``:
    written in that layout (compiled, by the last kernel itself)."""
    params = draw_params(recipe, keys, height=images.shape[-2], width=images.shape[-1])
    x = resized_crop(images, params.boxes, params.flip, recipe.size)
    x = _colour(jitter_and_grey, x, params, recipe, grey=True, scale=scale, shift=shift)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def join_views(views: Sequence[Tensor]) -> Tensor:
    """``torch.cat(views)``, without the copy where the views are consecutive chunks of one tensor, as the views
    :class:`BatchAugment` makes as one group are (both global views of the CPU preset: 6 MB per step)."""
    first = views[0]
    rows = 0
    for view in views:
        if (view.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
                or view.shape[1:] != first.shape[1:] or view.stride() != first.stride()
                or view.storage_offset() != first.storage_offset() + rows * first.stride(0)):
            return torch.cat(list(views))
        rows += view.shape[0]
    return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())


def _to_unit_float(images: Tensor) -> Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()
