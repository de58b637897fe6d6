"""How fast src/serve.py answers on loopback, against predict.py's batch throughput on the same reviews,
and what it does with more clients than it can serve.

    python benchmarks/serve.py                     # a full-size random-weight DistilBERT, maxlen 400, int8
    python benchmarks/serve.py --model models/distilbert-imdb --seconds 60
    python benchmarks/serve.py --clients "" --overload 200      # the overload and hostile rows only

Starts the server (backend onnx-int8), then for each number of --clients (default 1, 8, 32) runs that many
clients for --seconds, each posting one review per request on its own keep-alive connection, the next as
soon as the last is answered. Prints a markdown table: requests/s, p50/p95/p99 latency, errors, and the
requests/s as a share of `predict.py --backend onnx-int8` scoring the same reviews in batches of 32
(measured with benchmarks/inference.py's worker, the same backend call predict.py makes, before and after
the server runs: the share is of the better of the two).

The model and reviews are those of benchmarks/inference.py: without --model, DistilBERT's full shape with
random weights (right for speed), exported with src/export.py; a seeded random --n of the real test reviews.
Then the overload row (--overload, default 200 clients): that many clients for --seconds on one
asyncio loop, each posting one review and, whatever the answer, the next at once (they ignore
Retry-After, the worst case). It reports the offered and the served requests/s, the share of 503s, the
p50/p99 latency of the served and p99 of the 503s, the server's memory (RSS) before, at most during and
after, and the pace of 8 clients right after.

Then, on the same server, the hostile rows: 8 normally-behaved clients as above, alone; beside --slow
connections that send a request a byte a second (half of them its headers, half its body, the headers at once),
each starting again when the server cuts it off; and beside --poison clients that post, ten times a second each,
requests holding a lone surrogate (invalid text, answered 422). The three take turns of --hostile-seconds,
--hostile-rounds times (so that other work on the machine moves each about as much). It reports the normal
clients' requests/s and p50/p99 latency beside each, over all their turns, and what the hostile ones got.

The clients run on the same CPUs as the server, so they take a little of its time (more under overload). \
Stops by itself.
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import inference  # noqa: E402  (benchmarks/inference.py: the model builder and the batch worker)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="a saved predictor (default: build a full-size random one)")
    p.add_argument("--reviews", type=Path, metavar="PATH", help="reviews to send (default: as benchmarks/inference.py)")
    p.add_argument("--n", type=int, default=96, help="how many reviews (default: 96)")
    p.add_argument("--clients", default="1,8,32",
                   help="numbers of concurrent clients, comma-separated (default: 1,8,32)")
    p.add_argument("--seconds", type=float, default=20, help="how long each number of clients runs (default: 20)")
    p.add_argument("--batch-size", default="32", help="the server's --batch-size; several, comma-separated, "
                   "each run with every number of clients (default: 32)")
    p.add_argument("--maxlen", type=int, default=400,
                   help="maxlen of the predictor built without --model (default: 400)")
    p.add_argument("--overload", type=int, metavar="N", default=200, help="clients of the overload row, which ignore "
                   "Retry-After and post again at once (default: 200; 0: no overload row)")
    p.add_argument("--slow", type=int, metavar="N", default=200,
                   help="slow connections of the hostile rows (default: 200; 0: no such row)")
    p.add_argument("--poison", type=int, metavar="N", default=8,
                   help="clients posting lone surrogates (10 requests/s each) in the hostile rows "
                   "(default: 8; 0: no such row)")
    p.add_argument("--hostile-seconds", type=float, metavar="S", default=40,
                   help="how long each hostile row runs: past the server's body deadline (30 s), so that slow bodies "
                   "are cut too (default: 40; the hostile rows run with --overload)")
    p.add_argument("--hostile-rounds", type=int, metavar="N", default=2,
                   help="how many turns each hostile row gets (default: 2)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def start_server(model, batch_size):
    process = subprocess.Popen([sys.executable, str(ROOT / "src" / "serve.py"), "--model", str(model), "--port", "0",
                                "--backend", "onnx-int8", "--batch-size", str(batch_size)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        print(f"  server: {line.rstrip()}", file=sys.stderr)
        found = re.search(r"serving on http://([\d.]+):(\d+)/", line)
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
            return process, found.group(1), int(found.group(2))
    sys.exit("the server did not start")


def load(host, port, texts, clients, seconds):
    """`clients` clients for `seconds`: (requests/s, latencies in s, errors)."""
    latencies, errors = [[] for _ in range(clients)], [0] * clients

    def client(c):
        connection = http.client.HTTPConnection(host, port, timeout=600)
        deadline = time.monotonic() + seconds
        k = c
        while time.monotonic() < deadline:
            body = json.dumps({"texts": [texts[k % len(texts)]]})
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=600)
            if ok:
                latencies[c].append(time.perf_counter() - started)
            else:
                errors[c] += 1
            k += clients
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started  # until the last request sent before the deadline was answered
    done = [x for per_client in latencies for x in per_client]
    return len(done) / elapsed, done, sum(errors)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024


HEAD = b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


async def exchange(reader, writer, body):
    """Post `body` to /predict on an open keep-alive connection; the answer's status once it is all read."""
    writer.write(HEAD % len(body) + body)
    status, length = int((await reader.readline()).split()[1]), 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


def overload(host, port, pid, texts, clients, seconds):
    """`clients` clients that ignore Retry-After, for `seconds`, and 8 clients right after: a dict of figures."""
    statuses, served, refused = {}, [], []

    async def client(c):
        reader, writer = await asyncio.open_connection(host, port)
        deadline, k = time.monotonic() + seconds, c
        while time.monotonic() < deadline:
            body = json.dumps({"texts": [texts[k % len(texts)]]}).encode()
            started = time.perf_counter()
            status = await exchange(reader, writer, body)
            statuses[status] = statuses.get(status, 0) + 1
            (served if status == 200 else refused).append(time.perf_counter() - started)
            k += clients
        writer.close()

    async def run_all():
        await asyncio.gather(*(client(c) for c in range(clients)))

    memory, health, stop = [rss_mb(pid)], [], threading.Event()

    def watch():  # the server's memory, and how long GET /health takes on a new connection, all along
        while not stop.wait(0.2):
            memory.append(rss_mb(pid))
            started = time.perf_counter()
            connection = http.client.HTTPConnection(host, port, timeout=60)
            connection.request("GET", "/health")
            ok = connection.getresponse().status == 200
            connection.close()
            health.append(time.perf_counter() - started if ok else float("inf"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    try:
        asyncio.run(run_all())
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        watcher.join()
    after_rate, after_latencies, after_errors = load(host, port, texts, 8, min(seconds, 10))
    ms = lambda values, q: 1000 * float(np.percentile(values, q)) if values else float("nan")  # noqa: E731
    return {"clients": clients, "seconds": elapsed, "statuses": statuses,
            "offered_per_s": (len(served) + len(refused)) / elapsed, "served_per_s": len(served) / elapsed,
            "share_503": statuses.get(503, 0) / max(1, len(served) + len(refused)),
            "served_p50_ms": ms(served, 50), "served_p99_ms": ms(served, 99), "refused_p99_ms": ms(refused, 99),
            "health_max_ms": 1000 * max(health, default=float("nan")),
            "rss_mb_before": memory[0], "rss_mb_peak": max(memory), "rss_mb_after": rss_mb(pid),
            "after_8_clients_per_s": after_rate, "after_8_clients_p50_ms": ms(after_latencies, 50),
            "after_errors": after_errors}


async def slow_clients(host, port, n, stop, answers):
    """`n` connections sending a /predict request a byte a second: the even ones all of it, the odd ones the headers
    at once and then the body. One the server cuts off starts again. `answers`: the server's, by status ("closed":
    it closed the connection without one; "reset": the connection was reset, its answer lost)."""
    body = json.dumps({"texts": ["a review sent very slowly " * 10]}).encode()

    async def client(c):
        await asyncio.sleep(c * 0.01)  # not all in the same millisecond
        while not stop.is_set():
            reader, writer = await asyncio.open_connection(host, port)
            at_once, slowly = (b"", HEAD % len(body) + body) if c % 2 == 0 else (HEAD % len(body), body)
            writer.write(at_once)
            answer = asyncio.ensure_future(reader.read())  # all the server sends, until it closes
            for byte in slowly:
                await asyncio.wait([answer], timeout=1)
                if answer.done() or stop.is_set():
                    break
                writer.write(bytes([byte]))
            if answer.done():
                try:
                    data = answer.result()
                    status = data.split()[1].decode() if data else "closed"
                except ConnectionResetError:  # it closed as a byte came, and the client's system lost the answer
                    status = "reset"
                answers[status] = answers.get(status, 0) + 1
            answer.cancel()
            writer.close()

    await asyncio.gather(*(client(c) for c in range(n)))


async def poison_clients(host, port, n, stop, answers):
    """`n` clients on keep-alive connections, each posting ten times a second a request holding a lone surrogate
    (half the requests a review beside it): valid JSON, invalid text, which no tokenizer takes. (Back to back they
    would be a flood like the overload row's, whatever they hold.) `answers`: the server's, by status."""
    bodies = [json.dumps({"texts": texts}).encode() for texts in (["\ud800"], ["a fine film", "half \udfff"])]

    async def client(c):
        reader, writer = await asyncio.open_connection(host, port)
        k = c
        while not stop.is_set():
            status = str(await exchange(reader, writer, bodies[k % 2]))
            answers[status] = answers.get(status, 0) + 1
            k += 1
            await asyncio.sleep(0.1)
        writer.close()

    await asyncio.gather(*(client(c) for c in range(n)))


def beside(host, port, texts, seconds, hostile=None, n=0):
    """8 normally-behaved clients for `seconds` (as load()), beside `n` `hostile` clients (slow_clients or
    poison_clients) started a second before: (their requests/s, latencies, errors, the hostile clients' answers)."""
    answers, stop = {}, threading.Event()
    runner = threading.Thread(target=lambda: asyncio.run(hostile(host, port, n, stop, answers))) if hostile else None
    if runner:
        runner.start()
        time.sleep(1)
    try:
        rate, latencies, errors = load(host, port, texts, 8, seconds)
    finally:
        stop.set()
        if runner:
            runner.join()
    return rate, latencies, errors, answers


def hostile_rows(host, port, texts, args):
    """The hostile rows: 8 normal clients alone, beside slow clients and beside poison ones, in turns."""
    kinds = [(None, 0), *((k, n) for k, n in ((slow_clients, args.slow), (poison_clients, args.poison)) if n)]
    rows = [{"hostile": k.__name__ if k else None, "n": n, "seconds": 0, "requests": 0, "latencies": [], "errors": 0,
             "hostile_answers": {}} for k, n in kinds]
    for turn in range(args.hostile_rounds):
        for (kind, n), row in zip(kinds, rows, strict=True):
            print(f"turn {turn + 1}: 8 clients for {args.hostile_seconds:g} s beside "
                  f"{f'{n} {kind.__name__}' if kind else 'nothing'}...", file=sys.stderr)
            rate, latencies, errors, answers = beside(host, port, texts, args.hostile_seconds, kind, n)
            row["seconds"] += len(latencies) / rate if rate else 0
            row["latencies"] += latencies
            row["errors"] += errors
            for status, count in answers.items():
                row["hostile_answers"][status] = row["hostile_answers"].get(status, 0) + count
    for row in rows:
        latencies = row.pop("latencies")
        row["requests"], row["requests_per_s"] = len(latencies), len(latencies) / max(row["seconds"], 1e-9)
        row["p50_ms"], row["p99_ms"] = 1000 * np.percentile(latencies, [50, 99]) if latencies else [float("nan")] * 2
    return rows


def main(argv=None):
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    texts, source, work = inference.reviews_and_model(args, "bench-serve-")
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    worker_args = argparse.Namespace(model=args.model, batch_size=32, latency_n=1)
    batch = [inference.run_worker("onnx-int8", worker_args, texts_file)["reviews_per_s"]]

    rows, overloaded, hostile = [], None, []
    for batch_size in [int(b) for b in args.batch_size.split(",") if b]:
        process, host, port = start_server(args.model, batch_size)
        try:
            for clients in [int(c) for c in args.clients.split(",") if c]:
                print(f"{clients} client(s) for {args.seconds:g} s, server batch size {batch_size}...", file=sys.stderr)
                rate, latencies, errors = load(host, port, texts, clients, args.seconds)
                ms = 1000 * np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
                rows.append({"batch_size": batch_size, "clients": clients, "requests_per_s": rate, "p50_ms": ms[0],
                             "p95_ms": ms[1], "p99_ms": ms[2], "requests": len(latencies), "errors": errors})
            if args.overload and overloaded is None:
                load(host, port, texts, 8, 2)  # warm-up, so the memory before is that of normal serving
                print(f"overload: {args.overload} clients ignoring Retry-After for {args.seconds:g} s...",
                      file=sys.stderr)
                overloaded = {"batch_size": batch_size,
                              **overload(host, port, process.pid, texts, args.overload, args.seconds)}
                hostile = hostile_rows(host, port, texts, args)
        finally:
            process.terminate()
            process.wait(timeout=30)
    # Measured again after the server runs: other work on the machine moves both; compare with the better one.
    batch.append(inference.run_worker("onnx-int8", worker_args, texts_file)["reviews_per_s"])
    for r in [*rows, *([overloaded] if overloaded else [])]:
        r["share_of_batch"] = r.get("requests_per_s", r.get("served_per_s")) / max(batch)

    settings = json.loads((args.model / "onnx.json").read_text())
    header = (f"{len(texts)} reviews from {source.name} (seeded random sample), one review per request, "
              f"{args.seconds:g} s per row; model {args.model.name}, maxlen {settings['maxlen']}, onnx-int8; "
              f"predict.py batch throughput (batch 32, same reviews), before and after: {batch[0]:.2f} and "
              f"{batch[1]:.2f} reviews/s; "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load average before: {load_before:.2f}; "
              f"Python {platform.python_version()}, "
              + ", ".join(f"{n} {metadata.version(n)}" for n in ("onnxruntime", "starlette", "uvicorn")))
    lines = ["| server --batch-size | clients | requests/s | p50 / p95 / p99 latency | requests (errors) "
             "| share of predict.py batch throughput |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['clients']} | {r['requests_per_s']:.2f} "
                     f"| {r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f} ms "
                     f"| {r['requests']} ({r['errors']}) | {r['share_of_batch']:.0%} |")
    text = header + ("\n\n" + "\n".join(lines) if rows else "")
    if overloaded:
        o = overloaded
        text += ("\n\n| overload: clients | offered requests/s "
                 "| served requests/s (share of predict.py's batch throughput) "
                 "| 503s | p50 / p99 of the served | p99 of the 503s | slowest GET /health "
                 "| server memory before / at most / after "
                 "| 8 clients right after |\n"
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
                 f"| {o['clients']} | {o['offered_per_s']:.1f} | {o['served_per_s']:.2f} ({o['share_of_batch']:.0%}) "
                 f"| {o['share_503']:.1%} | {o['served_p50_ms']:.0f} / {o['served_p99_ms']:.0f} ms "
                 f"| {o['refused_p99_ms']:.0f} ms "
                 f"| {o['health_max_ms']:.0f} ms "
                 f"| {o['rss_mb_before']:.0f} / {o['rss_mb_peak']:.0f} / {o['rss_mb_after']:.0f} MB "
                 f"| {o['after_8_clients_per_s']:.2f} requests/s, p50 {o['after_8_clients_p50_ms']:.0f} ms, "
                 f"{o['after_errors']} errors |\n"
                 f"answers: {o['statuses']}")
    if hostile:
        what = {None: "nothing", "slow_clients": "{n} slow connections (a byte a second: half headers, half bodies)",
                "poison_clients": "{n} clients posting lone surrogates, 10 a second each"}
        text += (f"\n\n{args.hostile_rounds} turns of {args.hostile_seconds:g} s each, in turn:\n\n"
                 "| 8 normal clients beside | their requests/s | their p50 / p99 | their errors "
                 "| what the hostile clients got |\n| --- | --- | --- | --- | --- |\n"
                 + "\n".join(f"| {what[h['hostile']].format(n=h['n'])} | {h['requests_per_s']:.2f} "
                             f"| {h['p50_ms']:.0f} / {h['p99_ms']:.0f} ms "
                             f"| {h['errors']} of {h['requests'] + h['errors']} "
                             f"| {', '.join(f'{k}: {v}' for k, v in sorted(h['hostile_answers'].items())) or '-'} |"
                             for h in hostile))
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "batch_reviews_per_s": batch, "results": rows,
                                         "overload": overloaded, "hostile": hostile}, indent=2) + "\n")


if __name__ == "__main__":
    main()
