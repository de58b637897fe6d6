"""No network and no cached model: every entry point that may download says so in one sentence, in seconds.

Both kinds of "no network", on loopback: a port that refuses connections (no route, nothing listening),
and one that accepts them and never answers (a firewall or proxy that drops packets). HF_ENDPOINT and
IMDB_DATA_URL point at them; the Hugging Face cache is empty, and HF_HUB_OFFLINE is not set.
"""

import datetime
import json
import os
import shutil
import socket
import time

import nbformat
import pytest
from conftest import HF_HOME, ROOT, assert_user_error, run_train
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from test_notebook import parameters, read

from imdb_distilbert import network
from imdb_distilbert.errors import UserError

SECONDS = 10  # what the issue asks for: the sentence within 10 s of starting


@pytest.fixture(scope="module")
def ports():
    """{"refused": a loopback port nobody listens on, "silent": one that accepts connections and never answers}."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(128)  # the kernel completes the handshakes; nobody ever reads or answers
    yield {"refused": refused, "silent": silent.getsockname()[1]}
    silent.close()


def no_model(tmp_path, port):
    """The environment of a machine without a network and with an empty Hugging Face cache."""
    (tmp_path / "empty-hf").mkdir(exist_ok=True)
    return {"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": None,
            "HF_ENDPOINT": f"http://127.0.0.1:{port}"}


def assert_fast_and_short(result, seconds, *fragments):
    """One 'error:' sentence with `fragments`, at most 3 lines in all, within SECONDS; no retries or warnings."""
    error = assert_user_error(result, *fragments)
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 3 and not any("Retry" in line or "WARNING" in line for line in lines), lines
    assert seconds <= SECONDS, f"took {seconds:.1f} s: {error}"
    return error


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_train_py_without_network_or_cached_model(kind, ports, synthetic_splits, tmp_path):
    started = time.monotonic()
    result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / "out",
                       env=no_model(tmp_path, ports[kind]))
    seconds = time.monotonic() - started
    reason = {"refused": "(connection refused)",
              "silent": f"(no answer within {network.TIMEOUT} s; on a slow connection, set HF_HUB_ETAG_TIMEOUT"}[kind]
    error = assert_fast_and_short(result, seconds, "could not load distilbert-base-uncased",
                                  f"the Hub at http://127.0.0.1:{ports[kind]} cannot be reached {reason}",
                                  "connect to the internet once", "set HF_HOME")
    assert not (tmp_path / "out").exists()
    print(f"{kind}: {seconds:.1f} s, {error}")


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_train_py_without_network_or_splits(kind, ports, tmp_path):
    """The model is cached (the tests' tiny one), the default data/ folder empty: the download says it at once."""
    shutil.copytree(ROOT / "src", tmp_path / "project" / "src", ignore=shutil.ignore_patterns("__pycache__"))
    started = time.monotonic()
    result = run_train("--output", tmp_path / "out", script=tmp_path / "project" / "src" / "train.py",
                       env={"IMDB_DATA_URL": f"http://127.0.0.1:{ports[kind]}/", "HF_HUB_OFFLINE": None})
    seconds = time.monotonic() - started
    error = assert_fast_and_short(result, seconds, f"could not download http://127.0.0.1:{ports[kind]}/train.xlsx",
                                  "connect to the internet", "--data-dir")
    assert list((tmp_path / "project" / "data").iterdir()) == []
    print(f"{kind}: {seconds:.1f} s, {error}")


def test_offline_flag_without_cached_model_is_one_sentence(synthetic_splits, tmp_path, ports):
    env = {**no_model(tmp_path, ports["silent"]), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / "out", env=env)
    assert_fast_and_short(result, time.monotonic() - started, "not in the Hugging Face cache",
                          "HF_HUB_OFFLINE forbids downloading it", "unset HF_HUB_OFFLINE")


@pytest.mark.parametrize("kind", ["refused"])  # a port that never answers: in the notebook test below
def test_train_start_without_network(kind, ports, synthetic_splits, tmp_path, monkeypatch):
    """The notebook's entry, in this Python: a UserError at once, whose IPython rendering is its one line."""
    from imdb_distilbert.training import recipe

    for name, value in no_model(tmp_path, ports[kind]).items():
        monkeypatch.delenv(name) if value is None else monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(UserError, match="could not load distilbert-base-uncased") as raised:
        recipe.start(data_dir=synthetic_splits, output=tmp_path / "out")
    assert time.monotonic() - started <= SECONDS
    assert raised.value._render_traceback_() == [f"error: {raised.value}"]


def test_slow_connection_can_wait_longer(ports, tmp_path, monkeypatch):
    """huggingface_hub's HF_HUB_ETAG_TIMEOUT sets how long the Hub's answer is waited for."""
    for name, value in {**no_model(tmp_path, ports["silent"]), "HF_HUB_ETAG_TIMEOUT": "1"}.items():
        monkeypatch.delenv(name) if value is None else monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"\(no answer within 1 s; on a slow connection"):
        network.check_model()
    assert 1 <= time.monotonic() - started < 3


def test_cached_model_is_not_asked_for(ports, monkeypatch):
    """A fully cached model loads with no flag and no network, as before: no Hub request at all."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HOME", str(HF_HOME))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{ports['silent']}")
    started = time.monotonic()
    network.check_model()
    assert time.monotonic() - started < 1 and os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_notebook_cells_without_network(kind, ports, synthetic_splits, tmp_path):
    """The notebook's cells up to recipe.start, in a kernel without a network or a cached model: the cell
    that would download shows one line, the error, within SECONDS (the kernel's start-up not counted)."""
    nb = read()
    at = next(i for i, c in enumerate(nb.cells) if "recipe.start(" in c.source)
    nb.cells = nb.cells[:at + 1]
    params = parameters(synthetic_splits, tmp_path / "out")
    nb.cells.insert(next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1,
                    nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    env = {k: v for k, v in {**os.environ, **no_model(tmp_path, ports[kind])}.items() if v is not None}
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    with pytest.raises(CellExecutionError):
        client.execute(env=env)
    cell = nb.cells[-1]
    assert "recipe.start(" in cell.source
    outputs = [o for o in cell.outputs]
    assert [o.output_type for o in outputs] == ["error"], outputs
    assert len(outputs[0].traceback) == 1 and outputs[0].traceback[0].startswith(
        "error: could not load distilbert-base-uncased"), outputs[0].traceback
    timing = cell.metadata.execution
    seconds = (datetime.datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
               - datetime.datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
    assert seconds <= SECONDS, json.dumps(timing)
    print(f"{kind}: the cell took {seconds:.1f} s")
