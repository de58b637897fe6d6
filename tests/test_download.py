"""Downloading the splits, against a real HTTP server on loopback (no mocks)."""

import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import synthetic
from conftest import ROOT, assert_user_error, run_train, unavailable

from imdb_distilbert.data import dataset
from imdb_distilbert.errors import UserError

IMDB = ROOT.parent / "shared" / "data" / "imdb"  # the real splits (not committed)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The real IMDB splits; complete 25,000-row synthetic ones (one review empty, as in the real ones: right rows
    and labels, other reviews, as poisoned data would be), and a too-short spreadsheet."""
    if not all((IMDB / name).is_file() for name in dataset.SPLITS):
        unavailable(f"the real IMDB splits are not in {IMDB}")
    folder = tmp_path_factory.mktemp("served")
    for seed, name in enumerate(dataset.SPLITS):
        shutil.copy(IMDB / name, folder / name)
        frame = synthetic.reviews(dataset.ROWS_PER_SPLIT, seed)
        frame.loc[1234, "Reviews"] = None
        frame.to_excel(folder / f"synthetic-{name}", index=False)
    synthetic.reviews(100).to_excel(folder / "short.xlsx", index=False)
    return folder


@pytest.fixture(scope="module")
def server(files):
    """/full/NAME serves the real split; /short/NAME a 100-row split; /cut/NAME stops halfway; /synthetic/NAME
    other reviews; /swapped/NAME the other split; others 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            _, mode, name = self.path.split("/", 2)
            if mode not in ("full", "short", "cut", "synthetic", "swapped") or name not in dataset.SPLITS:
                self.send_error(404)
                return
            other = next(n for n in dataset.SPLITS if n != name)
            served = {"short": "short.xlsx", "synthetic": f"synthetic-{name}", "swapped": other}
            body = (files / served.get(mode, name)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_writes_checked_splits(server, files, tmp_path, capsys):
    dataset.download_splits(tmp_path / "data", url=server + "/full/")
    for name in dataset.SPLITS:
        assert (tmp_path / "data" / name).read_bytes() == (files / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["test.xlsx", "train.xlsx"]
    assert "downloading train.xlsx" in capsys.readouterr().err  # the progress bar


@pytest.fixture
def project(tmp_path):
    """A copy of the project's code with no data/ yet, so train.py's default data folder is empty."""
    shutil.copytree(ROOT / "src", tmp_path / "project" / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "project"


def test_train_py_downloads_when_default_data_is_missing(server, project, tmp_path):
    """train.py fetches the missing splits into data/, then trains."""
    result = run_train("--sample", 40, "--maxlen", 16, "--epochs", 1, "--batch-size", 16,
                       "--output", tmp_path / "out", script=project / "src" / "train.py",
                       env={"IMDB_DATA_URL": server + "/full"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "downloading them" in result.stdout and "downloading test.xlsx" in result.stderr
    assert {p.name for p in (project / "data").iterdir()} == {"train.xlsx", "test.xlsx"}
    assert (tmp_path / "out" / "tf_model.preproc").exists()


def test_offline_names_the_flags_and_leaves_nothing(project):
    with socket.socket() as s:  # a loopback port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_train(script=project / "src" / "train.py", env={"IMDB_DATA_URL": f"http://127.0.0.1:{port}/"})
    assert_user_error(result, "could not download", "--data-dir", "--train", "--test")
    assert list((project / "data").iterdir()) == []


@pytest.mark.parametrize("mode, fragment", [
    ("cut", "stopped early"),
    ("short", "has 100 rows and 2 labels, not 25000"),
    ("missing", "HTTP 404 Not Found"),
    ("synthetic", "holds other reviews or labels than IMDB's .content SHA-256"),
    ("swapped", "holds the train.xlsx split's reviews"),  # served as test.xlsx
])
def test_broken_downloads_replace_nothing(server, tmp_path, mode, fragment):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.xlsx").write_bytes(b"an earlier, complete download")  # present: must stay untouched
    with pytest.raises(UserError, match=fragment):
        dataset.download_splits(data, url=f"{server}/{mode}/")
    assert [p.name for p in data.iterdir()] == ["train.xlsx"]
    assert (data / "train.xlsx").read_bytes() == b"an earlier, complete download"
