"""Image files written with PIL, so the data layer, the training loop and the pipeline run on real files
without the real data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def solid(size: int | tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
    height, width = (size, size) if isinstance(size, int) else size
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


def cifar_like_tree(root: Path, *, train_per_class: int = 12, test_per_class: int = 5, size: int = 32,
                    seed: int = 0) -> Path:
    """``root/cifar10/{train,test}/<class>/*.png`` like the CIFAR-10 image-folder copy: ten classes, each a
    colour of its own under per-image noise, so neighbours and kNN accuracy mean something. Returns ``root``
    (the folder holding ``cifar10/``, as ``$SSLGRAPH_DATA``)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(len(CIFAR_CLASSES), 3))
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CIFAR_CLASSES):
            for k in range(per_class):
                noise = rng.normal(0.0, 40.0, size=(size, size, 3))
                pixels = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
                write_image(root / "cifar10" / split / name / f"{k:04d}.png", pixels)
    return root
