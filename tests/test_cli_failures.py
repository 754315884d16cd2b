"""Failures a user or the machine causes, driven through the installed command in subprocesses: each ends in one
line ``sslgraph: error: ...`` naming the file or key, its exit code and no traceback. The processes run side by
side to keep the test short; options and overrides may be mixed in any order."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from sslgraph.cli import main, parse_args
from sslgraph.errors import LockError
from sslgraph.run import RunDir
from sslgraph.run.lock import acquire, release
from tests.conftest import tiny_overrides


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                Image.new("RGB", (8, 8), (20 * k, 40, 60)).save(root / split / name / f"{k}.png")
    return root


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A child whose files may not grow past ``limit`` bytes: writes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _sslgraph(args: list[str], *, cwd: Path, drop: tuple[str, ...] = (),
              preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in ("SSLGRAPH_DEBUG", *drop)}
    return subprocess.Popen([sys.executable, "-m", "sslgraph", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def test_each_failure_is_one_line_with_its_exit_code(tmp_path: Path, image_root: Path) -> None:
    tiny = tiny_overrides(epochs=1, train=16, test=8, batch=4)
    empty_class = _tree(tmp_path / "empty_class", {"train": {"ant": 2, "bee": 0}, "test": {"ant": 1, "bee": 1}})
    broken = _tree(tmp_path / "broken", {"train": {"ant": 3, "bee": 3}, "test": {"ant": 1, "bee": 1}})
    for name in ("ant/0.png", "ant/2.png", "bee/1.png"):
        (broken / "train" / name).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    locked = RunDir(tmp_path / "locked")
    locked.root.mkdir()
    holder = subprocess.Popen(["sleep", "120"])  # a live process of this host holds the lock
    locked.lock.write_text(f'{{"pid": {holder.pid}, "host": "{socket.gethostname()}", "started": "earlier"}}\n')
    (tmp_path / "fresh").mkdir()
    now = time.time()

    cases = {
        "empty class": (3, ["pretrain", "--data-root", str(empty_class), "--out", "o1", "data.dataset=imagefolder",
                            *tiny], (), None, ["1 class folder is empty (no image files):", "train/bee",
                                              "data.skip_corrupt=true"]),
        "unreadable": (3, ["pretrain", "data.dataset=imagefolder", "--data-root", str(broken), *tiny, "--out", "o2",
                           "data.cache=never", "data.train_subset=null"], (), None,
                       ["cannot read 3 images in", "ant/0.png", "(all 3 listed in o2/unreadable_images.txt)"]),
        "resume nothing": (4, ["pretrain", "--data-root", str(image_root), "--out", "typo", "--resume", *tiny], (),
                           None, ["--resume: nothing to resume, no checkpoint at typo/checkpoint.pt", "--resume auto"]),
        "disk full": (4, ["pretrain", "--data-root", str(image_root), "--out", "o3", *tiny,
                          "data.cache=never"], (), _file_size_limit(2000),
                      [("could not write o3/config.yaml: File too large; nothing was written there (there was no "
                        "previous version)"), "ulimit -f"]),
        "locked": (4, ["pretrain", "--data-root", str(image_root), "--out", str(locked.root), *tiny], (), None,
                   [f"being written by another sslgraph process (pid {holder.pid} on {socket.gethostname()}",
                    str(locked.lock)]),
        "offline": (3, ["pretrain", "--out", "o4", "data.download_url=http://127.0.0.1:9/cifar-10-python.tar.gz",
                        *tiny], ("SSLGRAPH_DATA",), None, ["could not download CIFAR-10 from http://127.0.0.1:9/",
                                                "when offline", "unpack it into data"]),
        "start ahead": (2, ["run", "--preset", "cifar10-cpu", "--out", "o5", "--started-at", f"{now + 900:.0f}"],
                        (), None, ["--started-at:", "in the future", "date +%s"]),
        "limit spent": (2, ["run", "--preset", "cifar10-cpu", "--out", "o6", "--started-at", f"{now - 1800:.0f}"],
                        (), None, ["pipeline.time_limit_minutes: 19.5 min from the start", "of them gone",
                                   "leave pretraining 0.0 min"]),
    }
    procs = {}
    for name, (_, args, drop, preexec, _) in cases.items():
        procs[name] = _sslgraph(args, cwd=tmp_path / "fresh" if name == "offline" else tmp_path, drop=drop,
                                preexec=preexec)
    try:
        results = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
    finally:
        holder.kill()
        holder.wait()
    for name, (code, _, _, _, fragments) in cases.items():
        _, err = results[name]
        lines = err.strip().splitlines()
        assert procs[name].returncode == code, (name, err)
        # One error line; a download notice may come before it ("downloading CIFAR-10 from ...").
        assert "Traceback" not in err and lines[-1].startswith("sslgraph: error: "), (name, err)
        assert len(lines) == 1 or name == "offline" and len(lines) == 2, (name, err)
        for fragment in fragments:
            assert fragment in lines[-1], (name, fragment, lines[-1])

    assert (tmp_path / "o2" / "unreadable_images.txt").read_text().count("\n") == 3
    assert not (tmp_path / "typo").exists(), "a refused run leaves no folder behind"
    assert not (tmp_path / "fresh" / "data" / "cifar-10-batches-py").exists()
    assert locked.lock.is_file(), "the other process's lock is left alone"


def test_overrides_may_stand_anywhere_among_the_options() -> None:
    args = parse_args(["pretrain", "data.cache_dir=X", "--out", "D", "optim.lr=1", "--resume", "optim.epochs=3",
                       "--debug"])
    assert args.overrides == ["data.cache_dir=X", "optim.lr=1", "optim.epochs=3"]
    assert args.out_dir == "D" and args.resume == "yes" and args.debug
    assert parse_args(["pretrain", "--resume", "auto", "a.b=1"]).resume == "auto"
    assert parse_args(["pretrain", "--resume=auto"]).resume == "auto"
    assert parse_args(["pretrain"]).resume is None
    assert parse_args(["refine", "--run", "R", "refine.epochs=2", "--run", "S", "refine.lr=1"]).overrides == [
        "refine.epochs=2", "refine.lr=1"]


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pretrain", "optim.lr=1", "--bogus", "x=1"])
    assert info.value.code == 2 and "unrecognized arguments: --bogus x=1" in capsys.readouterr().err


def test_lock_is_reentrant_and_a_dead_holder_is_stale(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    acquire(run)
    acquire(run)  # `sslgraph run` locks, then its pretraining stage locks again
    release(run)
    assert run.lock.is_file()
    release(run)
    assert not run.lock.exists()

    dead = subprocess.Popen(["true"])
    dead.wait()
    run.lock.write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "started": "then"}}\n')
    acquire(run)  # the holder is gone: the lock is taken over
    assert f'"pid": {os.getpid()}' in run.lock.read_text()
    release(run)

    run.lock.write_text('{"pid": 1, "host": "another-host", "started": "then"}\n')
    with pytest.raises(LockError, match="pid 1 on another-host.*If that process is gone, delete"):
        acquire(run)
    assert run.lock.is_file()
