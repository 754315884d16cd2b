"""Labelled image splits as ``uint8 [3, H, W]`` tensors: CIFAR-10 and image-folder trees.

Every split becomes an :class:`ImageDataset` whose ``targets`` come from the class folders (or the CIFAR
batch files), never from index order, because the index of an image is the key of every memory bank and graph
and must stay meaningful when classes have different sizes. Small splits whose images share one size are decoded
once into a ``uint8`` tensor cache on disk, so later runs skip JPEG decoding entirely.

No image is lost in silence: a folder accepts every file Pillow can decode (by extension; other files are
counted and logged), high-bit-depth, alpha, palette, CMYK and bilevel images are converted to 8-bit RGB by
their actual range, and a split is checked once as a whole, so every unreadable file and every empty class
folder is reported together (or, with ``data.skip_corrupt``, left out with a count in the log).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sslgraph.config import DataConfig, data_root_given, resolve_data_root
from sslgraph.errors import DataError, UnreadableImagesError
from sslgraph.utils.io import CheckpointError, atomic_save, safe_load
from sslgraph.utils.misc import progress as progress_bar

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

# Pillow formats that register an extension but cannot decode pixels without an outside handler (stubs).
_STUB_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF"})


def _pillow_extensions() -> tuple[str, ...]:
    """Every file extension of a format Pillow can open (.jpg, .png, .gif, .tif, .webp, .bmp, .ppm, ...)."""
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _STUB_FORMATS))


IMAGE_EXTENSIONS = _pillow_extensions()
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FILES = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
# Bump when the layout of a cache file changes, so stale caches are rebuilt instead of misread.
_CACHE_FORMAT = 1
_DECODE_CHUNK = 1024
_DECODE_THREADS = 8
_SKIPPED_SHOWN = 5


class ImageDataset(Dataset):
    """One labelled split; items are ``(uint8 [3, H, W], label)``.

    Backed by ``images`` (an in-memory ``uint8 [N, 3, H, W]`` tensor) when given, otherwise by ``paths``
    decoded lazily with PIL. ``skipped`` lists unreadable files left out with ``data.skip_corrupt``.
    """

    def __init__(
        self,
        *,
        root: Path,
        split: str,
        classes: list[str],
        targets: torch.Tensor,
        images: torch.Tensor | None = None,
        paths: list[str] | None = None,
        skipped: Sequence[str] = (),
    ) -> None:
        if images is None and paths is None:
            raise ValueError("ImageDataset needs images (a uint8 [N, 3, H, W] tensor) or paths")
        n = len(targets)
        if images is not None and (images.dtype != torch.uint8 or images.dim() != 4 or images.shape[:2] != (n, 3)):
            raise ValueError(f"images must be uint8 [{n}, 3, H, W], got {images.dtype} {list(images.shape)}")
        if paths is not None and len(paths) != n:
            raise ValueError(f"paths has {len(paths)} entries but targets has {n}")
        self.root = root
        self.split = split
        self.classes = classes
        self.targets = targets.to(torch.long)
        self.images = images
        self.paths = paths
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> torch.Tensor:
        """The RGB image at ``index`` as ``uint8 [3, H, W]``; a copy, so sending it between processes never shares
        the whole cache."""
        if self.images is not None:
            return self.images[index].clone()
        assert self.paths is not None
        return decode_image(self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(index), int(self.targets[index])


# Bits per sample of Pillow's integer modes, when the file does not say (a 16-bit PNG opens as I;16).
_MODE_BITS = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32}


def _sample_bits(image: Image.Image) -> int:
    """The file's bits per sample: TIFF says it (12-bit scientific images), PNG stores 16, else by mode."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:
        declared = tags[258]
        bits = int(declared[0] if isinstance(declared, tuple) else declared)
        if 1 <= bits <= 32:
            return bits
    if image.format == "PNG" and image.mode.startswith("I"):
        return 16
    return _MODE_BITS.get(image.mode, 8)


def _high_depth_to_gray8(image: Image.Image) -> np.ndarray:
    """One 16/32-bit integer or float channel as uint8, scaled by the range the file can hold.

    ``convert("RGB")`` clips these modes at 255, so a 16-bit image turns (nearly) white; dividing by the actual
    maximum of the bit depth keeps the image as it was meant to be seen. Float images in [0, 1] are scaled by
    255; any other float range has no convention and is stretched from its minimum to its maximum.
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        scaled = (np.nan_to_num(values, nan=low) - low) / max(high - low, 1e-12)
    else:
        scaled = values / float(2 ** _sample_bits(image) - 1)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any decoded Pillow image as ``uint8 [H, W, 3]``: the first frame of an animation, transparency laid over
    white (what a viewer shows; the colour under a transparent pixel is arbitrary), high bit depths scaled."""
    image.seek(0)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return np.repeat(_high_depth_to_gray8(image)[:, :, None], 3, axis=2)
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(background, image).convert("RGB"))
    return np.array(image.convert("RGB"))


def decode_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode any file Pillow reads to RGB ``uint8 [3, H, W]`` (see :func:`to_rgb_array` for the conversions)."""
    try:
        with Image.open(path) as image:
            pixels = to_rgb_array(image)
    except Exception as err:  # PIL raises many unrelated types for damaged files
        raise DataError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _check_readable(path: str) -> bool:
    """Whether the file decodes and converts to RGB; JPEGs are decoded at a reduced scale (every byte is still
    parsed), which makes checking a large split several times cheaper than decoding it."""
    try:
        with Image.open(path) as image:
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            to_rgb_array(image)
        return True
    except Exception:  # damaged files raise many unrelated types
        return False


def build_dataset(cfg: DataConfig, split: Literal["train", "test"], *, progress: bool = True) -> ImageDataset:
    """Build the training (``"train"``) or held-out (``"test"``) split described by ``cfg``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # CIFAR-10 arrives by itself in the default folder (./data or $SSLGRAPH_DATA); a root the user names is
    # downloaded into only when asked, so a mistyped path does not fill with 170 MB.
    download = cfg.dataset == "cifar10" and (cfg.download or not data_root_given(cfg))
    if download:
        resolve_data_root(cfg, must_exist=False).mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(cfg)
    if cfg.dataset == "cifar10" and ((root / CIFAR_DIR).is_dir() or not (root / cfg.train_split).is_dir()):
        dataset = _build_cifar_batches(cfg, root, split, download=download)
    else:
        dataset = _build_folder(cfg, root, split, show_progress=progress)
    if dataset.skipped:
        logger.warning("skipped %d unreadable images in the %s split of %s (data.skip_corrupt=true): %s",
                       len(dataset.skipped), split, root, _first_few(dataset.skipped))
    return dataset


def _first_few(items: Sequence[str], shown: int = _SKIPPED_SHOWN) -> str:
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")


def dataset_fingerprint(dataset: ImageDataset) -> dict[str, object]:
    """What identifies a split's contents, for refusing to resume a run on other data: its size, class names
    and a hash of its file list (paths relative to the root, so a moved copy still matches) with the labels."""
    digest = hashlib.sha256()
    if dataset.paths is not None:
        prefix = os.path.join(str(dataset.root), "")
        names = (p.removeprefix(prefix) for p in dataset.paths)
        digest.update("\n".join(names).encode())
    else:  # CIFAR batches: no file per image; the labels in order stand for the list
        digest.update(f"{CIFAR_DIR}:{len(dataset)}".encode())
    digest.update(dataset.targets.to(torch.int64).numpy().tobytes())
    return {"size": len(dataset), "classes": list(dataset.classes), "files": digest.hexdigest()[:32]}


def split_fingerprints(train_set: ImageDataset, test_set: ImageDataset) -> dict[str, dict[str, object]]:
    """``{"train": ..., "test": ...}``: what a checkpoint and a features file record of their images."""
    return {"train": dataset_fingerprint(train_set), "test": dataset_fingerprint(test_set)}


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 in the torchvision layout (python pickles)


def _build_cifar_batches(cfg: DataConfig, root: Path, split: str, *, download: bool) -> ImageDataset:
    batch_dir = root / CIFAR_DIR
    if not batch_dir.is_dir():
        if not download:
            raise DataError(
                f"data.root: {root} holds no CIFAR-10; expected either the torchvision layout "
                f"{batch_dir}/ (data_batch_1..5, test_batch, batches.meta) or an image-folder tree "
                f"{root}/{cfg.train_split}/<class>/*.png and {root}/test/<class>/*; "
                f"pass data.download=true to download it with torchvision")
        download_cifar10(root, url=cfg.download_url, md5=cfg.download_md5)
    meta = _read_cifar_pickle(batch_dir / "batches.meta")
    names = [str(name) for name in _cifar_field(meta, "label_names", batch_dir / "batches.meta")]
    parts = [_read_cifar_pickle(batch_dir / name) for name in _CIFAR_FILES[split]]
    data = np.concatenate([np.asarray(_cifar_field(p, "data", batch_dir / f), dtype=np.uint8)
                           for p, f in zip(parts, _CIFAR_FILES[split])])
    labels = np.concatenate([np.asarray(_cifar_field(p, "labels", batch_dir / f), dtype=np.int64)
                             for p, f in zip(parts, _CIFAR_FILES[split])])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{batch_dir}: expected data of shape [N, 3072] with N labels, "
                        f"got {list(data.shape)} and {len(labels)} labels")
    images = torch.from_numpy(data).view(-1, 3, 32, 32)
    targets = torch.from_numpy(labels)
    if cfg.class_list is not None:
        classes = _read_class_list(Path(cfg.class_list), available=names, where=batch_dir / "batches.meta")
        remap = torch.full((len(names),), -1, dtype=torch.long)
        remap[[names.index(c) for c in classes]] = torch.arange(len(classes))
        targets = remap[targets]
        keep = targets >= 0
        images, targets = images[keep], targets[keep]
    else:
        classes = names
    index = _subset_indices(targets, len(classes), _subset_size(cfg, split), key=f"data.{split}_subset")
    if index is not None:
        images, targets = images[index], targets[index]
    return ImageDataset(root=root, split=split, classes=classes, targets=targets, images=images.contiguous())


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only numpy array reconstruction so a tampered file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        # Protocol-2 pickles written by Python 3 store raw bytes through codecs.encode.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def download_cifar10(root: Path, *, url: str, md5: str | None) -> Path:
    """Download and unpack the CIFAR-10 archive (torchvision's downloader: progress bar, MD5 check) into
    ``root/cifar-10-batches-py``.

    Everything happens in a temporary folder inside ``root`` that is renamed into place only once the archive
    checked out and unpacked completely, so an interrupted download never looks like a data set; other
    processes wait on a lock and reuse the result.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    target = root / CIFAR_DIR
    with _file_lock(root / f".{CIFAR_DIR}.lock"):
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{CIFAR_DIR}.", suffix=".partial", dir=root))
        try:
            logger.warning("downloading CIFAR-10 from %s into %s", url, root)
            try:
                download_and_extract_archive(url, download_root=str(staging), filename=CIFAR_ARCHIVE, md5=md5)
            except Exception as err:  # urllib, tarfile and torchvision's checksum raise unrelated types
                reason = getattr(err, "reason", None) or err
                raise DataError(
                    f"data.root: could not download CIFAR-10 from {url} ({reason}); when offline, fetch "
                    f"{CIFAR_ARCHIVE} elsewhere and unpack it into {root}, or pass --data-root to a copy "
                    f"(torchvision layout or image folders)") from err
            unpacked = staging / CIFAR_DIR
            missing = [name for name in ("batches.meta", *_CIFAR_FILES["train"], *_CIFAR_FILES["test"])
                       if not (unpacked / name).is_file()]
            if missing:
                raise DataError(f"data.download_url: the archive from {url} lacks {CIFAR_DIR}/{missing[0]}; "
                                f"is it the CIFAR-10 python archive?")
            os.replace(unpacked, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_cifar_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch file missing: {path}")
    try:
        with open(path, "rb") as handle:
            content = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except Exception as err:
        raise DataError(f"cannot read CIFAR-10 batch file {path}: {err}") from err
    if not isinstance(content, dict):
        raise DataError(f"CIFAR-10 batch file {path} does not hold a dict")
    return content


def _cifar_field(content: dict, name: str, path: Path) -> object:
    if name not in content:
        raise DataError(f"CIFAR-10 batch file {path} has no {name!r} entry")
    return content[name]


# ---------------------------------------------------------------------------------------------------------------
# Image-folder trees


def _subset_size(cfg: DataConfig, split: str) -> int | None:
    return cfg.train_subset if split == "train" else cfg.test_subset


def _split_dir(cfg: DataConfig, root: Path, split: str) -> Path:
    if split == "train":
        name = cfg.train_split
    elif cfg.test_split == "auto":
        name = "test" if (root / "test").is_dir() or not (root / "val").is_dir() else "val"
    else:
        name = cfg.test_split
    return root / name


def _build_folder(cfg: DataConfig, root: Path, split: str, *, show_progress: bool) -> ImageDataset:
    split_dir = _split_dir(cfg, root, split)
    if not split_dir.is_dir():
        key = "data.train_split" if split == "train" else "data.test_split"
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(f"{key}: split folder {split_dir} does not exist (folders in {root}: {found})")
    classes = _resolve_classes(cfg, root, split)
    paths, targets = _list_images(split_dir, classes, allow_empty=cfg.skip_corrupt)
    if not paths:
        raise DataError(f"split folder {split_dir} holds no images in its class folders (extensions "
                        f"{', '.join(IMAGE_EXTENSIONS[:8])}, ...)")
    index = _subset_indices(targets, len(classes), _subset_size(cfg, split), key=f"data.{split}_subset")
    if index is not None:
        paths, targets = [paths[k] for k in index.tolist()], targets[index]

    use_cache = cfg.cache == "always" or (cfg.cache == "auto" and len(paths) <= cfg.cache_max_images)
    images, keep = None, None
    if use_cache:
        images, keep = _cached_images(cfg, root, split_dir, classes, paths, show_progress=show_progress)
    if images is None:
        # Decoded lazily later: check every file now, so a broken one is reported with all the others before
        # training starts instead of stopping a worker hours into it.
        keep = _cached_scan(cfg, root, split_dir, classes, paths, show_progress=show_progress)
    skipped: list[str] = []
    if keep is not None and not bool(keep.all()):
        bad = (~keep).nonzero().flatten().tolist()
        skipped = [paths[k] for k in bad]
        if not cfg.skip_corrupt:
            raise UnreadableImagesError(
                f"cannot read {len(bad)} image{'s' if len(bad) > 1 else ''} in {split_dir}: {_first_few(skipped)}; "
                f"replace or remove them, or set data.skip_corrupt=true to leave them out",
                split=split, paths=skipped)
        paths, targets = [p for p, ok in zip(paths, keep.tolist()) if ok], targets[keep]
        if not paths:
            raise DataError(f"no readable images in {split_dir} ({len(skipped)} unreadable)")
    return ImageDataset(root=root, split=split, classes=classes, targets=targets, images=images,
                        paths=paths, skipped=skipped)


def _class_folders(split_dir: Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"split folder {split_dir} has no class sub-folders (expected {split_dir}/<class>/<image>)")
    return names


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (stops at the first)."""
    with os.scandir(folder) as entries:
        return any(entry.is_file() and _is_image_name(entry.name) for entry in entries)


def _resolve_classes(cfg: DataConfig, root: Path, split: str) -> list[str]:
    """Class order: the class-list file when given, else sorted folder names; both splits must agree.

    The other split is checked only when it exists, so a training split can be used before a held-out one.
    A class folder without images is named as empty (in either split); with ``data.skip_corrupt`` a class
    empty in the training split is left out of both, and one empty only in the held-out split is kept.
    """
    split_dirs = {name: _split_dir(cfg, root, name) for name in ("train", "test")}
    present = {name: path for name, path in split_dirs.items() if path.is_dir()}
    folders = {name: _class_folders(path) for name, path in present.items()}
    if cfg.class_list is not None:
        lists = [_read_class_list(Path(cfg.class_list), available=folders[name], where=present[name])
                 for name in present]
        folders = {name: lists[0] for name in present}
    empty = {name: [c for c in folders[name] if not _has_images(present[name] / c)] for name in present}
    empty_paths = [str(present[name] / c) for name in present for c in empty[name]]
    if empty_paths and not cfg.skip_corrupt:
        many = len(empty_paths) > 1
        raise DataError(f"{len(empty_paths)} class folder{'s are' if many else ' is'} empty (no image files): "
                        f"{_first_few(empty_paths)}; remove {'them' if many else 'it'} or set "
                        f"data.skip_corrupt=true to leave empty classes out")
    if empty.get(split):
        logger.warning("left out %d empty class folder(s) of %s (data.skip_corrupt=true): %s", len(empty[split]),
                       present[split], _first_few(empty[split]))
    # A class without training images cannot be learned: it leaves the held-out split too.
    dropped = {name: set(empty[name]) | set(empty.get("train", ())) for name in folders}
    folders = {name: [c for c in names if c not in dropped[name]] for name, names in folders.items()}
    if cfg.class_list is not None or (cfg.skip_corrupt and "train" in folders and "test" in folders
                                      and set(folders["test"]) <= set(folders["train"])):
        # Label order comes from the training split; held-out classes left empty simply have no images.
        return folders.get("train", folders[split])
    if not folders.get(split):
        raise DataError(f"no class folder of {present[split]} holds images")
    if len(folders) == 2 and folders["train"] != folders["test"]:
        train, test = set(folders["train"]), set(folders["test"])
        raise DataError(f"class folders differ between {split_dirs['train']} and {split_dirs['test']}: "
                        f"only in {split_dirs['train'].name}: {sorted(train - test)}, "
                        f"only in {split_dirs['test'].name}: {sorted(test - train)}; "
                        f"use data.class_list to pick a common set")
    return folders[split]


def _read_class_list(path: Path, *, available: list[str], where: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"data.class_list: file not found: {path}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    classes = [line for line in lines if line and not line.startswith("#")]
    if not classes:
        raise DataError(f"data.class_list: {path} lists no classes")
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise DataError(f"data.class_list: class {name!r} is listed twice in {path}")
        seen.add(name)
    known = set(available)
    for name in classes:
        if name not in known:
            raise DataError(f"data.class_list: class {name!r} from {path} is not a class of {where}")
    return classes


def _list_images(split_dir: Path, classes: list[str], *, allow_empty: bool) -> tuple[list[str], torch.Tensor]:
    """All image files per class folder, sorted by name; labels are the class positions. Files that are not
    images by their extension are left out and counted in the log; a class folder missing or empty here is
    an error unless ``allow_empty`` (data.skip_corrupt, after :func:`_resolve_classes` kept it)."""
    paths: list[str] = []
    counts: list[int] = []
    others: list[str] = []
    for name in classes:
        folder = split_dir / name
        entries = (sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
                   if folder.is_dir() else [])
        images = [f for f in entries if _is_image_name(f)]
        if not images and not allow_empty:
            raise DataError(f"class folder {folder} is empty (no image files); remove it or set "
                            f"data.skip_corrupt=true to leave empty classes out")
        others.extend(f"{name}/{f}" for f in entries if not _is_image_name(f))
        prefix = os.path.join(str(folder), "")
        paths.extend(prefix + f for f in images)
        counts.append(len(images))
    if others:
        logger.warning("ignored %d files in %s that are not images by their extension: %s", len(others),
                       split_dir, _first_few(others))
    targets = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts, dtype=torch.long))
    return paths, targets


# ---------------------------------------------------------------------------------------------------------------
# Class-balanced subsets


def balanced_quota(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Images per class for a class-balanced subset of ``n`` (``n <= counts.sum()``).

    Equals dealing one image per class in class order, round after round, skipping exhausted classes: every
    class gets ``min(count, L)`` for the largest level ``L`` that fits, and the few left over go one each to
    the first classes that still have images. The quotas sum to exactly ``n``.
    """
    low, high = 0, int(counts.max())
    while low < high:
        mid = (low + high + 1) // 2
        if int(counts.clamp(max=mid).sum()) <= n:
            low = mid
        else:
            high = mid - 1
    quota = counts.clamp(max=low)
    left_over = n - int(quota.sum())
    quota[(counts > low).nonzero().flatten()[:left_over]] += 1
    return quota


def _subset_indices(targets: torch.Tensor, num_classes: int, n: int | None, *, key: str) -> torch.Tensor | None:
    """Indices (in the original order) of the first ``quota[c]`` items of each class, or None for all."""
    if n is None:
        return None
    if n > len(targets):
        raise DataError(f"{key}: asks for {n} images but the split has only {len(targets)}")
    counts = torch.bincount(targets, minlength=num_classes)
    quota = balanced_quota(counts, n)
    order = torch.argsort(targets, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.empty_like(targets)
    rank_in_class[order] = torch.arange(len(targets)) - starts[targets[order]]
    return (rank_in_class < quota[targets]).nonzero().flatten()


# ---------------------------------------------------------------------------------------------------------------
# Decoding and the uint8 cache


def _try_decode(path: str) -> torch.Tensor | DataError:
    try:
        return decode_image(path)
    except DataError as err:
        return err


def _decoded(paths: list[str], *, desc: str, show_progress: bool) -> Iterator[torch.Tensor | DataError]:
    """Decode in file order with a thread pool; unreadable files are yielded as errors, not raised."""
    workers = min(_DECODE_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunks = (pool.map(_try_decode, paths[s:s + _DECODE_CHUNK]) for s in range(0, len(paths), _DECODE_CHUNK))
        results = (result for chunk in chunks for result in chunk)
        yield from progress_bar(results, desc=desc, total=len(paths), disable=None if show_progress else True)


def _scan_readable(paths: list[str], *, show_progress: bool) -> torch.Tensor:
    """Which files decode; needed up front so skipped files never shift the indices used as bank keys."""
    workers = min(_DECODE_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunks = (pool.map(_check_readable, paths[s:s + _DECODE_CHUNK]) for s in range(0, len(paths), _DECODE_CHUNK))
        results = (result for chunk in chunks for result in chunk)
        ok = list(progress_bar(results, desc="checking images", total=len(paths),
                               disable=None if show_progress else True))
    return torch.tensor(ok, dtype=torch.bool)


def _decode_stack(
    paths: list[str], *, strict_size: bool, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The readable images in one ``uint8 [M, 3, H, W]`` tensor plus the readable mask over ``paths``;
    None when the sizes differ and ``strict_size`` is false."""
    images: torch.Tensor | None = None
    keep = torch.ones(len(paths), dtype=torch.bool)
    first = ""
    for k, result in enumerate(_decoded(paths, desc="decoding images", show_progress=show_progress)):
        if isinstance(result, DataError):
            keep[k] = False  # every unreadable file is collected; the caller reports them together
            continue
        if images is None:
            images, first = torch.empty((len(paths), *result.shape), dtype=torch.uint8), paths[k]
        elif result.shape != images.shape[1:]:
            if strict_size:
                raise DataError(f"data.cache=always needs images of one size, but {paths[k]} is "
                                f"{list(result.shape[1:])} and {first} is {list(images.shape[2:])}; "
                                f"use data.cache=auto or never")
            return None
        images[k] = result
    if images is None:
        return torch.empty((0, 3, 1, 1), dtype=torch.uint8), keep
    return (images if bool(keep.all()) else images[keep]), keep


def _cache_key(root: Path, split_dir: Path, classes: list[str], paths: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_CACHE_FORMAT}\n{root.resolve()}\n{split_dir.name}\n{classes}\n".encode())
    for path in paths:
        info = os.stat(path)
        digest.update(f"{path}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_dirs(cfg: DataConfig, root: Path) -> list[Path]:
    if cfg.cache_dir is not None:
        return [Path(cfg.cache_dir).expanduser()]
    user_cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "sslgraph"
    return [root / ".sslgraph_cache", user_cache]


def _may_write(folder: Path) -> bool:
    """Writable for this user *and* not marked read-only by its mode bits, which root would otherwise ignore."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def _writable_dir(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not _may_write(existing):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if _may_write(folder):
            return folder
    return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so concurrent processes (e.g. DDP ranks) decode a split once and share the file."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_cache_file(path: Path, key: str, n: int, *, what: str) -> dict | None:
    """A cache file's content when it exists, loads, and was written for this file list (``key``, ``n`` files);
    else None (the caller rebuilds it)."""
    if not path.is_file():
        return None
    try:
        content = safe_load(path)
    except CheckpointError as err:
        logger.warning("ignoring unreadable %s (it will be rebuilt): %s", what, err)
        return None
    if content.get("format") != _CACHE_FORMAT or content.get("key") != key or len(content["keep"]) != n:
        return None
    return content


def _read_cache(path: Path, key: str, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    content = _read_cache_file(path, key, n, what="image cache")
    return None if content is None else (content["images"], content["keep"])


def _find_or_build(cfg: DataConfig, root: Path, name: str, *, what: str, read: Callable[[Path], _T | None],
                   build: Callable[[], _T], content: Callable[[_T], dict[str, object] | None]) -> _T:
    """The cache file ``name`` from the first cache folder where ``read`` accepts it; else ``build`` it and
    save ``content`` of it in the first writable folder, under a file lock, so that processes starting
    together build it once (the others find it when they get the lock)."""
    candidates = _cache_dirs(cfg, root)
    for folder in candidates:
        found = read(folder / name)
        if found is not None:
            return found
    target_dir = _writable_dir(candidates)
    if target_dir is None:
        logger.warning("no writable cache folder among %s (data.cache_dir); the %s is kept in memory only",
                       [str(c) for c in candidates], what)
        return build()
    with _file_lock(target_dir / f"{name}.lock"):
        found = read(target_dir / name)
        if found is not None:
            return found
        built = build()
        saved = content(built)
        if saved is not None:
            _save_cache(saved, target_dir / name)
        return built


def _cached_images(
    cfg: DataConfig, root: Path, split_dir: Path, classes: list[str], paths: list[str], *, show_progress: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Load the split's decoded images from the cache, decoding and saving them the first time.

    Returns ``(images of the readable files, readable mask)``, or ``(None, None)`` when the images differ in
    size and ``data.cache`` is ``auto``.
    """
    key = _cache_key(root, split_dir, classes, paths)

    def content(built: tuple[torch.Tensor | None, torch.Tensor | None]) -> dict[str, object] | None:
        images, keep = built
        if images is None or keep is None:
            return None
        return {"format": _CACHE_FORMAT, "key": key, "images": images, "keep": keep}

    return _find_or_build(cfg, root, f"{split_dir.name}-{key[:20]}.pt", what="decoded split",
                          read=lambda path: _read_cache(path, key, len(paths)),
                          build=lambda: _decode_for_cache(cfg, paths, show_progress=show_progress), content=content)


def _save_cache(content: dict[str, object], path: Path) -> None:
    """A cache is an optimisation: when it cannot be written (full disk), the run goes on without it."""
    try:
        atomic_save(content, path)
    except CheckpointError as err:
        logger.warning("could not save the decoded-image cache, continuing without it: %s", err)
        return
    logger.info("saved %s", path)


def _cached_scan(
    cfg: DataConfig, root: Path, split_dir: Path, classes: list[str], paths: list[str], *, show_progress: bool
) -> torch.Tensor:
    """The readable mask of a lazily decoded split, checked once per file list (the result is kept beside the
    image caches, keyed by every file's size and time, unless ``data.cache=never``)."""
    if cfg.cache == "never":
        return _scan_readable(paths, show_progress=show_progress)
    key = _cache_key(root, split_dir, classes, paths)
    return _find_or_build(cfg, root, f"{split_dir.name}-{key[:20]}.scan.pt", what="readability scan",
                          read=lambda path: _read_scan(path, key, len(paths)),
                          build=lambda: _scan_readable(paths, show_progress=show_progress),
                          content=lambda keep: {"format": _CACHE_FORMAT, "key": key, "keep": keep})


def _read_scan(path: Path, key: str, n: int) -> torch.Tensor | None:
    content = _read_cache_file(path, key, n, what="readability scan")
    return None if content is None else content["keep"]


def _decode_for_cache(
    cfg: DataConfig, paths: list[str], *, show_progress: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    decoded = _decode_stack(paths, strict_size=cfg.cache == "always", show_progress=show_progress)
    if decoded is None:
        logger.info("images differ in size; decoding lazily instead of caching (data.cache=auto)")
        return None, None
    return decoded
