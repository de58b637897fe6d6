"""The speed-ups (tcmalloc preloaded by a re-run of the command) work, and change no results."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, at_least, at_most, run_train, unavailable

from imdb_distilbert import compat

TCMALLOC = compat.fast_malloc_library()


@pytest.fixture
def needs_tcmalloc():
    if TCMALLOC is None:
        unavailable("tcmalloc is not installed (libtcmalloc-minimal4; tests/system-packages.sh installs it as root)")

# A command-line program in miniature: re-run with tcmalloc, then report what it sees and exit 3.
PROGRAM = f"""
import sys
sys.path.insert(0, {str(ROOT / 'src')!r})
from imdb_distilbert import compat
compat.use_fast_malloc()
print(compat.malloc_in_use(), sys.argv[1:], flush=True)
sys.exit(3)
"""


def run_program(tmp_path, env):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-u", str(script), "--flag", "a b"], capture_output=True, text=True, env=env)


@pytest.mark.usefixtures("needs_tcmalloc")
def test_program_reruns_once_with_tcmalloc_keeping_arguments_and_exit_status(tmp_path):
    result = run_program(tmp_path, {"LD_PRELOAD": None, "IMDB_FAST_MALLOC": None})
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # ran its body once, after the re-run
    assert lines[0] == "tcmalloc ['--flag', 'a b']"


@pytest.mark.parametrize("env", [{"IMDB_FAST_MALLOC": "0", "LD_PRELOAD": None}, {"LD_PRELOAD": "libjemalloc.so.2"}],
                         ids=["opted-out", "other-allocator-preloaded"])
def test_program_runs_unchanged_when_opted_out_or_preloaded(tmp_path, env):
    result = run_program(tmp_path, env)
    assert result.returncode == 3, result.stderr
    assert result.stdout.split()[0] != "tcmalloc"  # not re-run (ld.so skips a jemalloc it cannot find)


@pytest.mark.usefixtures("needs_tcmalloc")
def test_not_rerun_unless_started_as_a_script():
    """`python -c` here stands for `%run script.py` in IPython or Jupyter: their process must stay."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); from imdb_distilbert import compat; "
            "compat.use_fast_malloc(); print(compat.malloc_in_use())")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "IMDB_FAST_MALLOC")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout == "system\n", result.stderr


def as_script(monkeypatch):
    """Make this process look like `python train.py --epochs 1`, the only kind use_fast_malloc() re-runs."""
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "train.py", "--epochs", "1"])
    monkeypatch.setattr(sys, "argv", ["train.py", "--epochs", "1"])
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("IMDB_FAST_MALLOC", raising=False)


def test_no_library_no_rerun(monkeypatch):
    """Where tcmalloc is missing (macOS, Windows, a bare Linux), a script runs on unchanged."""
    as_script(monkeypatch)
    looked = []
    monkeypatch.setattr(compat, "fast_malloc_library", lambda: looked.append(True))  # finds nothing
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("re-ran without a library"))
    compat.use_fast_malloc()
    assert looked == [True]  # it got as far as looking for the library
    assert "LD_PRELOAD" not in os.environ


def test_rerun_command_line(monkeypatch):
    """With a library found: the same Python, the same arguments, the library preloaded (in-process, execv caught)."""
    as_script(monkeypatch)
    monkeypatch.setattr(compat, "fast_malloc_library", lambda: "/usr/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    calls = []
    monkeypatch.setattr(os, "execv", lambda *a: calls.append(a))
    compat.use_fast_malloc()
    assert calls == [(sys.executable, [sys.executable, "train.py", "--epochs", "1"])]
    assert os.environ["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4 libother.so"


def test_same_metrics_with_and_without_the_speedups(synthetic_splits, tmp_path):
    """A fixed-seed tiny run: the default speed-ups (tcmalloc; bfloat16 on a CPU that has it) against the
    plain recipe (system allocator, float32) change how fast, not what is learned."""
    metrics = {}
    for name, flags, env in [("fast", ["--precision", "auto"], {"LD_PRELOAD": None, "IMDB_FAST_MALLOC": None}),
                             ("plain", ["--precision", "float32"], {"LD_PRELOAD": None, "IMDB_FAST_MALLOC": "0"})]:
        result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / name, *TINY, *flags, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["fast"]["malloc"] == ("tcmalloc" if TCMALLOC else "system")
    assert metrics["plain"]["malloc"] == "system"
    from imdb_distilbert.training import learning

    assert metrics["fast"]["training_precision"] == ("bfloat16" if learning.cpu_has_bf16() else "float32")
    assert metrics["plain"]["training_precision"] == "float32"
    for key in ("accuracy", "f1"):
        at_most(f"speed: |{key} with the speed-ups - without|", abs(metrics["fast"][key] - metrics["plain"][key]),
                TOLERANCE)
    at_least("speed: test accuracy with the speed-ups", metrics["fast"]["accuracy"], 0.9)


def test_auto_precision_is_float32_where_onednn_is_capped_without_bf16(monkeypatch):
    """With ONEDNN_MAX_CPU_ISA capping oneDNN to an instruction set without bfloat16 (AVX2, say), oneDNN aborts on
    bfloat16 products even on a CPU that has them, so --precision auto trains in float32 there."""
    from imdb_distilbert.training import learning

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = learning.cpu_has_bf16()
    for isa, has_bf16 in (("AVX2", False), ("avx512_core_vnni", False), ("AVX512_CORE_AMX", native), ("", native)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert learning.cpu_has_bf16() is has_bf16
        assert learning.choose_precision("auto") == ("bfloat16" if has_bf16 else "float32")


# The allocator does no arithmetic; bfloat16 rounds the inputs of every matrix product to 8 significant
# bits (the weights and their updates stay float32). The margin is 4 of the 200 test reviews.
TOLERANCE = 0.02
