"""Installable where torch is already installed: lower bounds in pyproject.toml, exact CPU pins in one
constraints file that the Makefile installs with, and bounds that the supported GPU environment satisfies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "cpu-lock.txt"
# The GPU environment the device check runs in (benchmarks/gpu/check.py).
GPU_IMAGE = {"torch": "2.11.0", "torchvision": "0.26.0", "torch-geometric": "2.8.0"}


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_dependencies_are_lower_bounds_only() -> None:
    for req in _requirements():
        assert req.specifier, f"{req}: needs a lower bound"
        assert all(spec.operator == ">=" for spec in req.specifier), f"{req}: lower bounds only (pins go in {LOCK})"


def test_lock_pins_every_dependency_within_its_bounds() -> None:
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in {LOCK.name}"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} breaks {req}"


def test_the_gpu_environment_satisfies_the_bounds() -> None:
    bounds = {canonicalize_name(r.name): r.specifier for r in _requirements()}
    for name, version in GPU_IMAGE.items():
        assert bounds[canonicalize_name(name)].contains(Version(version)), f"{name} {version}"


def test_the_makefile_installs_with_the_exact_pins() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/cpu-lock.txt" in makefile
    assert re.search(r"pip install --quiet -c \$\(LOCK\) -e '\.\[all\]'", makefile)
