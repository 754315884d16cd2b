from __future__ import annotations

import pytest
import torch

from sslgraph.config import AugConfig, DataConfig
from sslgraph.data import TwoCropTransform, eval_transform
from sslgraph.data.transforms import blur_kernel_size, blur_sigma

MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]


def normalised(x: torch.Tensor) -> torch.Tensor:
    """Hand reference for ToDtype(scale=True) + Normalize."""
    return (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def plain_aug(**kw) -> AugConfig:
    """Every step off and the crop covering the whole (square) image, so single steps can be checked."""
    values = dict(crop_scale_min=1.0, crop_scale_max=1.0, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
                  blur_p1=0.0, blur_p2=0.0, solarize_p2=0.0)
    values.update(kw)
    return AugConfig(**values)


@pytest.mark.parametrize(("in_size", "out_size"), [(32, 32), (8, 16), (40, 24)])
def test_two_crops_shapes_and_dtypes(in_size, out_size):
    torch.manual_seed(0)
    t = TwoCropTransform(AugConfig(), image_size=out_size, mean=MEAN, std=STD)
    img1 = torch.randint(0, 256, (3, in_size, in_size), dtype=torch.uint8)
    img2 = torch.randint(0, 256, (3, in_size, in_size + 3), dtype=torch.uint8)
    crop1, crop2 = t(img1, img2)
    assert crop1.shape == crop2.shape == (3, out_size, out_size)
    assert crop1.dtype == crop2.dtype == torch.float32
    assert img1.dtype == torch.uint8


def test_blur_kernel_size_is_odd_and_at_least_three():
    assert blur_kernel_size(32, 0.1) == 3
    assert blur_kernel_size(8, 0.1) == 3
    assert blur_kernel_size(100, 0.1) == 11
    assert blur_kernel_size(224, 0.1) == 23


def test_identity_recipe_only_normalises():
    x = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8)
    crop1, crop2 = TwoCropTransform(plain_aug(), image_size=12, mean=MEAN, std=STD)(x, x)
    torch.testing.assert_close(crop1, normalised(x))
    torch.testing.assert_close(crop2, normalised(x))


def test_solarize_only_on_crop2_at_threshold_128():
    x = torch.tensor([0, 127, 128, 200, 255], dtype=torch.uint8).repeat(3, 5, 1)
    crop1, crop2 = TwoCropTransform(plain_aug(solarize_p2=1.0), image_size=5, mean=MEAN, std=STD)(x, x)
    solarized = torch.tensor([0, 127, 127, 55, 0], dtype=torch.uint8).repeat(3, 5, 1)
    torch.testing.assert_close(crop2, normalised(solarized))
    torch.testing.assert_close(crop1, normalised(x))


def test_blur_p1_always_blurs_crop1_and_blur_p2_zero_keeps_crop2():
    x = torch.zeros(3, 9, 9, dtype=torch.uint8)
    x[:, ::2, ::2] = 255
    torch.manual_seed(0)
    aug = plain_aug(blur_p1=1.0, blur_sigma_max=2.0)
    crop1, crop2 = TwoCropTransform(aug, image_size=9, mean=MEAN, std=STD)(x, x)
    torch.testing.assert_close(crop2, normalised(x))
    assert crop1.std() < normalised(x).std()


def test_blur_sigma_is_the_reference_range_relative_to_224_px_unless_set():
    assert blur_sigma(AugConfig(), 224) == (0.1, 2.0)
    low, high = blur_sigma(AugConfig(), 32)
    assert high == pytest.approx(2.0 * 32 / 224) and low == 0.1
    assert blur_sigma(AugConfig(blur_sigma_max=1.5), 32) == (0.1, 1.5)
    assert blur_sigma(AugConfig(blur_sigma_max=0.05), 32) == (0.05, 0.05)


def test_grayscale_makes_channels_equal_before_normalising():
    x = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    one = [1.0, 1.0, 1.0]
    crop1, _ = TwoCropTransform(plain_aug(grayscale_p=1.0), image_size=8, mean=[0.0] * 3, std=one)(x, x)
    assert torch.allclose(crop1[0], crop1[1]) and torch.allclose(crop1[1], crop1[2])


def test_eval_transform_cifar_is_identity_resize():
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    cfg = DataConfig(dataset="cifar10", image_size=32, mean=MEAN, std=STD)
    torch.testing.assert_close(eval_transform(cfg)(x), normalised(x))


def test_eval_transform_imagenet_convention():
    cfg = DataConfig(dataset="imagefolder", image_size=16, mean=MEAN, std=STD)
    x = torch.zeros(3, 30, 40, dtype=torch.uint8)
    x[:, 10:20, 14:26] = 255
    out = eval_transform(cfg)(x)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, eval_transform(cfg)(x))
    # Resized to shorter side int(16 / 0.875) = 18 (30x40 -> 18x24), centre crop 16: the bright block
    # (rows 6..12 and columns 8..16 at 18x24) lands at rows 5..11 and columns 4..12 of the crop.
    bright = out[0] > 0
    assert bool(bright[7, 8]) and not bool(bright[0, 0]) and not bool(bright[15, 15])


def test_cifar_upsampled_to_224_for_eval():
    cfg = DataConfig(dataset="cifar10", image_size=224, mean=MEAN, std=STD)
    out = eval_transform(cfg)(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert out.shape == (3, 224, 224)
