"""Per-image transforms: the deterministic evaluation transform and the two DINO crops image by image.

The training loop makes its views in batches on the device (:mod:`sslgraph.data.batch_aug`);
:class:`TwoCropTransform` is the same recipe per image with ``torchvision.transforms.v2`` (the reference the
batched views are tested against, and what a user with a per-image ``DataLoader`` pipeline can use). Its
randomness comes from torch's global CPU generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

from sslgraph.config import AugConfig, DataConfig

# Solarisation threshold 128 on the uint8 scale, expressed on the [0, 1] float scale the pipeline works in.
SOLARIZE_THRESHOLD = 128 / 255
# Blur sigma range of the reference at its 224 px input; scaled to other sizes unless aug.blur_sigma_max is set.
BLUR_SIGMA = (0.1, 2.0)
BLUR_REFERENCE_SIZE = 224
# ImageNet convention: resize to image_size / 0.875 (224 -> 256), then centre-crop image_size.
IMAGENET_CROP_RATIO = 0.875


def blur_kernel_size(image_size: int, frac: float) -> int:
    """Odd Gaussian-blur kernel of about ``frac * image_size`` pixels, at least 3."""
    size = max(3, int(round(frac * image_size)))
    return size if size % 2 == 1 else size + 1


def blur_sigma(aug: AugConfig, image_size: int) -> tuple[float, float]:
    """Sigma range in pixels: the reference's range relative to the image side, or ``aug.blur_sigma_max``."""
    top = aug.blur_sigma_max if aug.blur_sigma_max is not None else BLUR_SIGMA[1] * image_size / BLUR_REFERENCE_SIZE
    return min(BLUR_SIGMA[0], top), top


def _view(
    aug: AugConfig, *, image_size: int, blur_p: float, solarize_p: float, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """One crop recipe; steps with probability 0 are left out so they cost nothing."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=(aug.crop_scale_min, aug.crop_scale_max), antialias=True),
        v2.RandomHorizontalFlip(p=aug.flip_p),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if aug.jitter_p > 0:
        jitter = v2.ColorJitter(brightness=aug.jitter_brightness, contrast=aug.jitter_contrast,
                                saturation=aug.jitter_saturation, hue=aug.jitter_hue)
        steps.append(v2.RandomApply([jitter], p=aug.jitter_p))
    if aug.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=aug.grayscale_p))
    if blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(image_size, aug.blur_kernel_frac), sigma=blur_sigma(aug, image_size))
        steps.append(v2.RandomApply([blur], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=solarize_p))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


class TwoCropTransform:
    """Crop 1 from ``x_i`` (always blurred), crop 2 from ``x~_i`` (rarely blurred, sometimes solarised).

    ``x~_i`` is ``x_i`` itself or a bootstrapped neighbour; the recipes differ so the two views are asymmetric,
    as in DINO's two global crops.
    """

    def __init__(self, aug: AugConfig, *, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.crop1 = _view(aug, image_size=image_size, blur_p=aug.blur_p1, solarize_p=0.0, mean=mean, std=std)
        self.crop2 = _view(aug, image_size=image_size, blur_p=aug.blur_p2, solarize_p=aug.solarize_p2,
                           mean=mean, std=std)

    def __call__(self, img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.crop1(img1), self.crop2(img2)


def eval_transform(data_cfg: DataConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic resize + centre crop + normalise.

    CIFAR-10 is resized so its shorter side equals ``image_size`` (the identity at 32 px); other data follow the
    ImageNet convention of resizing to ``image_size / 0.875`` before the centre crop.
    """
    ratio = 1.0 if data_cfg.dataset == "cifar10" else IMAGENET_CROP_RATIO
    return v2.Compose([
        v2.Resize(int(data_cfg.image_size / ratio), antialias=True),
        v2.CenterCrop(data_cfg.image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(data_cfg.mean), std=list(data_cfg.std)),
    ])
