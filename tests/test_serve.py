"""src/serve.py on the tiny exported model: the API against predict.py, bad requests, load, and a real browser."""

import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import synthetic
from conftest import ROOT, assert_user_error, at_least, run_predict, run_train
from test_export import blocking  # a Python in which the named modules cannot be imported
from test_uncertain import threshold_between

from imdb_distilbert.data import windows
from imdb_distilbert.inference import backends

SAMPLE = ROOT / "data" / "sample" / "test.xlsx"  # real reviews, longer than the tiny model's maxlen: cut
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def stop(process, seconds):
    """Ask `process` to end (SIGTERM); kill it if it has not within `seconds`."""
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=60)


class Server:
    """src/serve.py running as a subprocess on 127.0.0.1 and a free port; its output collected as it comes."""

    def __init__(self, *args, env=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen([sys.executable, str(ROOT / "src" / "serve.py"), "--port", "0",
                                         *map(str, args)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = []
        started = threading.Event()
        threading.Thread(target=self._read, args=(started,), daemon=True).start()
        started.wait(timeout=120)
        found = [re.search(r"serving on http://([\d.]+):(\d+)/", line) for line in self.lines]
        found = [m for m in found if m]
        if not found:
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines)[-3000:])
        self.host, self.port = found[0].group(1), int(found[0].group(2))
        self.url = f"http://{self.host}:{self.port}/"

    def _read(self, started):
        for line in self.process.stdout:
            self.lines.append(line)
            if "serving on" in line:
                started.set()
        started.set()  # it exited

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) of one request on a new connection."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            kind = response.getheader("content-type", "")
            return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()
        finally:
            connection.close()

    def predict(self, texts):
        return self.request("POST", "/predict", json.dumps({"texts": texts}), {"Content-Type": "application/json"})

    def stop(self):
        stop(self.process, 20)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """The default server on the exported folder (onnx-int8), in a Python where TensorFlow and its kin cannot import."""
    no_tensorflow = blocking(tmp_path_factory.mktemp("serve"), "tensorflow", "tf_keras", "keras", "ktrain", "compat",
                             "transformers", "torch")
    running = Server("--model", exported[0], "--explain", env=no_tensorflow)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def texts():
    """Reviews the model knows, and real ones it must cut (one line each, for predict.py's .txt input)."""
    real = [" ".join(t.split()) for t in pd.read_excel(SAMPLE)["Reviews"].dropna()][:12]
    return list(synthetic.reviews(30, seed=21)["Reviews"]) + real


def predict_py(folder, backend, texts, tmp_path):
    """What `predict.py --backend BACKEND --json` answers for `texts`: one dict per text, without the text."""
    path = tmp_path / f"reviews-{backend}.txt"
    path.write_text("\n".join(texts) + "\n")
    result = run_predict("--model", folder, "--backend", backend, "--json", "--file", path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.pop("text") for r in rows] == texts
    return rows


def test_says_its_default_backend_and_is_healthy(server, exported):
    assert f"backend onnx-int8 (the folder has an ONNX export); loading {exported[0]}" in "".join(server.lines)
    status, health = server.request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["backend"] == "onnx-int8"
    assert health["classes"] == ["neg", "pos"]


def test_api_gives_predict_py_numbers(server, exported, texts, tmp_path):
    status, answer = server.predict(texts)
    assert status == 200, answer
    assert answer["backend"] == "onnx-int8"
    assert answer["predictions"] == predict_py(exported[0], "onnx-int8", texts, tmp_path)
    labels = [p["label"] for p in answer["predictions"]]
    truth = list(synthetic.reviews(30, seed=21)["Sentiment"])
    # strict=False: `labels` has the 12 real reviews after the 30 synthetic ones of `truth`
    at_least("serve: accuracy on 30 synthetic reviews", sum(a == b for a, b in zip(labels, truth, strict=False)) / 30,
             0.9)


def test_min_confidence_marks_what_predict_py_marks(server, exported, texts, tmp_path):
    """A request's "min_confidence" labels "uncertain" the reviews predict.py --min-confidence labels so."""
    threshold = threshold_between([max(p["prob_neg"], p["prob_pos"]) for p in server.predict(texts)[1]["predictions"]])
    body = json.dumps({"texts": texts, "min_confidence": threshold}).encode()
    status, answer = server.request("POST", "/predict", body, {"Content-Type": "application/json"})
    assert status == 200, answer
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(texts) + "\n")
    result = run_predict("--model", exported[0], "--backend", "onnx-int8", "--json", "--file", path,
                         "--min-confidence", threshold)
    want = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert [p["label"] for p in answer["predictions"]] == want and "uncertain" in want


def test_fp32_server_gives_predict_py_numbers(exported, texts, tmp_path):
    fp32 = Server("--model", exported[0], "--backend", "onnx")
    try:
        assert "backend onnx (chosen with --backend)" in "".join(fp32.lines)
        status, answer = fp32.predict(texts)
    finally:
        fp32.stop()
    assert status == 200 and answer["backend"] == "onnx"
    assert answer["predictions"] == predict_py(exported[0], "onnx", texts, tmp_path)


def test_default_is_ktrain_without_an_export(trained):
    """Said at start-up, before the model loads (the ktrain backend's scoring is predict.py's:
    tests/test_predict.py)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "src" / "serve.py"), "--model", str(trained[0]),
                                "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, process.kill)  # a server that prints nothing fails the test, not blocks it
    watchdog.start()
    try:
        first = process.stdout.readline()
    finally:
        watchdog.cancel()
        process.kill()
        process.wait(timeout=60)
    assert first.startswith("backend ktrain (the folder has no ONNX export; "
                            "run src/export.py for the faster onnx-int8)")


def test_busy_port_is_one_sentence(server, exported):
    result = run_train("--model", exported[0], "--port", server.port, script=ROOT / "src" / "serve.py", timeout=120)
    assert_user_error(result, f"cannot listen on 127.0.0.1:{server.port}", "choose another --port")


@pytest.fixture(scope="module")
def wonderful(server):
    """The server's answer to one request for one review, before any bad request."""
    status, answer = server.predict(["a wonderful film"])
    assert status == 200, answer
    return answer


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/predict", b"great film", 400, "not JSON"),
    ("POST", "/predict", b'{"texts": ["caf\xe9"]}', 400, "not UTF-8"),
    ("POST", "/predict", b"", 400, "not JSON"),
    ("POST", "/predict", b'["great film"]', 422, 'no "texts"'),
    ("POST", "/predict", b'{"text": "great film"}', 422, 'no "texts"'),
    ("POST", "/predict", b'{"texts": "great film"}', 422, "must be a list of strings"),
    ("POST", "/predict", b'{"texts": ["great", 3]}', 422, "must be a list of strings"),
    ("POST", "/predict", b'{"texts": [["great"]]}', 422, "must be a list of strings"),
    ("POST", "/predict", b'{"texts": []}', 422, '"texts" is empty'),
    ("POST", "/predict", b'{"texts": ["great", "  "]}', 422, "texts[1] is empty"),
    ("POST", "/predict", json.dumps({"texts": ["great"] * 65}).encode(), 413, "at most 64 per request"),
    ("POST", "/predict", json.dumps({"texts": ["great", "a" * 20_001]}).encode(), 413, "texts[1] has 20001 characters"),
    ("POST", "/predict", json.dumps({"texts": ["a" * 19_000] * 60}).encode(), 413, "larger than 1000000 bytes"),
    ("POST", "/predict", b"{" * 200_000, 400, "not JSON"),  # deep nesting
    ("POST", "/predict", b"[" * 100_000 + b"]" * 100_000, 400, "nests JSON too deeply"),  # valid, 100,000 deep
    ("POST", "/predict", b'{"texts": ["fine", "\\ud800"]}', 422, "texts[1] holds a lone surrogate"),
    ("POST", "/predict", b'{"texts": ["fine"], "min_confidence": "high"}', 422, '"min_confidence" must be a number'),
    ("POST", "/predict", b'{"texts": ["fine"], "min_confidence": 1.5}', 422, "must be a probability above 0"),
    ("GET", "/predict", None, 405, "GET /predict"),
    ("POST", "/health", b"{}", 405, "POST /health"),
    ("GET", "/nothing-here", None, 404, "GET /nothing-here"),
])
def test_bad_request_gets_4xx_json_and_server_keeps_serving(server, wonderful, method, path, body, status, fragment):
    got, answer = server.request(method, path, body, JSON)
    assert got == status, answer
    assert fragment in answer["error"] and answer["error"].endswith("."), answer
    assert server.predict(["a wonderful film"]) == (200, wonderful)


def test_garbage_and_broken_connections_do_not_stop_it(server):
    for data in (b"\x00\xff garbage\r\n\r\n", b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"te"):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(data)  # the second one hangs up mid-body
            if data.startswith(b"\x00"):
                assert sock.recv(100).startswith(b"HTTP/1.1 400")
    got, answer = server.request("POST", "/predict", b'{"texts": ["great"]}', {**JSON, "Content-Length": "99999999"})
    assert got == 413
    got, answer = server.predict(["an awful film"])
    assert got == 200 and answer["predictions"][0]["label"] in ("neg", "pos")
    assert server.process.poll() is None


CLIENTS, SECONDS = 8, 4


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_load_on_loopback(exported, texts, tmp_path, backend):
    """CLIENTS clients post 1-3 random texts each, again and again, for SECONDS seconds, to a server on each ONNX
    model: every answer is predict.py's, though the server batches the requests as they arrive.

    A review's scores do not depend on what else is in the model call (int8 quantizes each token on its own,
    export/quantize.py), so they match to the 6 decimals both print (2e-6: each rounds by up to 5e-7)."""
    expected = dict(zip(texts, predict_py(exported[0], backend, texts, tmp_path), strict=True))
    server = Server("--model", exported[0], "--backend", backend)
    try:
        before = server.request("GET", "/health")[1]
        answers, failures, responses = load(server, texts)
        after = server.request("GET", "/health")[1]
    finally:
        server.stop()
    assert not failures, failures[:5]
    assert len(answers) >= 2 * CLIENTS
    for text, answer in answers:
        want = expected[text]
        assert answer["label"] == want["label"], text
        assert abs(answer["prob_pos"] - want["prob_pos"]) <= 2e-6, (text, answer, want)
    requests = after["requests_scored"] - before["requests_scored"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == len(responses) and calls < requests  # concurrent requests were batched


# Reviews longer than maxlen (data/windows.py): read as the run chose, or as --long-reviews says; a review's answer
# is the one it gets alone, whatever other clients' reviews share its model call.

READING = ("long_reviews", "window_overlap", "max_windows")  # what /health says of it, as onnx.json does


@pytest.fixture(scope="module")
def long_texts():
    """10 reviews of 70-80 words with their verdict in the middle (more than twice maxlen 32), then 6 short ones."""
    return (list(synthetic.reviews(10, seed=48, long=True, at="middle")["Reviews"])
            + list(synthetic.reviews(6, seed=49)["Reviews"]))


def alone(folder, texts, **reading):
    """({text: its probabilities, scored alone}, the lines said scoring all `texts` in one call (the windows' cap),
    the model) of backends.load(folder, "onnx-int8", **reading)."""
    model = backends.load(folder, "onnx-int8", **reading)
    said = []
    model.say = said.append
    model.predict_proba(texts)
    return {text: model.predict_proba([text])[0] for text in texts}, said, model


def said_by(server, fragment, seconds=5):
    """Whether the server printed a line holding `fragment` (its output is read by a thread: waited for)."""
    deadline = time.monotonic() + seconds
    while not any(fragment in line for line in server.lines):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_default_reading_is_the_runs(server, exported, long_texts):
    """Without --long-reviews the server reads long reviews as the training run chose (windows, the default): /health
    says so as onnx.json does, and a long review gets backends.load(..., long_reviews="windows")'s answer."""
    saved = json.loads((exported[0] / "onnx.json").read_text())
    status, health = server.request("GET", "/health")
    assert status == 200 and health["maxlen"] == saved["maxlen"] == 32
    assert {k: health[k] for k in READING} == {k: saved[k] for k in READING} and health["long_reviews"] == "windows"
    want, _, _ = alone(exported[0], long_texts[:10], long_reviews="windows")
    status, answer = server.predict(long_texts[:10])
    assert status == 200, answer
    for text, got in zip(long_texts[:10], answer["predictions"], strict=True):
        assert abs(got["prob_pos"] - want[text][1]) <= 1e-5, (text, got, want[text])


@pytest.mark.parametrize("flags, reading", [
    (["--long-reviews", "cut"], {"long_reviews": "cut"}),
    (["--long-reviews", "windows", "--window-overlap", 14, "--max-windows", 4],
     {"long_reviews": "windows", "overlap": 14, "max_windows": 4}),
], ids=["cut", "windows-overlap-14-cap-4"])
def test_long_reviews_are_read_as_asked_whatever_shares_the_model_call(exported, long_texts, flags, reading):
    """--long-reviews cut, or windows of another overlap and cap: each long review gets what backends.load with those
    settings gives it alone (1e-5: the server rounds to 6 decimals), asked alone and among CLIENTS clients' requests
    batched together; /health says the reading; the cap's note is said in the server's log (the long reviews, of 75-82
    word pieces, are 4 or 5 windows of 30 that overlap by 14: the cap of 4 cuts some)."""
    want, said, model = alone(exported[0], long_texts, **reading)
    default, _, _ = alone(exported[0], long_texts[:10])  # what the run chose: these settings must change answers
    assert max(abs(want[t][1] - default[t][1]) for t in long_texts[:10]) > 0.01
    assert bool(said) == (reading["long_reviews"] == "windows")
    server = Server("--model", exported[0], *flags)
    try:
        health = server.request("GET", "/health")[1]
        status, answer = server.predict(long_texts[:10])
        noted = said_by(server, said[0]) if said else said_by(server, "note:", seconds=1)
        answers, failures, responses = load(server, long_texts, seconds=3)
        after = server.request("GET", "/health")[1]
    finally:
        server.stop()
    assert {k: health[k] for k in READING} == model.reading.record()
    assert status == 200 and noted == bool(said), "".join(server.lines)[-3000:]
    for text, got in zip(long_texts[:10], answer["predictions"], strict=True):
        assert abs(got["prob_pos"] - want[text][1]) <= 1e-5, (text, got, want[text])
    assert not failures, failures[:5]
    assert {text for text, _ in answers} >= set(long_texts[:10])
    for text, got in answers:
        assert got["label"] == model.classes[int(want[text].argmax())], text
        assert abs(got["prob_pos"] - want[text][1]) <= 1e-5, (text, got, want[text])
    assert after["model_calls"] - health["model_calls"] < after["requests_scored"] - health["requests_scored"]


def test_bad_reading_options_are_one_sentence(exported):
    """Said before the model loads, in the words of the flag, exit 2."""
    for flag, value, said in (("--window-overlap", 15, "--window-overlap must be from 0 to 14 word pieces"),
                              ("--max-windows", 0, "--max-windows must be at least 1")):
        result = run_train("--model", exported[0], "--port", 0, flag, value, script=ROOT / "src" / "serve.py",
                           timeout=120)
        assert_user_error(result, said)
        assert result.returncode == 2 and "loading" not in result.stdout, result.stdout


def load(server, texts, clients=CLIENTS, seconds=SECONDS):
    """`clients` threads posting 1-3 random `texts` each, again and again, for `seconds` seconds:
    ([(text, its prediction)], [failures], [statuses of the answered requests])."""
    answers, failures, responses = [], [], []

    def client(seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chosen = rng.sample(texts, rng.randint(1, 3))
            try:
                status, answer = server.predict(chosen)
            except OSError as error:
                failures.append(repr(error))
                continue
            if status != 200:
                failures.append((status, answer))
            else:
                answers.extend(zip(chosen, answer["predictions"], strict=True))
                responses.append(status)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    assert not any(thread.is_alive() for thread in threads)
    return answers, failures, responses


class Chromium:
    """Headless Chromium driven over its DevTools protocol (a websocket): no driver binary needed."""

    def __init__(self, url):
        import websocket  # websocket-client, in requirements.txt

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and endpoint is None:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            endpoint = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", line)
        if endpoint is None:
            self.close()
            raise AssertionError("Chromium did not start its DevTools endpoint")
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep its pipe drained
        page = None
        while time.monotonic() < deadline and page is None:
            with urllib.request.urlopen(f"http://{endpoint.group(1)}/json/list", timeout=10) as response:
                page = next((t for t in json.load(response) if t["type"] == "page" and t["url"].startswith(url)), None)
            time.sleep(0.1) if page is None else None
        assert page, "Chromium opened no page"
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0

    def send(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events; the answer carries our id
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, seconds=20):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")

    def click(self, element_id):
        """A real mouse click at the middle of the element."""
        box = self.evaluate(f"(() => {{ const r = document.getElementById('{element_id}').getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self):
        if getattr(self, "socket", None):
            self.socket.close()
        stop(self.process, 10)
        shutil.rmtree(self.profile, ignore_errors=True)


def test_browser_types_a_review_and_reads_the_label(server, exported, tmp_path):
    assert CHROMIUM, "the browser test needs Chromium: `apt-get install chromium` (.ci/run does it as root)"
    review = "A wonderful film with superb acting and a brilliant script, I loved it."
    want = predict_py(exported[0], "onnx-int8", [review], tmp_path)[0]
    browser = Chromium(server.url)
    try:
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('classify')")
        html = browser.evaluate("document.documentElement.outerHTML")
        assert "://" not in html  # everything the page needs is in it: no CDN, no other server
        browser.click("review")
        browser.send("Input.insertText", text=review)  # typed, as from a keyboard
        assert browser.evaluate("document.getElementById('review').value") == review
        browser.click("classify")
        label = browser.wait_for("document.getElementById('label').textContent")
        probability = browser.evaluate("document.getElementById('probability').textContent")
        bar = browser.evaluate("document.getElementById('bar').style.width")
        # A review the server refuses shows its one-sentence error on the page.
        browser.evaluate("document.getElementById('review').value = '   '")
        browser.click("classify")
        error = browser.wait_for("document.getElementById('error').textContent")
        browser.evaluate("document.getElementById('review').value = 'an awful film'")
        browser.click("classify")
        off = browser.wait_for("document.getElementById('note').textContent")
    finally:
        browser.close()
    assert off == ("Word highlighting is off on this server: tensorflow is not installed; "
                   "install requirements.txt to have them.")
    assert label == want["label"]
    assert probability == f"{want['prob_' + label]:.4f}"
    assert float(bar.rstrip("%")) == pytest.approx(100 * want["prob_" + label], abs=0.051)  # "100%" for 100.0%
    assert error == "texts[0] is empty; send reviews with some text."


# Explanations (inference/explain.py) through the server: a server whose Python has TensorFlow.

@pytest.fixture(scope="module")
def explaining_server(exported):
    running = Server("--model", exported[0], "--explain")
    yield running
    running.stop()


def explain_py(folder, texts):
    from imdb_distilbert.inference import explain

    return explain.explain(str(folder), texts)


def test_explain_is_off_without_tensorflow(server):
    assert ("explanations: off (tensorflow is not installed; install requirements.txt to have them)"
            in "".join(server.lines))
    status, health = server.request("GET", "/health")
    assert health["explain"] is False
    status, answer = server.request("POST", "/explain", json.dumps({"texts": ["a great film"]}), JSON)
    assert status == 503 and answer["error"] == ("explanations are off on this server: tensorflow is not installed; "
                                                 "install requirements.txt to have them.")


def test_no_explain_turns_them_off(exported):
    running = Server("--model", exported[0], "--no-explain")
    try:
        status, answer = running.request("POST", "/explain", json.dumps({"texts": ["a great film"]}), JSON)
        assert status == 503 and "it was started with --no-explain" in answer["error"]
        assert running.predict(["a great film"])[0] == 200
    finally:
        running.stop()


def test_explain_api_gives_explain_py_scores(explaining_server, exported, texts):
    """The words and scores of inference/explain.py on the TensorFlow model, cut as training cut (the real reviews)."""
    chosen = texts[:3] + texts[-2:]
    assert "explanations: on (POST /explain" in "".join(explaining_server.lines)
    assert explaining_server.request("GET", "/health")[1]["explain"] is True
    status, answer = explaining_server.request("POST", "/explain", json.dumps({"texts": chosen}), JSON)
    assert status == 200, answer
    want = explain_py(exported[0], chosen)
    assert [a["text"] for a in answer["explanations"]] == chosen
    for got, expected in zip(answer["explanations"], want, strict=True):
        assert got["label"] == expected["label"] and got["cut"] == [list(c) for c in expected["cut"]]
        assert ([(w["word"], w["start"], w["end"]) for w in got["words"]]
                == [(w["word"], w["start"], w["end"]) for w in expected["words"]])
        assert got["words"] and all(g["scores"]["pos"] == pytest.approx(e["scores"]["pos"], abs=1e-5)
                                    for g, e in zip(got["words"], expected["words"], strict=True))
    assert answer["explanations"][-1]["tokens_cut"] > 0  # the real reviews are longer than maxlen 32
    for body, status, fragment in [(json.dumps({"texts": ["great"] * 9}), 413, "at most 8 per request"),
                                   (json.dumps({"texts": [" "]}), 422, "texts[0] is empty"),
                                   ("great", 400, "not JSON")]:
        got, answer = explaining_server.request("POST", "/explain", body, JSON)
        assert got == status and fragment in answer["error"], answer
    assert explaining_server.predict(["a great film"])[0] == 200


def test_browser_shows_the_words_highlighted(explaining_server, exported):
    """The page colours each word by its score, as inference/explain.py gives it; greys what the model did not read."""
    assert CHROMIUM, "the browser test needs Chromium: `apt-get install chromium` (.ci/run does it as root)"
    review = ("An awful film, boring and dull from start to end; the worst script, hated it. "
              "The music was great though, and the cast did a wonderful job with the little they had \U0001F3AC.")
    want, = explain_py(exported[0], [review])
    browser = Chromium(explaining_server.url)
    try:
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('classify')")
        browser.click("review")
        browser.send("Input.insertText", text=review)
        browser.click("classify")
        browser.wait_for("document.querySelectorAll('#words span[data-score]').length > 0", seconds=60)
        spans = browser.evaluate("Array.from(document.querySelectorAll('#words span')).map("
                                 "(s) => [s.textContent, s.dataset.score || null, s.className, s.style.background])")
        shown = browser.evaluate("document.getElementById('words').textContent")
        key = browser.evaluate("document.getElementById('key').textContent")
        note = browser.evaluate("document.getElementById('note').textContent")
        label = browser.evaluate("document.getElementById('label').textContent")
    finally:
        browser.close()
    assert shown == review  # every character once, in order (the emoji counted as one, as Python counts)
    words = [(text, float(score)) for text, score, _, _ in spans if score is not None]
    assert [w for w, _ in words] == [w["word"] for w in want["words"]]
    assert all(score == pytest.approx(w["scores"][want["label"]], abs=1e-4)
               for (_, score), w in zip(words, want["words"], strict=True))
    assert all(background.startswith("rgba(0, 150, 0" if score and float(score) > 0 else "rgba(220, 0, 0")
               for _, score, _, background in spans if score is not None)
    assert [s[0] for s in spans if s[2] == "cut"] == [review[a:b] for a, b in want["cut"]] and want["cut"]
    other = {"neg": "pos", "pos": "neg"}[want["label"]]
    assert key == f"The words that decided it: towards {want['label']} towards {other}"
    assert f"The model read {want['tokens_read']} word pieces; the grey text ({want['tokens_cut']}) was cut." in note
    assert label == want["label"]


# The request path with a stand-in model, in this process: what a failing model and a full batch do.

class CountingModel:
    """Stands in for a backend: probabilities made from each text's length, every call recorded; a text
    holding "explode" makes the call fail, as a model might on input it cannot handle."""

    classes = ["neg", "pos"]
    batch_size = 32
    reading = windows.Reading(maxlen=None)  # a backend's: how long reviews are read (/health says it)

    def __init__(self):
        self.calls = []

    def predict_proba(self, texts, done=None):
        self.calls.append(list(texts))
        if any("explode" in t for t in texts):
            raise RuntimeError("the model broke")
        pos = [min(len(t), 100) / 100 for t in texts]
        return np.array([[1 - p, p] for p in pos])


def test_a_failing_model_gets_500_and_the_server_keeps_serving(capsys):
    from starlette.testclient import TestClient

    from imdb_distilbert.serving import serve

    model = CountingModel()
    with TestClient(serve.create_app(model, "onnx", None, "not needed here")) as client:
        failed = client.post("/predict", json={"texts": ["it will explode"]})
        assert failed.status_code == 500
        assert failed.json() == {"error": "the model failed on this request; see the server's log."}
        assert "error scoring 1 texts: RuntimeError('the model broke')" in capsys.readouterr().err
        answer = client.post("/predict", json={"texts": ["x" * 30, "y" * 80]})
        assert answer.status_code == 200
        assert [p["prob_pos"] for p in answer.json()["predictions"]] == pytest.approx([0.3, 0.8])
        assert client.get("/health").json()["model_calls"] == 2


def test_a_request_that_does_not_fit_the_batch_waits_for_the_next():
    """Requests of 40, 30 and 10 texts arrive together: 40 + 30 is over MAX_BATCH (64), so the 30 are held over
    and scored with the 10 in the next call; each request gets its own texts' probabilities."""
    import asyncio

    from imdb_distilbert.serving import serve

    model = CountingModel()
    requests = [[f"{n}-{i}" + "z" * (i % 50) for i in range(n)] for n in (40, 30, 10)]

    async def scenario():
        batcher = serve.Batcher(model, max_batch=64, wait=0.05, max_queue=80)  # all 80 texts admitted
        batcher.task = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(*(batcher.predict_proba(texts) for texts in requests))
        finally:
            batcher.task.cancel()
            batcher.executor.shutdown(wait=False)

    results = asyncio.run(scenario())
    assert [len(call) for call in model.calls] == [40, 40]
    assert model.calls[1] == requests[1] + requests[2]
    for texts, proba in zip(requests, results, strict=True):
        assert proba[:, 1] == pytest.approx([min(len(t), 100) / 100 for t in texts])


def test_a_request_the_model_fails_on_fails_alone():
    """Three concurrent requests share a model call; one holds a text the model fails on. The call is retried
    request by request: the other two get their probabilities, only that one gets the error."""
    import asyncio

    from imdb_distilbert.serving import serve

    model = CountingModel()
    requests = [["a fine film", "x" * 40], ["it will explode"], ["y" * 70]]

    async def scenario():
        batcher = serve.Batcher(model, max_batch=64, wait=0.05, max_queue=80)
        batcher.task = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(*(batcher.predict_proba(texts) for texts in requests), return_exceptions=True)
        finally:
            batcher.task.cancel()
            batcher.executor.shutdown(wait=False)

    results = asyncio.run(scenario())
    assert model.calls[0] == [t for texts in requests for t in texts]  # one call for all three, which failed
    assert model.calls[1:] == requests  # then each request alone
    assert isinstance(results[1], RuntimeError)
    assert results[0][:, 1] == pytest.approx([0.11, 0.4]) and results[2][:, 1] == pytest.approx([0.7])


def test_every_answer_has_the_security_headers_and_a_post_must_be_json(server):
    """nosniff, no referrer, and a Content-Security-Policy that lets the page run only its own script (by hash) and
    talk only to its server; a POST not declared JSON (what a form on another site can send without asking) is 415
    before its body is read. The browser tests run the page under this policy."""
    import base64
    import hashlib

    from imdb_distilbert.serving import serve

    script = serve.PAGE.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    for method, path, body, headers in (("GET", "/", None, {}), ("GET", "/health", None, {}),
                                        ("POST", "/predict", b'{"texts": ["fine"]}', JSON),
                                        ("GET", "/nothing-here", None, {})):
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.getheader("X-Content-Type-Options") == "nosniff", path
        assert response.getheader("Referrer-Policy") == "no-referrer", path
        policy = response.getheader("Content-Security-Policy")
        assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy, path
        assert "connect-src 'self'" in policy, path
    for kind in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        got, answer = server.request("POST", "/predict", b'{"texts": ["fine"]}', {"Content-Type": kind} if kind else {})
        assert got == 415 and "Content-Type: application/json" in answer["error"], kind
    got, _ = server.request("POST", "/predict", b'{"texts": ["fine"]}',
                            {"Content-Type": "application/json; charset=utf-8"})
    assert got == 200


def test_an_onnx_server_explains_only_when_asked(exported, explaining_server):
    """The onnx backends unpickle nothing; explanations load the TensorFlow predictor (tf_model.preproc, a pickle), so
    an onnx server offers them only with --explain, which says what it loads."""
    plain = Server("--model", exported[0])
    try:
        _, health = plain.request("GET", "/health")
        got, answer = plain.request("POST", "/explain", json.dumps({"texts": ["fine"]}), JSON)
    finally:
        plain.stop()
    assert health["backend"] == "onnx-int8" and health["explain"] is False
    assert "start the server with --explain" in health["explain_off_because"]
    assert got == 503 and "--explain" in answer["error"]
    assert not any("warning: --explain" in line for line in plain.lines)
    assert any("warning: --explain loads" in line and "a pickle" in line for line in explaining_server.lines)


# Hostile clients: deadlines for headers and body, the connection cap, the Host check, a full queue.

@pytest.fixture(scope="module")
def strict(exported):
    """A server with deadlines of 1 s, at most 4 connections, and one more name in the Host header."""
    running = Server("--model", exported[0], "--header-timeout", "1", "--body-timeout", "1", "--max-connections", "4",
                     "--allowed-host", "Reviews.Example:80")
    yield running
    running.stop()


def read_answer(sock):
    """(status, headers, JSON body or None) of the answer on `sock`, read until the connection closes: what a
    client sees before the server hangs up (status None: it hung up without a word)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    if not data:
        return None, {}, None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def read_one(sock):
    """The bytes of one answer on a kept-alive connection (its headers and Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"content-length: (\d+)", data, re.I).group(1)):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def trickle(server, first, rest, pause=0.1):
    """On a new connection, send `first`, then `rest` a byte every `pause` s until the server answers or hangs up:
    (seconds from the connection to the answer, status, headers, body)."""
    sock = socket.create_connection((server.host, server.port), timeout=30)
    started = time.monotonic()
    sock.sendall(first)
    try:
        for byte in rest:
            sock.sendall(bytes([byte]))
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):  # the server answered and closed
        pass
    got = read_answer(sock)
    sock.close()
    return time.monotonic() - started, *got


def host_header(server, host="127.0.0.1"):
    return f"Host: {host}:{server.port}\r\n".encode()


def test_slow_headers_are_cut_with_408(strict):
    """--header-timeout 1: headers sent a byte every 0.1 s get 408 after 1 s and the connection closes; a connection
    that says nothing is closed after 1 s; so is the next request of a keep-alive connection sent as slowly.
    uvicorn has no such deadline: each would hold its connection as long as it liked."""
    seconds, status, headers, body = trickle(strict, b"GET /health HTTP/1.1\r\n", host_header(strict) + b"X: " * 100)
    assert status == 408 and 0.9 < seconds < 5, (seconds, status)
    assert body["error"] == ("the request headers did not all come within 1 s (--header-timeout 1); "
                             "send them at once.") and headers["connection"] == "close"
    assert trickle(strict, b"", b"")[1:] == (None, {}, None)  # nothing sent: closed, no answer
    with socket.create_connection((strict.host, strict.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + host_header(strict) + b"\r\n")
        first = read_one(sock)
        answered = time.monotonic()
        try:
            for byte in b"GET /health HTTP/1.1\r\n" + host_header(strict) + b"X: " * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_answer(sock)
    assert first.startswith(b"HTTP/1.1 200") and status == 408 and 0.9 < time.monotonic() - answered < 5
    assert strict.request("GET", "/health")[0] == 200


def test_a_slow_body_is_cut_with_408(strict):
    """--body-timeout 1: a body sent a byte every 0.1 s gets 408 one second after its headers, and the connection
    closes; a body sent at once is answered."""
    body = json.dumps({"texts": ["a wonderful film, " * 10]}).encode()
    head = (b"POST /predict HTTP/1.1\r\n" + host_header(strict) + b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    seconds, status, headers, answer = trickle(strict, head, body)
    assert status == 408 and 0.9 < seconds < 5, (seconds, status, answer)
    assert answer["error"] == ("the request body did not all come within 1 s of its headers (--body-timeout 1); "
                               "send it at once.") and headers["connection"] == "close"
    assert strict.request("POST", "/predict", body, JSON)[0] == 200


def test_connections_beyond_the_cap_get_503(strict):
    """--max-connections 4: with 3 other connections open a request is answered; with 4, it gets 503 with
    Retry-After and a reason, and its connection is closed; once they close, it is answered again."""
    request = b"GET /health HTTP/1.1\r\n" + host_header(strict) + b"Connection: close\r\n\r\n"
    time.sleep(0.2)  # the connections of the tests before are closed
    holders = [socket.create_connection((strict.host, strict.port), timeout=30) for _ in range(3)]
    try:
        within = trickle(strict, request, b"")
        holders.append(socket.create_connection((strict.host, strict.port), timeout=30))
        beyond = trickle(strict, request, b"")
    finally:
        for sock in holders:
            sock.close()
    assert within[1] == 200, within
    _, status, headers, body = beyond
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close", beyond
    assert body["error"] == ("the server has 5 connections open, more than it takes (--max-connections 4); "
                             "try again in 1 s.") and body["retry_after"] == 1
    time.sleep(0.2)  # the server sees them closed
    assert strict.request("GET", "/health")[0] == 200


def test_the_host_header_must_name_this_server(strict):
    """Against DNS rebinding: the names of this machine's loopback and --allowed-host (any case, any port) are
    answered; any other name gets 400 saying which flag allows it, on every path, before anything else."""
    for host in ("127.0.0.1", "localhost", "LOCALHOST", "[::1]", "reviews.example"):
        assert strict.request("GET", "/health", headers={"Host": f"{host}:{strict.port}"})[0] == 200, host
    assert strict.request("GET", "/health", headers={"Host": "reviews.example"})[0] == 200
    for method, path, body in (("GET", "/", None), ("GET", "/health", None), ("POST", "/predict", b'{"texts": ["a"]}'),
                               ("POST", "/predict", b"not json"), ("GET", "/nothing", None)):
        status, answer = strict.request(method, path, body, {**JSON, "Host": f"evil.example:{strict.port}"})
        assert status == 400, (method, path, status)
        assert answer["error"] == ("the Host header names evil.example, which is not a name this server answers to "
                                   "(a guard against DNS rebinding); start it with --allowed-host evil.example to "
                                   "allow it.")


def test_the_notebook_page_answers_to_colabs_proxy(exported, monkeypatch):
    """serve_inline's server: in Colab its page comes through Colab's proxy, whose Host header is the proxy's name,
    and it is answered ('--allowed-host *': the browser cannot reach a Colab runtime's loopback but through the
    proxy); outside Colab such a name is refused like any other."""
    import types

    from imdb_distilbert.serving import serve_inline

    proxy = {"Host": "8000-m-s-1a2b3c-a.us-west1-0.prod.colab.dev"}
    answers, readings = [], []
    for in_colab in (True, False):
        if in_colab:
            colab = types.ModuleType("google.colab")
            colab.output = types.SimpleNamespace(serve_kernel_port_as_iframe=lambda *a, **k: None,
                                                 serve_kernel_port_as_window=lambda *a, **k: None)
            monkeypatch.setitem(sys.modules, "google.colab", colab)
        else:
            monkeypatch.delitem(sys.modules, "google.colab")
        page = serve_inline.start(exported[0], backend="onnx", long_reviews=None if in_colab else "cut")
        try:
            connection = http.client.HTTPConnection(page.host, page.port, timeout=60)
            connection.request("GET", "/health", headers=proxy)
            answers.append(connection.getresponse().status)
            connection.close()
            readings.append(page.health()["long_reviews"])
        finally:
            page.stop()
    assert answers == [200, 400]
    assert readings == ["windows", "cut"]  # the run's, then start(long_reviews="cut"): src/serve.py --long-reviews


class HeldModel(CountingModel):
    """A stand-in model whose calls wait until `release` is set: work that keeps the queue full."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def predict_proba(self, texts, done=None):
        self.entered.set()
        self.release.wait(60)
        return super().predict_proba(texts, done)


class InThread:
    """src/serve.py's uvicorn server (serve.make_server, with `flags`) on `app`, in a thread of this process, on
    127.0.0.1 and a free port. `protocol`: uvicorn's HTTP/1.1 protocol class (default: as uvicorn picks)."""

    def __init__(self, app, *flags, protocol=None):
        from imdb_distilbert.serving import serve

        sock = serve.listen("127.0.0.1", 0)
        self.host, self.port = sock.getsockname()[:2]
        self.server = serve.make_server(app, serve.parse_args(["--model", "unused", *flags]), protocol)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def test_a_full_queue_is_answered_503_before_the_body_is_read():
    """--max-queue 1 and one text in the model: a /predict request whose body has not come yet is answered 503 with
    Retry-After at once, without waiting for the body (it was read first, and the refusal came after)."""
    from imdb_distilbert.serving import serve

    model = HeldModel()
    server = InThread(serve.create_app(model, "onnx", None, "not needed here", max_queue=1), "--max-queue", "1")
    try:
        first = socket.create_connection((server.host, server.port), timeout=30)
        body = b'{"texts": ["a fine film"]}'
        head = b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        first.sendall(head % len(body) + b"Connection: close\r\n\r\n" + body)
        assert model.entered.wait(30), "the first request never reached the model"  # which holds it
        waiting = socket.create_connection((server.host, server.port), timeout=5)
        waiting.sendall(head % len(body) + b"Connection: close\r\n\r\n")  # no body
        try:
            refused = read_answer(waiting)
        except TimeoutError:
            refused = ("no answer within 5 s",)
        waiting.close()
        model.release.set()
        status, _, answer = read_answer(first)
        first.close()
    finally:
        model.release.set()
        server.stop()
    assert refused[0] == 503, refused
    assert refused[1]["retry-after"] == "1" and refused[2]["error"].startswith("the server is busy: 1 text is in ")
    assert status == 200 and answer["predictions"][0]["prob_pos"] == pytest.approx(0.11)


def test_slow_headers_are_cut_with_h11_too():
    """With requirements-serve.txt alone, uvicorn speaks HTTP/1.1 with h11 (httptools is not there): the header
    deadline holds with it too, on a new connection and on the next request of a kept-alive one."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from imdb_distilbert.serving import serve

    server = InThread(serve.create_app(CountingModel(), "onnx", None, "not needed here"), "--header-timeout", "1",
                      protocol=H11Protocol)
    try:
        slow = trickle(server, b"GET /health HTTP/1.1\r\n", b"Host: localhost\r\n" + b"X: " * 100)
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first = read_one(sock)
            answered = time.monotonic()
            try:
                for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"X: " * 100:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            kept = read_answer(sock)[0], time.monotonic() - answered
        quick = trickle(server, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", b"")
    finally:
        server.stop()
    assert slow[1] == 408 and 0.9 < slow[0] < 5 and "--header-timeout 1" in slow[3]["error"], slow
    assert first.startswith(b"HTTP/1.1 200") and kept[0] == 408 and 0.9 < kept[1] < 5, kept
    assert quick[1] == 200
