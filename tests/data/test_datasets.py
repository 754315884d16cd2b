from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import sslgraph.data.datasets as datasets
from sslgraph.config import DataConfig
from sslgraph.data import DataError, ImageDataset, build_dataset, decode_image
from sslgraph.data.datasets import balanced_quota


def folder_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("cache", "never")
    return DataConfig(dataset="imagefolder", root=str(root), **kw)


def expected_pixel(ds: ImageDataset, i: int, img) -> tuple[int, int, int]:
    path = Path(ds.paths[i])
    return img.pixel_value(ds.classes.index(path.parent.name), int(path.stem))


# ----------------------------------------------------------------------------------------------- classes, labels


def test_classes_sorted_and_labels_from_folders(make_tree, img):
    root = make_tree({"train": {"zebra": 3, "ant": 1, "moth": 2}, "test": {"zebra": 1, "ant": 1, "moth": 1}})
    ds = build_dataset(folder_cfg(root), "train", progress=False)
    assert ds.classes == ["ant", "moth", "zebra"]
    assert ds.targets.tolist() == [0, 1, 1, 2, 2, 2]
    assert ds.targets.dtype == torch.long and len(ds) == 6 and ds.split == "train"
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
        assert label == ds.classes.index(Path(ds.paths[i]).parent.name)
        assert tuple(image[:, 0, 0].tolist()) == expected_pixel(ds, i, img)


def test_grayscale_and_rgba_become_rgb(tmp_path, img):
    root = tmp_path / "data"
    gray = np.full((6, 5), 77, dtype=np.uint8)
    rgba = np.dstack([img.solid((6, 5), (1, 2, 3)), np.full((6, 5), 255, dtype=np.uint8)])
    for split in ("train", "test"):
        img.write(root / split / "a" / "gray.png", gray, mode="L")
        img.write(root / split / "a" / "rgba.png", rgba, mode="RGBA")
    ds = build_dataset(folder_cfg(root), "train", progress=False)
    assert ds.load(0).shape == (3, 6, 5) and bool((ds.load(0) == 77).all())
    assert ds.load(1)[:, 0, 0].tolist() == [1, 2, 3]


def test_extensions_case_insensitive_and_other_files_ignored(tmp_path, img):
    root = tmp_path / "data"
    for split in ("train", "test"):
        img.write(root / split / "a" / "x.JPEG", img.solid(8, (0, 0, 0)))
        img.write(root / split / "a" / "y.Png", img.solid(8, (0, 0, 0)))
        (root / split / "a" / "notes.txt").write_text("not an image")
    ds = build_dataset(folder_cfg(root), "train", progress=False)
    assert [Path(p).name for p in ds.paths] == ["x.JPEG", "y.Png"]


def test_class_list_orders_and_selects(make_tree, tmp_path):
    root = make_tree({"train": {"ant": 2, "bee": 1, "cat": 3}, "test": {"ant": 1, "bee": 1, "cat": 1}})
    listing = tmp_path / "classes.txt"
    listing.write_text("# my classes\n\ncat\n  ant  \n")
    ds = build_dataset(folder_cfg(root, class_list=str(listing)), "train", progress=False)
    assert ds.classes == ["cat", "ant"]
    assert ds.targets.tolist() == [0, 0, 0, 1, 1]
    assert all(Path(p).parent.name == ds.classes[t] for p, t in zip(ds.paths, ds.targets.tolist()))


def test_class_list_unknown_class_names_class_and_file(make_tree, tmp_path):
    root = make_tree({"train": {"ant": 1}, "test": {"ant": 1}})
    listing = tmp_path / "classes.txt"
    listing.write_text("ant\nwombat\n")
    with pytest.raises(DataError, match=r"wombat.*classes\.txt"):
        build_dataset(folder_cfg(root, class_list=str(listing)), "train", progress=False)


def test_train_and_test_classes_must_match(make_tree):
    root = make_tree({"train": {"ant": 1, "bee": 1}, "test": {"ant": 1, "cow": 1}})
    with pytest.raises(DataError, match=r"only in train: \['bee'\], only in test: \['cow'\]"):
        build_dataset(folder_cfg(root), "test", progress=False)


def test_auto_test_split_falls_back_to_val(make_tree):
    root = make_tree({"train": {"ant": 2}, "val": {"ant": 1}})
    ds = build_dataset(folder_cfg(root), "test", progress=False)
    assert ds.split == "test" and len(ds) == 1 and "val" in Path(ds.paths[0]).parts


def test_missing_split_folder(make_tree):
    root = make_tree({"train": {"ant": 1}})
    with pytest.raises(DataError, match=r"data\.test_split: split folder .*test does not exist"):
        build_dataset(folder_cfg(root), "test", progress=False)


def test_empty_class_folder_is_named(make_tree):
    root = make_tree({"train": {"ant": 1}, "test": {"ant": 1}})
    (root / "train" / "bee").mkdir()
    (root / "test" / "bee").mkdir()
    with pytest.raises(DataError, match=r"2 class folders are empty \(no image files\): .*train.bee, .*test.bee"):
        build_dataset(folder_cfg(root), "train", progress=False)


def test_class_folder_without_images_is_named(make_tree):
    root = make_tree({"train": {"ant": 1}, "test": {"ant": 1}})
    for split in ("train", "test"):
        (root / split / "bee").mkdir()
        (root / split / "bee" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folders are empty \(no image files\): .*train.bee"):
        build_dataset(folder_cfg(root), "train", progress=False)


# ------------------------------------------------------------------------------------------------------ subsets


def round_robin_quota(counts: list[int], n: int) -> list[int]:
    """Brute force: deal one image per class in class order until n are dealt."""
    quota = [0] * len(counts)
    while sum(quota) < n:
        for c in range(len(counts)):
            if quota[c] < counts[c] and sum(quota) < n:
                quota[c] += 1
    return quota


def test_balanced_quota_hand_values():
    assert balanced_quota(torch.tensor([5, 5, 5]), 7).tolist() == [3, 2, 2]
    assert balanced_quota(torch.tensor([1, 5, 5]), 5).tolist() == [1, 2, 2]
    assert balanced_quota(torch.tensor([4, 0, 4]), 8).tolist() == [4, 0, 4]


def test_balanced_quota_matches_round_robin():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        counts = torch.randint(0, 7, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen)
        if int(counts.sum()) == 0:
            continue
        n = int(torch.randint(1, int(counts.sum()) + 1, (1,), generator=gen))
        assert balanced_quota(counts, n).tolist() == round_robin_quota(counts.tolist(), n)


def test_subset_takes_first_files_per_class(make_tree):
    root = make_tree({"train": {"ant": 4, "bee": 4, "cat": 2}, "test": {"ant": 1, "bee": 1, "cat": 1}})
    ds = build_dataset(folder_cfg(root, train_subset=7), "train", progress=False)
    assert torch.bincount(ds.targets).tolist() == [3, 2, 2]
    names = [f"{Path(p).parent.name}/{Path(p).name}" for p in ds.paths]
    assert names == ["ant/000.png", "ant/001.png", "ant/002.png", "bee/000.png", "bee/001.png",
                     "cat/000.png", "cat/001.png"]


def test_subset_larger_than_split_names_the_key(make_tree):
    root = make_tree({"train": {"ant": 2}, "test": {"ant": 2}})
    with pytest.raises(DataError, match=r"data\.test_subset: asks for 3 images but the split has only 2"):
        build_dataset(folder_cfg(root, test_subset=3), "test", progress=False)


# -------------------------------------------------------------------------------------------------------- cache


def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = datasets.decode_image

    def counting(path):
        calls.append(str(path))
        return original(path)

    monkeypatch.setattr(datasets, "decode_image", counting)
    return calls


def test_cache_round_trip_and_reuse(make_tree, tmp_path, monkeypatch, img):
    root = make_tree({"train": {"ant": 3, "bee": 2}, "test": {"ant": 1, "bee": 1}})
    cfg = folder_cfg(root, cache="always", cache_dir=str(tmp_path / "cache"))
    calls = count_decodes(monkeypatch)
    first = build_dataset(cfg, "train", progress=False)
    assert len(calls) == 5 and first.images is not None and first.images.shape == (5, 3, 8, 8)
    assert len(list((tmp_path / "cache").glob("train-*.pt"))) == 1
    for i in range(len(first)):
        assert torch.equal(first.load(i), decode_image(first.paths[i]))
        assert tuple(first.load(i)[:, 0, 0].tolist()) == expected_pixel(first, i, img)

    calls.clear()
    second = build_dataset(cfg, "train", progress=False)
    assert calls == []
    assert torch.equal(second.images, first.images) and torch.equal(second.targets, first.targets)
    assert second.paths == first.paths


def test_cache_rebuilt_when_a_file_changes(make_tree, tmp_path, monkeypatch, img):
    root = make_tree({"train": {"ant": 2}, "test": {"ant": 1}})
    cfg = folder_cfg(root, cache="auto", cache_dir=str(tmp_path / "cache"))
    build_dataset(cfg, "train", progress=False)
    changed = root / "train" / "ant" / "001.png"
    img.write(changed, img.solid(8, (250, 1, 2)))
    os.utime(changed, ns=(1, 1))
    calls = count_decodes(monkeypatch)
    ds = build_dataset(cfg, "train", progress=False)
    assert len(calls) == 2 and ds.load(1)[:, 0, 0].tolist() == [250, 1, 2]


def test_cache_loaded_with_a_different_subset_is_keyed_separately(make_tree, tmp_path):
    root = make_tree({"train": {"ant": 3, "bee": 3}, "test": {"ant": 1, "bee": 1}})
    base = dict(cache="always", cache_dir=str(tmp_path / "cache"))
    full = build_dataset(folder_cfg(root, **base), "train", progress=False)
    part = build_dataset(folder_cfg(root, train_subset=2, **base), "train", progress=False)
    assert len(part) == 2 and torch.equal(part.images, full.images[[0, 3]])


def test_default_cache_dir_in_root_and_fallback(make_tree, tmp_path, monkeypatch):
    root = make_tree({"train": {"ant": 2}, "test": {"ant": 1}})
    build_dataset(folder_cfg(root, cache="always"), "train", progress=False)
    assert len(list((root / ".sslgraph_cache").glob("train-*.pt"))) == 1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    blocked = make_tree({"train": {"ant": 2}, "test": {"ant": 1}}, root=tmp_path / "blocked")
    (blocked / ".sslgraph_cache").write_text("a file, so the folder cannot be created")
    build_dataset(folder_cfg(blocked, cache="always"), "train", progress=False)
    assert len(list((tmp_path / "xdg" / "sslgraph").glob("train-*.pt"))) == 1


def test_read_only_root_is_never_written_even_by_root(make_tree, tmp_path, monkeypatch):
    root = make_tree({"train": {"ant": 2}, "test": {"ant": 1}}, root=tmp_path / "readonly")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(0o555)
    try:
        build_dataset(folder_cfg(root, cache="always"), "train", progress=False)
        assert not (root / ".sslgraph_cache").exists()
    finally:
        root.chmod(0o755)
    assert len(list((tmp_path / "xdg" / "sslgraph").glob("train-*.pt"))) == 1


def test_mixed_sizes_auto_is_lazy_always_errors(tmp_path, img):
    root = tmp_path / "data"
    for split in ("train", "test"):
        img.write(root / split / "a" / "0.png", img.solid(8, (1, 1, 1)))
        img.write(root / split / "a" / "1.png", img.solid(32, (2, 2, 2)))
    ds = build_dataset(folder_cfg(root, cache="auto", cache_dir=str(tmp_path / "c")), "train", progress=False)
    assert ds.images is None and ds.load(0).shape == (3, 8, 8) and ds.load(1).shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"data\.cache=always needs images of one size.*1\.png.*0\.png"):
        build_dataset(folder_cfg(root, cache="always", cache_dir=str(tmp_path / "c")), "train", progress=False)


def test_cache_never_is_lazy(make_tree):
    root = make_tree({"train": {"ant": 2}, "test": {"ant": 1}})
    ds = build_dataset(folder_cfg(root, cache="never"), "train", progress=False)
    assert ds.images is None and not (root / ".sslgraph_cache").exists()


# ------------------------------------------------------------------------------------------------ corrupt files


def corrupt_tree(make_tree) -> tuple[Path, Path]:
    root = make_tree({"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}})
    bad = root / "train" / "ant" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root, bad


@pytest.mark.parametrize("cache", ["always", "never"])
def test_corrupt_file_is_named(make_tree, tmp_path, cache):
    root, bad = corrupt_tree(make_tree)
    cfg = folder_cfg(root, cache=cache, cache_dir=str(tmp_path / "c"))
    # Lazily decoded splits are checked up front too, so the error comes before training, not in a worker.
    with pytest.raises(DataError, match=f"cannot read 1 image in {bad.parent.parent}: {bad}; .*data.skip_corrupt=true"):
        build_dataset(cfg, "train", progress=False)


@pytest.mark.parametrize("cache", ["always", "never"])
def test_skip_corrupt_counts_and_warns(make_tree, tmp_path, caplog, cache):
    root, bad = corrupt_tree(make_tree)
    cfg = folder_cfg(root, cache=cache, cache_dir=str(tmp_path / "c"), skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="sslgraph.data.datasets"):
        ds = build_dataset(cfg, "train", progress=False)
    assert ds.skipped == [str(bad)] and len(ds) == 3
    assert ds.targets.tolist() == [0, 1, 1] and str(bad) not in ds.paths
    assert [ds.load(i).shape for i in range(3)] == [(3, 8, 8)] * 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 unreadable" in warnings[0].getMessage()
    assert str(bad) in warnings[0].getMessage()


def test_cache_with_skipped_file_refused_without_skip_corrupt(make_tree, tmp_path):
    root, bad = corrupt_tree(make_tree)
    cache = str(tmp_path / "c")
    build_dataset(folder_cfg(root, cache="always", cache_dir=cache, skip_corrupt=True), "train", progress=False)
    with pytest.raises(DataError, match=f"cannot read 1 image in .*: {bad}"):
        build_dataset(folder_cfg(root, cache="always", cache_dir=cache), "train", progress=False)


# ------------------------------------------------------------------------------------------------------ CIFAR-10


def test_cifar_pickle_layout(cifar_batches):
    train_labels = [2, 0, 1, 1, 0, 2, 2, 0, 1, 0]
    root, data, labels = cifar_batches(train_labels, [1, 0, 2], ["plane", "car", "bird"])
    cfg = DataConfig(dataset="cifar10", root=str(root))
    ds = build_dataset(cfg, "train", progress=False)
    assert ds.classes == ["plane", "car", "bird"] and ds.paths is None
    assert ds.targets.tolist() == train_labels
    assert ds.images.shape == (10, 3, 32, 32) and ds.images.dtype == torch.uint8
    k = 6
    assert torch.equal(ds.load(k), torch.from_numpy(data["train"][k].reshape(3, 32, 32)))
    assert ds[k][1] == 2
    test = build_dataset(cfg, "test", progress=False)
    assert test.targets.tolist() == [1, 0, 2] and len(test) == 3


def test_cifar_pickle_subset_and_class_list(cifar_batches, tmp_path):
    root, data, _ = cifar_batches([2, 0, 1, 1, 0, 2, 2, 0, 1, 0], [1, 0, 2], ["plane", "car", "bird"])
    ds = build_dataset(DataConfig(root=str(root), train_subset=4), "train", progress=False)
    assert ds.targets.tolist() == [2, 0, 1, 0]
    assert torch.equal(ds.images[0], torch.from_numpy(data["train"][0].reshape(3, 32, 32)))
    listing = tmp_path / "two.txt"
    listing.write_text("bird\nplane\n")
    ds = build_dataset(DataConfig(root=str(root), class_list=str(listing)), "train", progress=False)
    assert ds.classes == ["bird", "plane"] and ds.targets.tolist() == [0, 1, 1, 0, 0, 1, 1]


def test_cifar_found_under_parent_of_cifar10_folder(make_tree, tmp_path, monkeypatch):
    make_tree({"train": {"cat": 2, "dog": 1}, "test": {"cat": 1, "dog": 1}}, root=tmp_path / "shared" / "cifar10")
    monkeypatch.setenv("SSLGRAPH_DATA", str(tmp_path / "shared"))
    ds = build_dataset(DataConfig(dataset="cifar10", cache="never"), "train", progress=False)
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [0, 0, 1]


def test_cifar_missing_names_both_layouts_and_download(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*image-folder.*data\.download=true"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "empty")), "train", progress=False)


def test_cifar_pickle_refuses_code(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [Path("x")]}))
    with pytest.raises(DataError, match=r"batches\.meta.*refusing to load"):
        build_dataset(DataConfig(root=str(tmp_path / "cifar")), "train", progress=False)


# ------------------------------------------------------------------------------------------------------ real data


def test_real_cifar10_subset(tmp_path):
    data_root = os.environ.get("SSLGRAPH_DATA")
    if not data_root:
        pytest.skip("SSLGRAPH_DATA is not set; it should point at the folder holding cifar10/")
    cfg = DataConfig(dataset="cifar10", root=str(Path(data_root) / "cifar10"), train_subset=200,
                     cache_dir=str(tmp_path / "cache"))
    ds = build_dataset(cfg, "train", progress=False)
    assert len(ds) == 200 and len(ds.classes) == 10
    assert torch.bincount(ds.targets, minlength=10).tolist() == [20] * 10
    assert ds.images is not None and ds.images.shape == (200, 3, 32, 32)
    image, label = ds[57]
    assert image.dtype == torch.uint8 and label == ds.classes.index(Path(ds.paths[57]).parent.name)
