"""src/serve.py under more load than it can take, and stopped while it works (SIGTERM, Ctrl-C).

The server runs the tiny exported model's fp32 ONNX backend, whose answers do not depend on which
reviews share a batch, so every 200 can be held to exactly predict.py's label.
"""

import asyncio
import json
import random
import re
import signal
import socket
import threading
import time

import pytest
import synthetic
from conftest import report
from test_serve import Server, predict_py

CLIENTS, SECONDS = 200, 3


@pytest.fixture(scope="module")
def texts():
    return list(synthetic.reviews(40, seed=5)["Reviews"])


@pytest.fixture(scope="module")
def labels(exported, texts, tmp_path_factory):
    """predict.py --backend onnx's label for each text."""
    rows = predict_py(exported[0], "onnx", texts, tmp_path_factory.mktemp("overload"))
    return {text: row["label"] for text, row in zip(texts, rows, strict=True)}


async def post(reader, writer, texts, path="/predict"):
    """One request on an open keep-alive connection: (status, headers, parsed JSON body)."""
    body = json.dumps({"texts": texts}).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, json.loads(await reader.readexactly(int(headers["content-length"])))


def storm(server, texts, clients, seconds):
    """`clients` clients on their own keep-alive connections, each posting one random text and, whatever the
    answer, the next at once (Retry-After ignored), for `seconds`. Returns [(status, headers, body, text, latency)]."""
    answers = []

    async def client(seed):
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = rng.choice(texts)
            started = time.perf_counter()
            status, headers, body = await post(reader, writer, [text])
            answers.append((status, headers, body, text, time.perf_counter() - started))
        writer.close()

    async def main():
        await asyncio.wait_for(asyncio.gather(*(client(seed) for seed in range(clients))), seconds + 60)

    asyncio.run(main())
    return answers


def paces(servers, texts, rounds=3, seconds=0.5):
    """Requests/s that 8 clients get from each of `servers`, measured in turns (so that other work on the
    machine slows each about as much)."""
    served = [0] * len(servers)
    for _ in range(rounds):
        for i, server in enumerate(servers):
            served[i] += len(storm(server, texts, 8, seconds))
    return [n / (rounds * seconds) for n in served]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024


def test_sheds_load_and_serves_at_full_speed_after(exported, texts, labels):
    """A server under 200 clients, and afterwards against `fresh`, the same server that saw no storm."""
    server = Server("--model", exported[0], "--backend", "onnx", "--no-explain")
    fresh = Server("--model", exported[0], "--backend", "onnx", "--no-explain")
    try:
        max_queue = server.request("GET", "/health")[1]["queue"]["texts"]["max"]
        for warm_up in (server, fresh):  # what a server allocates at its normal pace
            storm(warm_up, texts, 8, 1)
        baseline = rss_mb(server.process.pid)
        memory, health, storming = [], [], threading.Event()

        def watch():  # the server's memory, and /health on new connections, while the storm lasts
            while not storming.is_set():
                memory.append(rss_mb(server.process.pid))
                started = time.perf_counter()
                health.append((*server.request("GET", "/health"), time.perf_counter() - started))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        rounds, ends = [], []
        try:
            for _ in range(2):
                rounds.append(storm(server, texts, CLIENTS, SECONDS))
                ends.append(rss_mb(server.process.pid))
        finally:
            storming.set()
            watcher.join()
        after_storm = server.request("GET", "/health")[1]
        after = storm(server, texts, 8, 1)
        rate_after, rate_fresh = paces([server, fresh], texts)
    finally:
        server.stop()
        fresh.stop()

    answers = rounds[0] + rounds[1]
    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    assert served and refused and {a[0] for a in refused} == {503}
    # Every 200 is predict.py's label; every 503 says why, and when to come back.
    assert all(body["predictions"][0]["label"] == labels[text] for _, _, body, text, _ in served)
    for _, headers, body, _, _ in refused:
        assert int(headers["retry-after"]) >= 1 and body["retry_after"] == int(headers["retry-after"])
        assert body["error"].startswith("the server is busy: ") and "try again in" in body["error"]
    # /health answered all along, and saw the queue bounded.
    assert health and all(status == 200 for status, _, _ in health)
    assert max(h["queue"]["texts"]["waiting"] for _, h, _ in health) <= max_queue
    # Memory: bounded, and flat from one round to the next.
    peak = max(memory + ends)
    assert peak - baseline < 30 and ends[1] - ends[0] < 10, (baseline, peak, ends)
    assert after_storm["queue"]["texts"]["waiting"] == 0 and after_storm["queue"]["texts"]["refused"] == len(refused)
    # Right after: no backlog, no refusals, and the pace of a server that saw no storm (measured in turns
    # with it, as the machine's other work moves both; the margin is for that).
    assert {a[0] for a in after} == {200}
    assert rate_after >= 0.6 * rate_fresh, (rate_after, rate_fresh)

    def p99(latencies):
        return sorted(latencies)[int(0.99 * (len(latencies) - 1))]

    seconds = 2 * SECONDS
    report(f"overload ({CLIENTS} clients ignoring Retry-After, {seconds} s, tiny model, onnx fp32, "
           f"--max-queue {max_queue}): "
           f"offered {len(answers) / seconds:.0f} requests/s, served {len(served) / seconds:.0f}/s "
           f"({len(refused) / len(answers):.0%} got 503), "
           f"p99 of the served {1000 * p99([a[4] for a in served]):.0f} ms, "
           f"of the 503s {1000 * p99([a[4] for a in refused]):.0f} ms, "
           f"of /health {1000 * max(h[2] for h in health):.0f} ms at most; "
           f"server memory {baseline:.0f} MB before, {peak:.0f} MB at most; "
           f"8 clients right after: {rate_after:.0f} requests/s, and {rate_fresh:.0f} from a server that saw no storm")


def test_explanations_queue_is_bounded(exported):
    """One explanation at a time (--max-explain-queue 1): while the first is explained (its answers are
    tests/test_serve.py's), the others are refused at once, and /predict keeps serving."""
    server = Server("--model", exported[0], "--backend", "onnx", "--explain", "--max-explain-queue", "1")
    try:
        async def main():
            connections = [await asyncio.open_connection(server.host, server.port) for _ in range(4)]
            first = asyncio.ensure_future(post(*connections[0], ["a wonderful film"] * 8, "/explain"))
            deadline = time.monotonic() + 60
            while server.request("GET", "/health")[1]["queue"]["explain_requests"]["waiting"] == 0:
                assert time.monotonic() < deadline, "the first /explain request was never taken"
                await asyncio.sleep(0.1)  # it is taken: it loads the TensorFlow model (seconds), then explains
            others = [await post(*c, ["an awful film"], "/explain") for c in connections[1:3]]
            during = await post(*connections[3], ["a great film"])
            health = server.request("GET", "/health")[1]
            still = not first.done()
            first.cancel()
            return still, others, during, health

        still_explaining, others, during, health = asyncio.run(main())
    finally:
        server.process.kill()  # not waiting for TensorFlow to load
        server.process.wait(timeout=60)
    assert still_explaining
    for status, headers, body in others:
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert body["error"].startswith("the server is busy: 1 explanation request is in progress or waiting, "
                                        "the most it takes (--max-explain-queue 1); try again in ")
    assert during[0] == 200 and health["queue"]["explain_requests"] == {"waiting": 1, "max": 1, "refused": 2}


def half_sent(server, n, text):
    """`n` connections, each with a /predict request whose body is half sent: requests in flight."""
    body = json.dumps({"texts": [text]}).encode()
    sockets = []
    for _ in range(n):
        sock = socket.create_connection((server.host, server.port), timeout=30)
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        sockets.append((sock, body[len(body) // 2:]))
    return sockets


def finish(sock, rest):
    """Send the rest of the body; (status, JSON body) of the answer."""
    sock.sendall(rest)
    data = b""
    while (b"\r\n\r\n" not in data
           or len(data.split(b"\r\n\r\n", 1)[1]) < int(re.search(rb"content-length: (\d+)", data, re.I).group(1))):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    sock.close()
    return int(data.split()[1]), json.loads(data.split(b"\r\n\r\n", 1)[1])


def refused_within(server, seconds):
    """Seconds until a new connection is refused (the listening socket closed), or None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_answers_requests_in_flight_and_exits_0(sig, exported, texts, labels):
    server = Server("--model", exported[0], "--backend", "onnx", "--no-explain")
    in_flight = half_sent(server, 8, texts[0])
    idle = socket.create_connection((server.host, server.port), timeout=30)  # a keep-alive connection with no request
    time.sleep(0.3)
    started = time.monotonic()
    server.process.send_signal(sig)
    refused = refused_within(server, 15)
    answers = [finish(sock, rest) for sock, rest in in_flight]
    status = server.process.wait(timeout=30)
    seconds = time.monotonic() - started
    printed = "".join(server.lines)
    assert refused is not None, printed
    assert [(s, body["predictions"][0]["label"]) for s, body in answers] == [(200, labels[texts[0]])] * 8
    assert idle.recv(100) == b""  # closed by the server
    assert status == 0 and "Traceback" not in printed, printed
    name = signal.Signals(sig).name
    assert f"stopping ({name}): new connections are refused, the requests in flight answered" in printed
    assert re.search(rf"stopped by {name} in \d+\.\d s", printed), printed
    assert seconds < 15, seconds
    report(f"stop by {name} with 8 requests in flight: new connections refused after {refused:.1f} s, "
           f"all 8 answered, exit status 0 after {seconds:.1f} s")


def test_stop_cuts_what_is_still_running_after_the_timeout(exported, texts):
    """A client that never sends the rest of its body: cut after --stop-timeout, with a 503 that says so; exit 0."""
    server = Server("--model", exported[0], "--backend", "onnx", "--no-explain", "--stop-timeout", "1")
    (stuck, _), = half_sent(server, 1, texts[0])
    time.sleep(0.3)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    status = server.process.wait(timeout=30)
    seconds = time.monotonic() - started
    answer = stuck.recv(65536)
    printed = "".join(server.lines)
    assert status == 0 and 1 <= seconds < 10, (status, seconds, printed)
    assert answer.startswith(b"HTTP/1.1 503") and b"the server stopped before this request was finished" in answer
    assert "Traceback" not in printed and "timeout graceful shutdown exceeded" in printed, printed


def test_flags_max_queue_host_and_batch_size(exported, texts, labels):
    """--max-queue 1: of 16 clients at once, some are refused with a 503 naming the flag, and all that are answered
    get predict.py's label. --host 127.0.0.2 listens there and not on 127.0.0.1. --batch-size 3: the model is
    called with 3 reviews at most, and the answers do not change (fp32 ONNX: batch-independent)."""
    server = Server("--model", exported[0], "--backend", "onnx", "--no-explain", "--max-queue", "1",
                    "--host", "127.0.0.2", "--batch-size", "3")
    try:
        assert server.host == "127.0.0.2"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        health = server.request("GET", "/health")[1]
        assert health["queue"]["texts"]["max"] == 1 and health["batch_size"] == 3
        answers = storm(server, texts, 16, 2)
        refused = [body for status, _, body, _, _ in answers if status == 503]
        served = [(body, text) for status, _, body, text, _ in answers if status == 200]
        assert refused and served, [a[0] for a in answers][:20]
        assert all("(--max-queue 1)" in body["error"] for body in refused), refused[0]
        assert all(body["predictions"][0]["label"] == labels[text] for body, text in served)
        status, body = server.predict(texts[:7])  # alone: taken, however many texts it holds
        assert status == 200 and [p["label"] for p in body["predictions"]] == [labels[t] for t in texts[:7]]
    finally:
        server.stop()
    assert "serving on http://127.0.0.2:" in "".join(server.lines)


@pytest.mark.parametrize("flag, value, message", [
    ("--max-queue", "0", "--max-queue must be at least 1"),
    ("--batch-size", "0", "--batch-size must be at least 1"),
    ("--max-explain-queue", "-1", "--max-explain-queue must be at least 1"),
    ("--stop-timeout", "-1", "--stop-timeout must be 0 or more"),
    ("--port", "70000", "--port must be between 0 and 65535"),
    ("--header-timeout", "0", "--header-timeout must be more than 0"),
    ("--body-timeout", "-1", "--body-timeout must be more than 0"),
    ("--max-connections", "0", "--max-connections must be at least 1"),
    ("--backend", "gpu", "invalid choice: 'gpu'"),
])
def test_bad_flags_are_one_line_and_exit_2(exported, flag, value, message):
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "src" / "serve.py"), "--model", str(exported[0]), flag, value],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
