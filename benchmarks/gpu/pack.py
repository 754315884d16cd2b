"""Pack what a remote GPU check needs besides the working tree: CIFAR-10 as uint8 shards, and the wheels the
GPU environment lacks.

The remote machine receives the working tree plus a few listed extra (git-ignored) paths, at most 64 MiB per
command, and cannot download anything. So the data set travels as raw uint8 arrays cut into shards that each
fit one command with the tree (``--shard-mib``, default 60), and the pure-Python wheels it lacks travel beside
them:

- ``omegaconf`` (the version pinned in ``requirements/cpu-lock.txt``) and whatever its metadata requires
  besides PyYAML (omegaconf 2.4 bundles its parser runtime; an older one would pull in
  ``antlr4-python3-runtime``, built here into a wheel when only a source archive exists);
- ``setuptools`` and ``wheel`` (and ``packaging``, which ``wheel`` needs), so that
  ``pip install --no-deps --no-index --find-links`` can build the project itself (pip's isolated build
  environment needs them and cannot fetch them there).

Layout written to ``--out`` (default ``benchmarks/gpu/pack/``, git-ignored)::

    data.000, data.001, ...   the bytes of: train images [N, 3, 32, 32] uint8, train labels uint8,
                              test images, test labels (in that order), cut into shards
    manifest.json             shapes, class names, sha256 of every shard, the shards each command takes along
    wheels/*.whl              the wheels above (absent with --no-wheels)

``benchmarks/gpu/check.py`` reassembles the shards into the torchvision CIFAR-10 layout and runs the check;
its docstring lists the commands in order.

    SSLGRAPH_DATA=../shared/datasets python benchmarks/gpu/pack.py [--train-subset N --test-subset M]
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from packaging.requirements import Requirement

from sslgraph.config import DataConfig
from sslgraph.data import build_dataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOCK = ROOT / "requirements" / "cpu-lock.txt"
# What the GPU environment already has, so omegaconf's requirement on it needs nothing packed. The build
# requirements' own dependencies (packaging for wheel) are packed all the same: pip's isolated build
# environment sees only the wheels it is given.
PROVIDED = {"pyyaml"}
MIB = 2**20


def locked_version(name: str) -> str:
    """The exact version of ``name`` in the CPU lock file."""
    for line in LOCK.read_text().splitlines():
        pin = line.split("#", 1)[0].strip()
        if pin.lower().startswith(f"{name.lower()}=="):
            return pin.split("==", 1)[1]
    raise SystemExit(f"pack: {name} is not pinned in {LOCK}")


def arrays(*, root: str | None, train_subset: int | None, test_subset: int | None) -> dict[str, np.ndarray]:
    """CIFAR-10's uint8 images and labels of both splits, read (and cached) by sslgraph's own loader."""
    cfg = DataConfig(dataset="cifar10", root=root, train_subset=train_subset, test_subset=test_subset)
    out: dict[str, np.ndarray] = {}
    classes: list[str] = []
    for split in ("train", "test"):
        dataset = build_dataset(cfg, split)
        if dataset.images is None or tuple(dataset.images.shape[1:]) != (3, 32, 32):
            raise SystemExit(f"pack: expected 32 px CIFAR-10 images in a uint8 cache, got {split} without one")
        out[f"{split}_images"] = dataset.images.numpy()
        out[f"{split}_labels"] = dataset.targets.numpy().astype(np.uint8)
        classes = list(dataset.classes)
    out["classes"] = np.array(classes)
    return out


def write_shards(data: dict[str, np.ndarray], out: Path, *, shard_mib: float) -> dict[str, object]:
    """Cut the arrays' bytes into shards of at most ``shard_mib`` MiB; returns the manifest."""
    parts = ["train_images", "train_labels", "test_images", "test_labels"]
    blob = b"".join(np.ascontiguousarray(data[name]).tobytes() for name in parts)
    size = int(shard_mib * MIB)
    shards = []
    for number, start in enumerate(range(0, len(blob), size)):
        chunk = blob[start:start + size]
        path = out / f"data.{number:03d}"
        path.write_bytes(chunk)
        shards.append({"file": path.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    return {
        "format": "sslgraph-cifar10-uint8-v1",
        "arrays": [{"name": name, "dtype": "uint8", "shape": list(data[name].shape)} for name in parts],
        "classes": [str(c) for c in data["classes"]],
        "sha256": hashlib.sha256(blob).hexdigest(),
        "shards": shards,
    }


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """A wheel's unconditional requirements, from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    reqs = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def fetch_wheels(dest: Path) -> list[str]:
    """omegaconf (+ its requirements the GPU environment lacks), setuptools and wheel, as wheels in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    wanted = [f"omegaconf=={locked_version('omegaconf')}", "setuptools>=68", "wheel"]
    done: set[str] = set()
    while wanted:
        spec = wanted.pop(0)
        name = Requirement(spec).name.lower()
        if name in done or name in PROVIDED:
            continue
        done.add(name)
        before = set(dest.iterdir())
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "--dest", str(dest), spec], check=True)
        for new in set(dest.iterdir()) - before:
            if new.suffix != ".whl":  # a source archive only: build the pure-Python wheel here
                subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(new)],
                               check=True)
                new.unlink()
        for wheel in set(dest.glob("*.whl")) - before:
            wanted += [str(r) for r in wheel_requirements(wheel)]
    return sorted(p.name for p in dest.glob("*.whl"))


def command_plan(manifest: dict[str, object], *, budget_mib: float, reserve_mib: float) -> list[list[str]]:
    """Shards per command: as many as fit in ``budget_mib`` after ``reserve_mib`` for the tree and wheels."""
    plan: list[list[str]] = [[]]
    used = 0.0
    for shard in manifest["shards"]:  # type: ignore[union-attr]
        mib = shard["bytes"] / MIB
        if plan[-1] and used + mib > budget_mib - reserve_mib:
            plan.append([])
            used = 0.0
        plan[-1].append(shard["file"])
        used += mib
    return plan


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "pack"), help="pack folder (default: benchmarks/gpu/pack)")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 root (default: $SSLGRAPH_DATA)")
    parser.add_argument("--train-subset", type=int, default=None, help="class-balanced subset (default: all)")
    parser.add_argument("--test-subset", type=int, default=None, help="class-balanced subset (default: all)")
    parser.add_argument("--shard-mib", type=float, default=60.0, help="largest shard in MiB")
    parser.add_argument("--per-command-mib", type=float, default=64.0, help="what one command may take along")
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheels (an environment that has them)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("data.*"):
        old.unlink()
    manifest = write_shards(arrays(root=args.data_root, train_subset=args.train_subset,
                                   test_subset=args.test_subset), out, shard_mib=args.shard_mib)
    manifest["wheels"] = [] if args.no_wheels else fetch_wheels(out / "wheels")
    tree_mib = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and _travels(p)) / MIB
    wheels_mib = sum(p.stat().st_size for p in (out / "wheels").glob("*.whl")) / MIB if manifest["wheels"] else 0.0
    manifest["commands"] = command_plan(manifest, budget_mib=args.per_command_mib, reserve_mib=tree_mib + wheels_mib)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for number, files in enumerate(manifest["commands"], start=1):  # type: ignore[arg-type]
        print(f"command {number}: {', '.join(files)}")
    wheels = ", ".join(manifest["wheels"]) or "none"  # type: ignore[arg-type]
    print(f"written {out} ({len(manifest['shards'])} shards, wheels: {wheels}; "  # type: ignore[arg-type]
          f"working tree about {tree_mib:.1f} MiB)")
    return out


def _travels(path: Path) -> bool:
    """Roughly what a copy of the working tree holds: everything outside ignored and cache folders."""
    skip = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", "pack", "build"}
    return not any(part in skip or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts)


if __name__ == "__main__":
    main()
