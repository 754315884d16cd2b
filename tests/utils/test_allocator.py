import subprocess
import sys
import textwrap

import pytest

from sslgraph.utils.allocator import THP_ENV_VAR, TUNE_ENV_VAR, huge_pages_offered, tune_cpu_allocator

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings exist on Linux only")


def _mode_file(tmp_path, text):
    path = tmp_path / "enabled"
    path.write_text(text)
    return path


def test_huge_pages_offered_reads_the_selected_mode(tmp_path):
    assert huge_pages_offered(_mode_file(tmp_path, "always [madvise] never\n"))
    assert huge_pages_offered(_mode_file(tmp_path, "[always] madvise never\n"))
    assert not huge_pages_offered(_mode_file(tmp_path, "always madvise [never]\n"))
    assert not huge_pages_offered(tmp_path / "missing")


@linux_only
def test_tune_sets_huge_pages_only_where_offered_and_keeps_the_users_choice(tmp_path):
    env: dict[str, str] = {}
    applied = tune_cpu_allocator(environ=env, mode_file=_mode_file(tmp_path, "always [madvise] never"))
    assert env[THP_ENV_VAR] == "1" and applied["huge_pages"]

    env = {}
    applied = tune_cpu_allocator(environ=env, mode_file=_mode_file(tmp_path, "always madvise [never]"))
    assert THP_ENV_VAR not in env and not applied["huge_pages"]

    env = {THP_ENV_VAR: "0"}  # exported by the user: left as it is
    applied = tune_cpu_allocator(environ=env, mode_file=_mode_file(tmp_path, "[always] madvise never"))
    assert env[THP_ENV_VAR] == "0" and not applied["huge_pages"]


def test_tune_can_be_turned_off(tmp_path):
    env = {TUNE_ENV_VAR: "0"}
    applied = tune_cpu_allocator(environ=env, mode_file=_mode_file(tmp_path, "[always] madvise never"))
    assert applied == {"huge_pages": False, "malloc": False} and env == {TUNE_ENV_VAR: "0"}


_FAULTS = textwrap.dedent("""
    import resource, sys
    from sslgraph.utils.allocator import tune_cpu_allocator
    if sys.argv[1] == "tuned":
        tune_cpu_allocator()
    import torch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):  # a 64-MiB temporary made and freed ten times, as the refinement's votes do
        block = torch.ones(16 << 20)
        del block
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@linux_only
@pytest.mark.skipif(not huge_pages_offered(), reason="this kernel offers no transparent huge pages")
def test_tuned_process_faults_large_blocks_in_huge_pages():
    """The point of the settings: a 64-MiB block is 16,384 pages of 4 KiB, each faulted in and zeroed by the
    kernel every time the block is made again; on huge pages it is 32. Counted in fresh processes, since the
    settings are process-wide and PyTorch reads its own once."""
    def count(mode: str) -> int:
        env = {"PATH": "/usr/bin:/bin", TUNE_ENV_VAR: "1", "PYTHONPATH": ":".join(sys.path)}
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             env=env)
        return int(out.stdout.strip().splitlines()[-1])

    plain, tuned = count("plain"), count("tuned")
    assert plain > 10 * 16_384 * 0.9, plain
    assert tuned * 10 < plain, (tuned, plain)


_CLI_ORDER = textwrap.dedent("""
    import sys
    import sslgraph.cli as cli
    seen = []
    cli.tune_cpu_allocator = lambda: seen.append("torch" in sys.modules)
    code = cli.main(["report", "--run", sys.argv[1]])
    print(seen, code)
""")


def test_command_line_tunes_before_torch_is_imported(tmp_path):
    """PyTorch reads its huge-page switch at its first tensor, and parsing the arguments imports torch: the
    command line must apply the settings before that, once."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _CLI_ORDER, str(tmp_path / "no-run")], capture_output=True,
                         text=True, env=env)
    assert out.stdout.split()[0] == "[False]", out.stdout + out.stderr
