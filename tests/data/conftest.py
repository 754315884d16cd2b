"""Tiny image trees written with PIL, so the data layer is tested on real files without the real data."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.synthetic import solid, write_image


def pixel_value(label: int, item: int) -> tuple[int, int, int]:
    """A colour that identifies (class, file), so a loaded image tells which file it came from."""
    return 40 * label + 10, 16 * item + 5, 200


@pytest.fixture
def img() -> SimpleNamespace:
    """The image helpers above, for tests that write their own files."""
    return SimpleNamespace(pixel_value=pixel_value, solid=solid, write=write_image)


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """``make_tree({"train": {"cat": 3, "ant": 2}, "test": {...}}, size=8)`` writes solid-colour PNGs
    ``<split>/<class>/<k>.png`` whose colour is :func:`pixel_value` (label in sorted class order, k)."""

    def build(layout: dict[str, dict[str, int]], *, size: int = 8, root: Path | None = None) -> Path:
        root = root or tmp_path / "data"
        for split, classes in layout.items():
            for label, name in enumerate(sorted(classes)):
                for k in range(classes[name]):
                    write_image(root / split / name / f"{k:03d}.png", solid(size, pixel_value(label, k)))
        return root

    return build


@pytest.fixture
def cifar_batches(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """A fake ``cifar-10-batches-py`` in the real pickle format with random pixels and chosen labels."""

    def build(train_labels: list[int], test_labels: list[int], names: list[str]):
        root = tmp_path / "cifar"
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        data = {split: rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
                for split, labels in (("train", train_labels), ("test", test_labels))}
        labels = {"train": np.array(train_labels), "test": np.array(test_labels)}
        chunks = np.array_split(np.arange(len(train_labels)), 5)
        files = [(f"data_batch_{k + 1}", "train", idx) for k, idx in enumerate(chunks)]
        files.append(("test_batch", "test", np.arange(len(test_labels))))
        for name, split, idx in files:
            batch = {"batch_label": name, "labels": [int(v) for v in labels[split][idx]],
                     "data": data[split][idx], "filenames": [f"{i}.png" for i in idx]}
            with open(folder / name, "wb") as handle:
                pickle.dump(batch, handle, protocol=2)
        with open(folder / "batches.meta", "wb") as handle:
            pickle.dump({"label_names": names, "num_cases_per_batch": len(chunks[0]), "num_vis": 3072}, handle,
                        protocol=2)
        return root, data, labels

    return build
