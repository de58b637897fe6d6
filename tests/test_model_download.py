"""The pretrained model is downloaded at its pinned revision, from a real HTTP server on loopback that answers as
the Hugging Face Hub does (the tests' tiny model, served under one commit only), and metrics.json says which."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import tiny_distilbert
from conftest import HF_HOME, assert_user_error, run_train

from imdb_distilbert import network

PINNED = "ab" * 20  # the revision the fake Hub has; main there is something else


@pytest.fixture(scope="module")
def hub():
    """A fake Hub: /distilbert-base-uncased/resolve/PINNED/FILE serves the tiny model's files, with the headers
    huggingface_hub reads (X-Repo-Commit, ETag); any other revision is unknown. Yields (url, requests seen)."""
    snapshot = HF_HOME / "hub" / "models--distilbert-base-uncased" / "snapshots" / tiny_distilbert.COMMIT
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self, body):
            parts = self.path.split("/")  # "", repo, "resolve", revision, file
            seen.append(self.path)
            if len(parts) != 5 or parts[1] != network.BASE_MODEL or parts[3] != PINNED:
                self.send_response(404)
                self.send_header("X-Error-Code", "RevisionNotFound")
                self.end_headers()
                return
            path = snapshot / parts[4]
            if not path.is_file():
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            content = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", PINNED)
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body:
                self.wfile.write(content)

        def do_HEAD(self):
            self.answer(body=False)

        def do_GET(self):
            self.answer(body=True)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def test_the_model_is_downloaded_at_the_pinned_revision(hub, synthetic_splits, tmp_path):
    """An empty cache, a reachable Hub: train.py downloads the pinned commit (never main), trains on it, and
    metrics.json records it."""
    url, seen = hub
    result = run_train("--data-dir", synthetic_splits, "--sample", 40, "--maxlen", 16, "--epochs", 1,
                       "--output", tmp_path / "out",
                       env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": None, "HF_ENDPOINT": url,
                            "IMDB_BASE_REVISION": PINNED})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"downloading distilbert-base-uncased at revision {PINNED[:12]}" in result.stdout
    assert seen and all(f"/resolve/{PINNED}/" in path for path in seen), seen
    repo = tmp_path / "hf" / "hub" / "models--distilbert-base-uncased"
    assert (repo / "refs" / "main").read_text() == PINNED and (repo / "snapshots" / PINNED / "vocab.txt").is_file()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["base_model"] == {"name": "distilbert-base-uncased", "revision": PINNED, "pinned": PINNED}


def test_a_revision_the_hub_lacks_is_one_sentence(hub, synthetic_splits, tmp_path):
    url, _ = hub
    result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / "out",
                       env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": None, "HF_ENDPOINT": url,
                            "IMDB_BASE_REVISION": "cd" * 20})
    assert_user_error(result, "could not load distilbert-base-uncased", "it answered HTTP 404")
    assert not (tmp_path / "out").exists()
