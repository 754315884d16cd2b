"""Odd image files decode to the 8-bit RGB a viewer shows, every Pillow format is found in a folder, and a split
with broken files or empty classes is reported as a whole (or, with data.skip_corrupt, cleaned with a count)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslgraph.config import DataConfig
from sslgraph.data import build_dataset, decode_image
from sslgraph.data.datasets import IMAGE_EXTENSIONS, dataset_fingerprint
from sslgraph.errors import DataError, UnreadableImagesError


def folder_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("cache", "never")
    return DataConfig(dataset="imagefolder", root=str(root), **kw)


def rgb(path: Path) -> np.ndarray:
    """Decoded pixels as ``[H, W, 3]`` int (signed, so differences are safe)."""
    return decode_image(path).permute(1, 2, 0).numpy().astype(int)


# ------------------------------------------------------------------------------------------------ one file each


def test_sixteen_bit_grayscale_is_scaled_not_clipped_white(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 4).reshape(4, 64).astype(np.uint16)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"depth16{suffix}"
        Image.fromarray(ramp).save(path)
        assert Image.open(path).mode.startswith("I")
        pixels = rgb(path)
        assert pixels.shape == (4, 64, 3) and (pixels[..., 0] == pixels[..., 2]).all()
        expected = np.rint(ramp / 65535 * 255)
        assert np.abs(pixels[..., 0] - expected).max() <= 1, suffix
        assert pixels.min() == 0 and pixels.max() == 255 and (pixels < 250).mean() > 0.9


def test_float_image_in_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32)).save(path)
    assert (rgb(path) == 128).all()


def test_cmyk_tiff_and_jpeg(tmp_path: Path) -> None:
    red = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    red.save(tmp_path / "red.tif")
    red.save(tmp_path / "red.jpg", quality=95)
    assert (rgb(tmp_path / "red.tif") == [255, 0, 0]).all()
    assert np.abs(rgb(tmp_path / "red.jpg") - [255, 0, 0]).max() <= 8


def test_transparency_is_laid_over_white(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 4), dtype=np.uint8)
    pixels[..., :3] = (10, 20, 30)
    pixels[0, :, 3] = 255  # opaque row
    pixels[1, :, 3] = 0  # transparent row: the stored colour is not what a viewer shows
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "rgba.png")
    decoded = rgb(tmp_path / "rgba.png")
    assert (decoded[0] == [10, 20, 30]).all() and (decoded[1] == 255).all()

    gray_alpha = Image.fromarray(np.dstack([np.full((2, 2), 0, np.uint8), np.full((2, 2), 128, np.uint8)]),
                                 mode="LA")
    gray_alpha.save(tmp_path / "la.png")
    assert np.abs(rgb(tmp_path / "la.png") - 127).max() <= 1  # black at half opacity over white


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "palette.png")
    decoded = rgb(tmp_path / "palette.png")
    assert (decoded[1, 1] == [200, 30, 40]).all() and (decoded[0, 0] == 0).all()
    image.save(tmp_path / "transparent.png", transparency=0)
    assert (rgb(tmp_path / "transparent.png")[0, 0] == 255).all()


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(tmp_path / "anim.gif") as check:
        assert check.n_frames == 3
    decoded = rgb(tmp_path / "anim.gif")
    assert np.abs(decoded - [250, 0, 0]).max() <= 8


def test_bilevel_tiny_and_large_images(tmp_path: Path) -> None:
    bits = np.zeros((4, 4), dtype=bool)
    bits[:2] = True
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    decoded = rgb(tmp_path / "bits.png")
    assert (decoded[:2] == 255).all() and (decoded[2:] == 0).all()

    Image.new("RGB", (1, 1), (7, 8, 9)).save(tmp_path / "one.png")
    assert decode_image(tmp_path / "one.png").shape == (3, 1, 1)
    assert rgb(tmp_path / "one.png")[0, 0].tolist() == [7, 8, 9]

    Image.new("RGB", (3000, 2000), (90, 160, 30)).save(tmp_path / "large.jpg", quality=90)
    large = decode_image(tmp_path / "large.jpg")
    assert large.shape == (3, 2000, 3000) and large.dtype == torch.uint8
    assert (large[:, 1000, 1500].int() - torch.tensor([90, 160, 30])).abs().max() <= 4


# ------------------------------------------------------------------------------------------------ folders


def test_every_pillow_format_is_part_of_the_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert {".gif", ".tif", ".tiff", ".webp", ".bmp", ".png", ".jpg", ".jpeg", ".ppm"} <= set(IMAGE_EXTENSIONS)
    root = tmp_path / "data"
    suffixes = (".gif", ".tif", ".tiff", ".webp", ".bmp", ".ppm", ".JPG")
    for split in ("train", "test"):
        folder = root / split / "a"
        folder.mkdir(parents=True)
        for k, suffix in enumerate(suffixes):
            Image.new("RGB", (8, 8), (30 * k, 10, 10)).save(folder / f"{k}{suffix}")
        (folder / "labels.csv").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="sslgraph.data.datasets"):
        ds = build_dataset(folder_cfg(root), "train", progress=False)
    assert len(ds) == len(suffixes), "no format is left out"
    assert any("ignored 1 files" in r.getMessage() and "a/labels.csv" in r.getMessage() for r in caplog.records)


def _broken_tree(make_tree) -> tuple[Path, list[Path]]:
    root = make_tree({"train": {"ant": 4, "bee": 4}, "test": {"ant": 1, "bee": 1}})
    broken = [root / "train" / name for name in ("ant/001.png", "bee/000.png", "bee/003.png")]
    for path in broken:
        path.write_bytes(path.read_bytes()[:40])  # cut short: the header reads, the pixels do not
    return root, broken


@pytest.mark.parametrize("cache", ["always", "never"])
def test_every_unreadable_file_is_reported_at_once(make_tree, tmp_path: Path, cache: str) -> None:
    root, broken = _broken_tree(make_tree)
    with pytest.raises(UnreadableImagesError, match=r"cannot read 3 images in .*train: .*ant/001\.png") as info:
        build_dataset(folder_cfg(root, cache=cache, cache_dir=str(tmp_path / "c")), "train", progress=False)
    assert info.value.paths == [str(p) for p in broken] and info.value.split == "train"


def test_skip_corrupt_leaves_out_every_unreadable_file(make_tree, tmp_path: Path) -> None:
    root, broken = _broken_tree(make_tree)
    ds = build_dataset(folder_cfg(root, skip_corrupt=True), "train", progress=False)
    assert ds.skipped == [str(p) for p in broken] and len(ds) == 5 and ds.targets.tolist() == [0, 0, 0, 1, 1]


def test_empty_class_folder_only_in_train_is_named_as_empty(make_tree, caplog: pytest.LogCaptureFixture) -> None:
    root = make_tree({"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}})
    (root / "train" / "cow").mkdir()
    for split in ("train", "test"):
        with pytest.raises(DataError, match=r"1 class folder is empty \(no image files\): .*train.cow; "):
            build_dataset(folder_cfg(root), split, progress=False)
    with caplog.at_level(logging.WARNING, logger="sslgraph.data.datasets"):
        train = build_dataset(folder_cfg(root, skip_corrupt=True), "train", progress=False)
        test = build_dataset(folder_cfg(root, skip_corrupt=True), "test", progress=False)
    assert train.classes == test.classes == ["ant", "bee"] and len(train) == 4
    (root / "test" / "cow").mkdir()
    (root / "test" / "bee" / "000.png").rename(root / "test" / "cow" / "000.png")  # cow: held-out images only
    test = build_dataset(folder_cfg(root, skip_corrupt=True), "test", progress=False)
    assert test.classes == ["ant", "bee"] and len(test) == 1, "a class without training images is left out"
    assert any("left out 1 empty class folder" in r.getMessage() and "cow" in r.getMessage() for r in caplog.records)


def test_class_empty_only_in_the_held_out_split_is_kept_with_skip_corrupt(make_tree) -> None:
    root = make_tree({"train": {"ant": 2, "bee": 2}, "test": {"ant": 1}})
    (root / "test" / "bee").mkdir()
    test = build_dataset(folder_cfg(root, skip_corrupt=True), "test", progress=False)
    assert test.classes == ["ant", "bee"] and test.targets.tolist() == [0]


def test_fingerprint_follows_the_file_list_not_the_root(make_tree, tmp_path: Path) -> None:
    layout = {"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}}
    one = build_dataset(folder_cfg(make_tree(layout, root=tmp_path / "one")), "train", progress=False)
    moved = build_dataset(folder_cfg(make_tree(layout, root=tmp_path / "two")), "train", progress=False)
    assert dataset_fingerprint(one) == dataset_fingerprint(moved)
    (tmp_path / "two" / "train" / "bee" / "001.png").rename(tmp_path / "two" / "train" / "bee" / "009.png")
    renamed = build_dataset(folder_cfg(tmp_path / "two"), "train", progress=False)
    assert dataset_fingerprint(renamed)["files"] != dataset_fingerprint(one)["files"]
    assert dataset_fingerprint(renamed)["size"] == 4
