"""How fast src/serve.py answers on loopback, against predict.py's batch throughput on the same reviews.

    python benchmarks/serve.py                     # a full-size random-weight DistilBERT, maxlen 400, int8
    python benchmarks/serve.py --model models/distilbert-imdb --seconds 60

Starts the server (backend onnx-int8), then for each number of --clients (default 1, 8, 32) runs that many
clients for --seconds, each posting one review per request on its own keep-alive connection, the next as
soon as the last is answered. Prints a markdown table: requests/s, p50/p95/p99 latency, errors, and the
requests/s as a share of `predict.py --backend onnx-int8` scoring the same reviews in batches of 32
(measured with benchmarks/inference.py's worker, the same backend call predict.py makes, before and after
the server runs: the share is of the better of the two).

The model and reviews are those of benchmarks/inference.py: without --model, DistilBERT's full shape with
random weights (right for speed), exported with src/export.py; a seeded random --n of the real test reviews.
The clients run on the same CPUs as the server, so they take a little of its time. Stops by itself.
"""

import argparse
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
    p.add_argument("--model", type=Path, metavar="DIR", help="a saved predictor (default: build a full-size random one)")
    p.add_argument("--reviews", type=Path, metavar="PATH", help="reviews to send (default: as benchmarks/inference.py)")
    p.add_argument("--n", type=int, default=96, help="how many reviews (default: 96)")
    p.add_argument("--clients", default="1,8,32", help="numbers of concurrent clients, comma-separated (default: 1,8,32)")
    p.add_argument("--seconds", type=float, default=20, help="how long each number of clients runs (default: 20)")
    p.add_argument("--batch-size", default="32", help="the server's --batch-size; several, comma-separated, "
                   "each run with every number of clients (default: 32)")
    p.add_argument("--maxlen", type=int, default=400, help="maxlen of the predictor built without --model (default: 400)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def start_server(model, batch_size):
    process = subprocess.Popen([sys.executable, str(ROOT / "src" / "serve.py"), "--model", str(model), "--port", "0",
                                "--backend", "onnx-int8", "--batch-size", str(batch_size)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def main(argv=None):
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    texts, source, work = inference.reviews_and_model(args, "bench-serve-")
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    worker_args = argparse.Namespace(model=args.model, batch_size=32, latency_n=1)
    batch = [inference.run_worker("onnx-int8", worker_args, texts_file)["reviews_per_s"]]

    rows = []
    for batch_size in [int(b) for b in args.batch_size.split(",") if b]:
        process, host, port = start_server(args.model, batch_size)
        try:
            for clients in [int(c) for c in args.clients.split(",") if c]:
                print(f"{clients} client(s) for {args.seconds:g} s, server batch size {batch_size}...", file=sys.stderr)
                rate, latencies, errors = load(host, port, texts, clients, args.seconds)
                ms = 1000 * np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
                rows.append({"batch_size": batch_size, "clients": clients, "requests_per_s": rate, "p50_ms": ms[0],
                             "p95_ms": ms[1], "p99_ms": ms[2], "requests": len(latencies), "errors": errors})
        finally:
            process.terminate()
            process.wait(timeout=30)
    # Measured again after the server runs: other work on the machine moves both; compare with the better one.
    batch.append(inference.run_worker("onnx-int8", worker_args, texts_file)["reviews_per_s"])
    for r in rows:
        r["share_of_batch"] = r["requests_per_s"] / max(batch)

    settings = json.loads((args.model / "onnx.json").read_text())
    header = (f"{len(texts)} reviews from {source.name} (seeded random sample), one review per request, "
              f"{args.seconds:g} s per row; model {args.model.name}, maxlen {settings['maxlen']}, onnx-int8; "
              f"predict.py batch throughput (batch 32, same reviews), before and after: {batch[0]:.2f} and {batch[1]:.2f} reviews/s; "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average before: {load_before:.2f}; "
              f"Python {platform.python_version()}, " + ", ".join(f"{n} {metadata.version(n)}" for n in ("onnxruntime", "starlette", "uvicorn")))
    lines = ["| server --batch-size | clients | requests/s | p50 / p95 / p99 latency | requests (errors) | share of predict.py batch throughput |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['clients']} | {r['requests_per_s']:.2f} | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f} ms "
                     f"| {r['requests']} ({r['errors']}) | {r['share_of_batch']:.0%} |")
    print(header + "\n\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "batch_reviews_per_s": batch, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
