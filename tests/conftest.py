"""Shared set-up: an offline Hugging Face cache holding a tiny DistilBERT, and a way to run the CLI.

The cache location must be chosen before huggingface_hub is imported (it reads HF_HOME once),
so it is set here, at import time, for this process and every subprocess the tests start.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

HF_HOME = Path(tempfile.mkdtemp(prefix="imdb-distilbert-hf-"))
os.environ.update(HF_HOME=str(HF_HOME), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
os.environ.pop("IMDB_DATA_URL", None)

import compat  # noqa: E402,F401  (before TensorFlow)
import pytest  # noqa: E402

import synthetic  # noqa: E402
import tiny_distilbert  # noqa: E402


def pytest_sessionstart(session):
    tiny_distilbert.install(HF_HOME, extra_words=synthetic.WORDS)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(HF_HOME, ignore_errors=True)


REPORTED = []


def report(line):
    """Show `line` at the end of the test run (facts a test measured, such as the versions it ran with)."""
    REPORTED.append(line)


def pytest_terminal_summary(terminalreporter):
    if REPORTED:
        terminalreporter.section("what the tests ran with")
        for line in REPORTED:
            terminalreporter.write_line(line)


def run_train(*args, env=None, cwd=ROOT, script=ROOT / "src" / "train.py", timeout=600, input=None):
    """Run src/train.py as a user would; returns the CompletedProcess (text output).

    `env` adds to this process's environment; a value of None removes that variable.
    `input` is sent to its standard input.
    """
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, str(script), *map(str, args)], input=input,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def interrupt_after_first_epoch(command, timeout=300):
    """Start a training `command`, press Ctrl-C (SIGINT) once it has saved epoch 1's checkpoint, and wait.
    Returns (exit code, everything it printed)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if "saved a checkpoint of epoch 1 of" in line:
            process.send_signal(signal.SIGINT)
            break
    printed, _ = process.communicate(timeout=timeout)
    return process.returncode, printed


def run_predict(*args, **kwargs):
    """Run src/predict.py as a user would (same keywords as run_train)."""
    return run_train(*args, script=ROOT / "src" / "predict.py", **kwargs)


def assert_user_error(result, *fragments):
    """The CLI failed the way a user should see it: non-zero exit, one 'error:' line, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# Settings a 2-layer, 32-wide DistilBERT learns the synthetic reviews with in a few seconds.
TINY = ["--maxlen", 32, "--batch-size", 16, "--lr", 3e-3, "--epochs", 3, "--seed", 7]


@pytest.fixture(scope="session")
def synthetic_splits(tmp_path_factory):
    """400 training and 200 test reviews that a tiny model can learn."""
    return synthetic.write_splits(tmp_path_factory.mktemp("synthetic"), 400, 200)


@pytest.fixture(scope="session")
def trained(synthetic_splits, tmp_path_factory):
    """src/train.py run once with the TINY settings: (predictor folder, CompletedProcess). Treat it as read-only."""
    output = tmp_path_factory.mktemp("run") / "predictor"
    result = run_train("--data-dir", synthetic_splits, "--output", output, *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """A copy of the trained predictor, exported to ONNX by src/export.py: (folder, CompletedProcess)."""
    folder = tmp_path_factory.mktemp("exported") / "predictor"
    shutil.copytree(trained[0], folder)
    result = run_train("--model", folder, script=ROOT / "src" / "export.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, result
