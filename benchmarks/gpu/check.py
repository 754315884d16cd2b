"""The GPU check in one command: install from the wheels it brings, reassemble CIFAR-10, run a time-boxed pipeline
(``graph`` and ``dino`` at the same wall-clock budget) and the throughput benchmark, write the results.

Where it runs: a remote GPU machine that receives a copy of this working tree plus up to eight listed extra
(git-ignored) paths, at most 64 MiB per command in all, with a Python that already has torch, torchvision,
torch-geometric, timm, tensorboard, scikit-learn, matplotlib, tqdm and pyyaml but neither omegaconf nor faiss,
and no network. Files the command writes under ``$OUT`` come back (at most 8 files of 16 MiB each). The data
folder beside the repository does not travel, so the data set goes in uint8 shards over consecutive commands
into a folder that persists on that machine while it stays up (``--store``, default ``/tmp/sslgraph-pack``).

The exact sequence (``benchmarks/gpu/pack/manifest.json`` lists the shards each command takes; with the full
data set and 60 MiB shards that is three commands):

0. Here, once: ``SSLGRAPH_DATA=../shared/datasets python benchmarks/gpu/pack.py`` writes
   ``benchmarks/gpu/pack/`` (``data.000`` .. ``data.002``, ``manifest.json``, ``wheels/``).
1. Remote command 1, taking ``benchmarks/gpu/pack/data.000`` along::

       python benchmarks/gpu/check.py stash

   copies the shard into the store and reports which shards it still lacks (the machine starts here).
2. Remote command 2, taking ``benchmarks/gpu/pack/data.001``: the same ``python benchmarks/gpu/check.py stash``.
3. Remote command 3, taking ``benchmarks/gpu/pack/data.002``, ``benchmarks/gpu/pack/manifest.json`` and
   ``benchmarks/gpu/pack/wheels``, with a 600 s limit::

       python benchmarks/gpu/check.py run --out "$OUT"

   stashes the last shard, checks every shard's sha256, writes ``STORE/cifar10/cifar-10-batches-py``,
   installs omegaconf and the project with ``pip install --no-deps --no-index --find-links STORE/wheels``
   (falling back to the unpacked wheels on ``PYTHONPATH`` if pip cannot build there), then, each step
   bounded by what is left of ``--deadline-minutes`` (default 6, leaving the machine's start and the first two
   commands about four of the ten minutes):

   a. ``benchmarks/pretrain_throughput.py`` on the device (img/s and MFU of the loop and the bare step);
   b. ``sslgraph run`` with ``method.name=graph`` and ``optim.budget_minutes=--budget-minutes`` (default 1.25):
      pretraining, graphs, refinement, evaluation (5 probe seeds, a 30-epoch backbone probe), figures, report;
   c. ``sslgraph pretrain`` + ``sslgraph evaluate`` with ``method.name=dino`` and the same budget.

   Written to ``$OUT``: ``metrics.json`` and ``log.jsonl`` (graph run), ``report.html`` (its report with the
   figures embedded), ``dino_metrics.json``, ``throughput.json``, ``throughput.md`` and ``check.json`` (what
   ran, seconds, versions, the headline numbers, the dino run's log). A step that fails or runs out of time is
   recorded in ``check.json`` and the rest still runs.

A machine that has restarted between commands has lost the store: ``run`` then names the missing shards.
The whole check is sized for ten minutes of device time with the machine's start (the pretraining budgets,
not epochs, bound it). The same command proves itself on a CPU (``tests/benchmarks/test_gpu_check.py``)::

    python benchmarks/gpu/pack.py --train-subset 1000 --test-subset 200 --no-wheels --out /tmp/p
    python benchmarks/gpu/check.py run --pack /tmp/p --store /tmp/s --out /tmp/o --device cpu --no-install \\
        --budget-minutes 1 --set optim.batch_size=64 ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_STORE = Path("/tmp/sslgraph-pack")
ASSEMBLED = "assembled.sha256"
OUT_FILES_MAX, OUT_FILE_BYTES_MAX = 8, 16 * 2**20
# Lighter evaluation than the presets' (5 probe seeds instead of 20, a 30-epoch backbone probe instead of 100), so
# the evaluation does not eat the minutes the pretraining should get; --set overrides come after these.
CHECK_DEFAULTS = ["eval.probe_seeds=5", "eval.backbone_probe_epochs=30"]
# Wheels only pip's isolated build of the project uses; the environment's own copies stay untouched.
BUILD_ONLY = {"setuptools", "wheel", "packaging"}


def log(message: str) -> None:
    print(f"[check] {message}", flush=True)


# ------------------------------------------------------------------ data
def stash(pack: Path, store: Path) -> list[str]:
    """Copy whatever this command brought (shards, manifest, wheels) into the store; returns missing shards."""
    store.mkdir(parents=True, exist_ok=True)
    for path in sorted(pack.glob("data.*")) + sorted(pack.glob("manifest.json")):
        if not (store / path.name).is_file() or (store / path.name).stat().st_size != path.stat().st_size:
            shutil.copyfile(path, store / path.name)
            log(f"stored {path.name} ({path.stat().st_size / 2**20:.1f} MiB)")
    if (pack / "wheels").is_dir():
        shutil.copytree(pack / "wheels", store / "wheels", dirs_exist_ok=True)
    manifest = store / "manifest.json"
    if not manifest.is_file():
        log(f"no manifest yet; store holds {', '.join(p.name for p in sorted(store.glob('data.*'))) or 'nothing'}")
        return []
    missing = [s["file"] for s in json.loads(manifest.read_text())["shards"] if not (store / s["file"]).is_file()]
    log(f"missing shards: {', '.join(missing)}" if missing else "all shards stored")
    return missing


def assemble(store: Path) -> Path:
    """Check the shards and write the torchvision CIFAR-10 layout under ``store/cifar10``; returns the data root."""
    manifest = json.loads((store / "manifest.json").read_text())
    root, batches = store / "cifar10", store / "cifar10" / "cifar-10-batches-py"
    marker = root / ASSEMBLED
    if marker.is_file() and marker.read_text().strip() == manifest["sha256"]:
        log("data already assembled")
        return root
    missing = [s["file"] for s in manifest["shards"] if not (store / s["file"]).is_file()]
    if missing:
        raise SystemExit(f"check: shards missing from {store}: {', '.join(missing)} (run `check.py stash` in the "
                         f"commands that bring them; a restarted machine has lost the earlier ones)")
    parts = []
    for shard in manifest["shards"]:
        data = (store / shard["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise SystemExit(f"check: {shard['file']} is damaged (sha256 differs from the manifest)")
        parts.append(data)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        raise SystemExit("check: the reassembled data differ from the packed data (sha256)")
    arrays, offset = {}, 0
    for spec in manifest["arrays"]:
        count = int(np.prod(spec["shape"]))
        arrays[spec["name"]] = np.frombuffer(blob, dtype=np.uint8, count=count, offset=offset).reshape(spec["shape"])
        offset += count
    batches.mkdir(parents=True, exist_ok=True)
    train = zip(np.array_split(arrays["train_images"], 5), np.array_split(arrays["train_labels"], 5))
    for number, (images, labels) in enumerate(train, start=1):
        _write_batch(batches / f"data_batch_{number}", images, labels)
    _write_batch(batches / "test_batch", arrays["test_images"], arrays["test_labels"])
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": manifest["classes"]}, handle, protocol=2)
    marker.write_text(manifest["sha256"] + "\n")
    log(f"assembled {len(arrays['train_labels'])} training and {len(arrays['test_labels'])} test images in {batches}")
    return root


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"data": np.ascontiguousarray(images.reshape(len(images), -1)),
                     "labels": [int(v) for v in labels]}, handle, protocol=2)


# ------------------------------------------------------------------ install
def install(store: Path) -> dict[str, str]:
    """omegaconf and the project without dependencies and without an index; the environment for the steps."""
    env = dict(os.environ)
    wheels = store / "wheels"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--find-links", str(wheels)]
    names = sorted(name for name in (p.name.split("-")[0] for p in wheels.glob("*.whl")) if name not in BUILD_ONLY)
    done = subprocess.run([*pip, *names], check=False).returncode == 0 and \
        subprocess.run([*pip, "-e", str(ROOT)], check=False).returncode == 0
    if not done:  # no pip, or no way to build: unpack the wheels and use the sources in place
        site = store / "site"
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "src"), env.get("PYTHONPATH", "")])
        log("pip could not install; using the unpacked wheels and src/ on PYTHONPATH")
    subprocess.run([sys.executable, "-c", "import omegaconf, sslgraph"], check=True, env=env)
    return env


# ------------------------------------------------------------------ steps
class Steps:
    """Runs commands one after another within a deadline; records each one's outcome for check.json."""

    def __init__(self, *, deadline_minutes: float, env: dict[str, str]) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + 60 * deadline_minutes
        self.env = env
        self.record: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, args: list[str], *, needs_seconds: float = 0.0) -> bool:
        """Run one step unless less than ``needs_seconds`` is left; it is stopped at the deadline."""
        if self.left() < needs_seconds:
            self.record.append({"step": name, "skipped": f"{self.left():.0f} s left, {needs_seconds:.0f} needed"})
            log(f"{name}: skipped ({self.left():.0f} s left)")
            return False
        log(f"{name}: {' '.join(args)}")
        began = time.monotonic()
        try:
            code = subprocess.run(args, env=self.env, cwd=ROOT, timeout=max(self.left(), 1.0)).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        seconds = round(time.monotonic() - began, 1)
        self.record.append({"step": name, "returncode": code, "seconds": seconds})
        log(f"{name}: {'ok' if code == 0 else f'failed ({code})'} after {seconds} s")
        return code == 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _dig(values: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def headline(graph: Any, dino: Any, throughput: Any) -> dict[str, Any]:
    """The numbers the README quotes, taken from the files the steps wrote."""
    nodes = _dig(graph, "nodes", "feature_sets") or {}
    return {
        "knn_top1_k20": {"graph_teacher": _dig(graph, "backbones", "feature_sets", "teacher", "knn", "20"),
                         "dino_teacher": _dig(dino, "backbones", "feature_sets", "teacher", "knn", "20")},
        "nodes": {name: {"knn_k20": _dig(entry, "knn", "20"), "probe": _dig(entry, "logistic_regression", "mean")}
                  for name, entry in nodes.items() if name in ("raw", "propagated", "refined")},
        "throughput": {name: {key: row.get(key) for key in ("loop_images_per_s", "bare_images_per_s", "loop_mfu",
                                                            "bare_mfu", "bare_compiled_images_per_s")}
                       for name, row in (_dig(throughput, "results") or {}).items()},
    }


def versions(env: dict[str, str]) -> dict[str, str]:
    code = ("import json, torch, torchvision, torch_geometric, omegaconf; print(json.dumps({"
            "'torch': torch.__version__, 'torchvision': torchvision.__version__, "
            "'torch_geometric': torch_geometric.__version__, 'omegaconf': omegaconf.__version__, "
            "'cuda': str(torch.version.cuda), "
            "'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}


def collect(out: Path, files: dict[str, Path]) -> list[str]:
    """Copy the result files into ``out`` (at most 8, each under 16 MiB); returns what was left out."""
    out.mkdir(parents=True, exist_ok=True)
    left_out = []
    for name, path in list(files.items())[:OUT_FILES_MAX]:
        if not path.is_file():
            left_out.append(f"{name} (not written)")
        elif path.stat().st_size > OUT_FILE_BYTES_MAX:
            left_out.append(f"{name} ({path.stat().st_size / 2**20:.1f} MiB, too large)")
        elif path.resolve() != (out / name).resolve():
            shutil.copyfile(path, out / name)
    return left_out


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    pack, store, out = Path(args.pack), Path(args.store), Path(args.out)
    missing = stash(pack, store)
    if missing or not (store / "manifest.json").is_file():
        raise SystemExit(f"check: cannot run yet: missing {', '.join(missing) or 'manifest.json'}")
    data_root = assemble(store)
    env = dict(os.environ) if args.no_install else install(store)
    runs = store / "runs"
    if runs.exists() and not args.keep_runs:
        shutil.rmtree(runs)
    graph_run, dino_run = runs / "graph", runs / "dino"
    out.mkdir(parents=True, exist_ok=True)
    common = [f"device={args.device}", "viz.umap=false", *CHECK_DEFAULTS, *args.set]
    sslgraph = [sys.executable, "-m", "sslgraph"]
    steps = Steps(deadline_minutes=args.deadline_minutes - (time.monotonic() - began) / 60, env=env)
    budget, dino_budget = args.budget_minutes, args.dino_budget_minutes or args.budget_minutes

    steps.run("throughput", [sys.executable, str(ROOT / "benchmarks" / "pretrain_throughput.py"), "--preset",
                             args.preset, "--device", args.device, "--steps", str(args.throughput_steps),
                             "--out", str(out / "throughput.json"), "--markdown", str(out / "throughput.md"),
                             *(["--compile"] if args.compile else []), f"data.root={data_root}", *common[1:]],
              needs_seconds=60)
    steps.run("graph", [*sslgraph, "run", "--preset", args.preset, "--data-root", str(data_root), "--out",
                        str(graph_run), "method.name=graph", f"optim.budget_minutes={budget}", *common],
              needs_seconds=60 * budget + 60)
    if steps.run("dino pretrain", [*sslgraph, "pretrain", "--preset", args.preset, "--data-root", str(data_root),
                                   "--out", str(dino_run), "method.name=dino", f"optim.budget_minutes={dino_budget}",
                                   *common, *(["--resume"] if args.keep_runs else [])],
                 needs_seconds=60 * dino_budget + 45):
        steps.run("dino evaluate", [*sslgraph, "evaluate", "--run", str(dino_run)], needs_seconds=20)

    graph_metrics, dino_metrics = _read_json(graph_run / "metrics.json"), _read_json(dino_run / "metrics.json")
    summary = {
        "preset": args.preset, "device": args.device, "budget_minutes": {"graph": budget, "dino": dino_budget},
        "overrides": common, "versions": versions(env), "machine": platform.machine(),
        "steps": steps.record, "seconds": round(time.monotonic() - began, 1),
        "headline": headline(graph_metrics, dino_metrics, _read_json(out / "throughput.json")),
        "dino_log": [json.loads(line) for line in (dino_run / "log.jsonl").read_text().splitlines()]
        if (dino_run / "log.jsonl").is_file() else None,
        "graph_pipeline": _read_json(graph_run / "pipeline.json"),
    }
    summary["left_out"] = collect(out, {
        "metrics.json": graph_run / "metrics.json", "log.jsonl": graph_run / "log.jsonl",
        "report.html": graph_run / "report.html", "dino_metrics.json": dino_run / "metrics.json",
        "throughput.json": out / "throughput.json", "throughput.md": out / "throughput.md"})
    (out / "check.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"headline: {json.dumps(summary['headline'])}")
    log(f"written {out} in {summary['seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("stash", "run"),
                        help="stash: keep the shards this command brought; run: the check")
    parser.add_argument("--pack", default=str(HERE / "pack"), help="the pack folder this command brought")
    parser.add_argument("--store", default=str(DEFAULT_STORE), help="where shards persist between commands")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"), help="result folder (default $OUT)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="cifar10", help="sslgraph preset of every run (default: cifar10)")
    parser.add_argument("--budget-minutes", type=float, default=1.25, help="pretraining budget of the graph run")
    parser.add_argument("--dino-budget-minutes", type=float, default=None, help="of the dino run (default: same)")
    parser.add_argument("--deadline-minutes", type=float, default=6.0, help="everything after this is skipped")
    parser.add_argument("--throughput-steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time the bare step under torch.compile")
    parser.add_argument("--no-install", action="store_true", help="use this environment as it is (no pip)")
    parser.add_argument("--keep-runs", action="store_true", help="continue earlier runs in the store")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run and the benchmark (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "stash":
        stash(Path(args.pack), Path(args.store))
        return None
    return run(args)


if __name__ == "__main__":
    main()
