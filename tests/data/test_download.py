"""CIFAR-10 arrives by itself: a real download over HTTP from a small archive in the torchvision layout served on
127.0.0.1 inside the test, into the default folder, checked against its MD5, never left half-unpacked."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from sslgraph.config import DataConfig
from sslgraph.data import build_dataset
from sslgraph.data.datasets import CIFAR_ARCHIVE, CIFAR_DIR
from sslgraph.errors import DataError

NAMES = ["plane", "car", "bird"]


def _archive(path: Path) -> dict[str, np.ndarray]:
    """``cifar-10-python.tar.gz`` with two images per training batch and three held-out ones."""
    rng = np.random.default_rng(0)
    members: dict[str, dict] = {}
    pixels = {"train": [], "test": []}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        count = 3 if name == "test_batch" else 2
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        members[name] = {"data": data, "labels": [int(v) % 3 for v in range(count)], "batch_label": name}
        pixels["test" if name == "test_batch" else "train"].append(data)
    members["batches.meta"] = {"label_names": NAMES, "num_vis": 3072}
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{CIFAR_DIR}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return {split: np.concatenate(parts) for split, parts in pixels.items()}


class _Quiet(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        _Quiet.requests.append(f"{self.command} {self.path}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
    """(archive URL, its MD5, the pixels in it), served from a thread on 127.0.0.1."""
    site = tmp_path / "site"
    site.mkdir()
    pixels = _archive(site / CIFAR_ARCHIVE)
    md5 = hashlib.md5((site / CIFAR_ARCHIVE).read_bytes()).hexdigest()
    _Quiet.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{CIFAR_ARCHIVE}", md5, pixels
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def no_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory and no $SSLGRAPH_DATA: the default folder is ./data."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("SSLGRAPH_DATA", raising=False)
    return work


def test_default_folder_is_downloaded_into_once(server, no_data_root: Path) -> None:
    url, md5, pixels = server
    cfg = DataConfig(dataset="cifar10", download_url=url, download_md5=md5)
    train = build_dataset(cfg, "train", progress=False)
    assert (no_data_root / "data" / CIFAR_DIR / "batches.meta").is_file()
    assert train.classes == NAMES and len(train) == 10
    assert torch.equal(train.images.reshape(10, -1), torch.from_numpy(pixels["train"]))
    served = list(_Quiet.requests)
    assert served and all(r == f"GET /{CIFAR_ARCHIVE}" for r in served)
    assert len(build_dataset(cfg, "test", progress=False)) == 3
    assert _Quiet.requests == served, "the second split reads what the first downloaded"
    assert [p.name for p in (no_data_root / "data").iterdir() if not p.name.startswith(".")] == [CIFAR_DIR]
    assert not list((no_data_root / "data").glob("*.partial")), "no staging folder is left behind"


def test_bad_checksum_leaves_no_data_set(server, no_data_root: Path) -> None:
    url, _, _ = server
    cfg = DataConfig(dataset="cifar10", download_url=url, download_md5="0" * 32)
    with pytest.raises(DataError, match=r"could not download CIFAR-10 from .*corrupted.*when offline"):
        build_dataset(cfg, "train", progress=False)
    data = no_data_root / "data"
    assert not (data / CIFAR_DIR).exists() and not list(data.glob(f".{CIFAR_DIR}.*.partial"))


def test_environment_folder_is_the_default_too(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, md5, _ = server
    shared = tmp_path / "shared"
    monkeypatch.setenv("SSLGRAPH_DATA", str(shared))
    build_dataset(DataConfig(dataset="cifar10", download_url=url, download_md5=md5), "test", progress=False)
    assert (shared / CIFAR_DIR / "test_batch").is_file()


def test_a_named_root_is_downloaded_into_only_when_asked(server, tmp_path: Path) -> None:
    url, md5, _ = server
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match=r"holds no CIFAR-10.*data\.download=true"):
        build_dataset(DataConfig(root=str(tmp_path / "mine"), download_url=url, download_md5=md5), "train",
                      progress=False)
    build_dataset(DataConfig(root=str(tmp_path / "mine"), download=True, download_url=url, download_md5=md5),
                  "train", progress=False)
    assert (tmp_path / "mine" / CIFAR_DIR).is_dir()
