"""How fast each backend scores the same real reviews, on this machine, in one run.

    python benchmarks/inference.py                         # a full-size random-weight DistilBERT, 96 reviews
    python benchmarks/inference.py --model models/distilbert-imdb --n 1000

Prints a markdown table: reviews/s at --batch-size (default 32), p50/p95 latency of one review at a
time, peak memory of the process, and agreement with the ktrain predictor's labels (and the largest
probability difference). Each backend runs in its own process, so peak memory is its own.

Reviews: a seeded random --n from ../shared/data/imdb/test.xlsx when present, else data/sample/test.xlsx.
Without --model, it builds a predictor with DistilBERT's full shape (768 wide, 6 layers, 12 heads) and
random weights (tests/tiny_distilbert.py --full-size; no training), which is right for speed and memory.
Its probabilities all sit near 0.5, so label agreement there says little: read the probability difference.
The model is exported with src/export.py first if it has no ONNX files yet (needs requirements-export.txt).
"""

import argparse
import collections
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
REAL_REVIEWS = ROOT.parent / "shared" / "data" / "imdb" / "test.xlsx"
SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"
BACKENDS = ("ktrain", "onnx", "onnx-int8")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="a saved predictor (default: build a full-size random one)")
    p.add_argument("--reviews", type=Path, metavar="PATH",
                   help="reviews to score (default: ../shared/data/imdb/test.xlsx "
                   "when present, else data/sample/test.xlsx)")
    p.add_argument("--n", type=int, default=96, help="reviews to score with each backend (default: 96)")
    p.add_argument("--latency-n", type=int, default=20, help="reviews scored one at a time for latency (default: 20)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for throughput (default: 32)")
    p.add_argument("--maxlen", type=int, default=400,
                   help="maxlen of the predictor built without --model (default: 400)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, ktrain first (default: all)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one backend in this process
    p.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def common_words(texts, n=30_000):
    """The `n` most frequent lower-cased words, split as BERT's basic tokenizer splits (punctuation apart)."""
    counts = collections.Counter(w for t in texts for w in re.findall(r"[a-z0-9]+|[^a-z0-9\s]", t.lower()))
    return [w for w, _ in counts.most_common(n)]


def build_random_predictor(folder, maxlen, words):
    """A ktrain predictor with DistilBERT's full shape and random weights, saved to `folder`.

    Its vocabulary is `words` (about 30,000, like the real one), so that reviews split into about as many
    tokens as with the real distilbert-base-uncased vocabulary, and length-sorted batching is measured fairly.
    """
    hf_home = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    (hf_home / "words.json").write_text(json.dumps(words))
    code = f"""
import json, sys; sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT / 'tests')!r}]
import tiny_distilbert
words = json.load(open({str(hf_home / 'words.json')!r}))
tiny_distilbert.install({str(hf_home)!r}, extra_words=words, dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
    code = f"""
import sys; sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT / 'tests')!r}]
from imdb_distilbert.training import learning
import synthetic
df = synthetic.reviews(64)
train, val, preproc = learning.preprocess(df, df, {maxlen})
learner = learning.build_learner(train, val, preproc, 32)
learning.save_predictor(learner, preproc, {str(folder)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)


def worker(args):
    """Measure one backend; print its results as JSON on the last line."""
    import numpy as np

    from imdb_distilbert.inference import backends

    texts = json.loads(args.texts.read_text())
    model = backends.load(args.model, args.worker, args.batch_size)
    model.predict_proba(texts[:2])  # warm-up: first-call allocations and graph set-up
    started = time.perf_counter()
    proba = model.predict_proba(texts)
    seconds = time.perf_counter() - started
    latencies = []
    for text in texts[:args.latency_n]:  # one review per call: batch 1
        started = time.perf_counter()
        model.predict_proba([text])
        latencies.append(time.perf_counter() - started)
    print(json.dumps({
        "backend": args.worker, "reviews": len(texts), "seconds": seconds, "reviews_per_s": len(texts) / seconds,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "proba": proba.tolist(),
    }))


def run_worker(backend, args, texts_file):
    command = [sys.executable, __file__, "--worker", backend, "--model", str(args.model), "--texts", str(texts_file),
               "--batch-size", str(args.batch_size), "--latency-n", str(args.latency_n)]
    print(f"measuring {backend}...", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the {backend} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results, baseline):
    import numpy as np

    lines = ["| backend | reviews/s (batch 32) | speed-up | p50 / p95 latency, batch 1 | peak memory "
             "| same label as ktrain | largest probability difference |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    base = np.array(baseline["proba"]) if baseline else None
    for r in results:
        proba = np.array(r["proba"])
        agree = f"{np.mean(proba.argmax(1) == base.argmax(1)):.1%}" if base is not None else "-"
        diff = f"{np.abs(proba - base).max():.1e}" if base is not None else "-"
        speedup = f"{r['reviews_per_s'] / baseline['reviews_per_s']:.1f}x" if baseline else "-"
        lines.append(f"| {r['backend']} | {r['reviews_per_s']:.2f} | {speedup} "
                     f"| {r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms "
                     f"| {r['peak_rss_mb'] / 1024:.2f} GB | {agree} | {diff} |")
    return "\n".join(lines)


def reviews_and_model(args, prefix, export=True):
    """The benchmarks' common start: a seeded sample of args.n reviews (args.reviews, else the real test split
    when ../shared is there, else data/sample), a new work folder, and args.model made ready (prepare_model).
    Returns (texts, their source file, work folder)."""
    import pandas as pd

    from imdb_distilbert.inference import predict

    source = args.reviews or (REAL_REVIEWS if REAL_REVIEWS.is_file() else SAMPLE_REVIEWS)
    all_texts = predict.read_texts(source)
    texts = pd.Series(all_texts).sample(n=min(args.n, len(all_texts)), random_state=0).tolist()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    args.model = prepare_model(args.model, args.maxlen, all_texts, work, export)
    return texts, source, work


def prepare_model(model, maxlen, texts, work, export=True):
    """`model`, or (when None) a full-size random-weight predictor built in `work` with `texts`' words;
    exported to ONNX first when `export` and it has no export yet. Shared by the speed benchmarks."""
    if model is None:
        model = work / "distilbert-full-size-random"
        print(f"building a full-size random-weight DistilBERT predictor (maxlen {maxlen}) in {model}...",
              file=sys.stderr)
        build_random_predictor(model, maxlen, common_words(texts))
    if export and not (model / "onnx.json").exists():
        print("exporting it to ONNX...", file=sys.stderr)
        # Random weights: every probability is near 0.5, so int8 labels flip freely; accept them
        # (speed is measured here).
        subprocess.run([sys.executable, str(ROOT / "src" / "export.py"), "--model", str(model), "--min-agreement", "0",
                        "--n", "100"],
                       check=True, stdout=sys.stderr)
    return model


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()[0]
    names = [b for b in args.backends.split(",") if b]
    if not set(names) <= set(BACKENDS):
        sys.exit(f"--backends: choose from {', '.join(BACKENDS)}")
    texts, source, work = reviews_and_model(args, "bench-inference-", export={"onnx", "onnx-int8"} & set(names))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    results = [run_worker(backend, args, texts_file) for backend in names]
    baseline = results[0] if names[0] == "ktrain" else None

    settings = json.loads((args.model / "onnx.json").read_text()) if (args.model / "onnx.json").exists() else {}
    header = (f"{len(texts)} reviews from {source.name} (seeded random sample), batch {args.batch_size}, "
              f"latency over the first {min(args.latency_n, len(texts))}; model {args.model.name}, "
              f"maxlen {settings.get('maxlen', '?')}; "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load average before: {load_before:.2f}; Python {platform.python_version()}, "
              + ", ".join(f"{n} {metadata.version(n)}" for n in ("tensorflow", "ktrain", "onnxruntime")))
    print(header + "\n\n" + table(results, baseline))
    if baseline:  # how far from a tie the ktrain answers are: label agreement means little when all are near 0.5
        import numpy as np

        margin = np.abs(np.array(baseline["proba"])[:, 0] - 0.5)
        print(f"\nktrain's distance from a tie, |p - 0.5|: median {np.median(margin):.2e}, smallest {margin.min():.2e}")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": [{k: v for k, v in r.items() if k != "proba"}
                                                                      for r in results]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
