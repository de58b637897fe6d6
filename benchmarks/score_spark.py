"""Spark's overhead on one machine: src/score_spark.py on local[2] against src/predict.py, same reviews, same model.

    flock /tmp/cpu.lock python benchmarks/score_spark.py            # builds a full-size random model, 2,000 reviews
    python benchmarks/score_spark.py --model models/distilbert-imdb --n 2000

Both score the same seeded random --n real reviews (../shared/data/imdb/test.xlsx when present, else
data/sample/test.xlsx) with the same backend (--backend, default onnx-int8), each as the command a user
runs, one after the other. Prints a markdown table: wall time, reviews/s and Spark's overhead, with
Spark's start-up time apart, and how far the two engines' answers are apart (they should agree exactly).
Without --model it builds and exports a predictor with DistilBERT's full shape and random weights, as
benchmarks/inference.py does (needs requirements-export.txt).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import inference  # noqa: E402  (benchmarks/inference.py: the full-size random model)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="a saved predictor (default: build a full-size random one)")
    p.add_argument("--reviews", type=Path, metavar="PATH",
                   help="reviews to score (default: ../shared/data/imdb/test.xlsx "
                   "when present, else data/sample/test.xlsx)")
    p.add_argument("--n", type=int, default=2000, help="reviews to score (default: 2000)")
    p.add_argument("--backend", choices=("onnx-int8", "onnx"), default="onnx-int8", help="(default: onnx-int8)")
    p.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    p.add_argument("--batch-size", type=int, default=32, help="score_spark.py's --batch-size (predict.py keeps its 32; "
                   "a review's scores do not depend on its batch, so the answers must agree whatever it is) "
                   "(default: 32)")
    p.add_argument("--maxlen", type=int, default=400,
                   help="maxlen of the predictor built without --model (default: 400)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run both N times, alternating, and compare "
                   "the fastest of each: on a shared machine, other work slows some runs (default: 1)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def timed(command):
    """Run `command`; (seconds, stdout). Stops the benchmark if it fails."""
    print(f"running {Path(command[1]).name}...", file=sys.stderr)
    started = time.perf_counter()
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{command[1]} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def main(argv=None):
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    texts, source, work = inference.reviews_and_model(args, "bench-spark-")
    frame = pd.DataFrame({"id": range(len(texts)), "Reviews": texts})
    frame.to_csv(work / "reviews.csv", index=False)
    frame.to_parquet(work / "reviews.parquet", index=False)

    predict_runs, spark_runs = [], []  # seconds; and Spark's start-up seconds
    for _ in range(args.repeat):
        predict_runs.append(timed([sys.executable, ROOT / "src" / "predict.py", "--model", args.model, "--backend",
                                   args.backend, "--file", work / "reviews.csv", "--out", work / "predict.csv"])[0])
        shutil.rmtree(work / "scored", ignore_errors=True)
        seconds, printed = timed([sys.executable, ROOT / "src" / "score_spark.py", "--model", args.model, "--backend",
                                  args.backend, "--input", work / "reviews.parquet", "--output", work / "scored",
                                  "--master", args.master, "--batch-size", args.batch_size])
        spark_runs.append((seconds, float(re.search(r"([\d.]+) s starting Spark", printed).group(1))))
    predict_s = min(predict_runs)
    spark_s, startup_s = min(spark_runs)

    ours, theirs = pd.read_parquet(work / "scored"), pd.read_csv(work / "predict.csv")
    same_label = float(np.mean(ours["label"].to_numpy() == theirs["label"].to_numpy()))
    largest_diff = float(np.abs(ours[["prob_neg", "prob_pos"]].to_numpy()
                                - theirs[["prob_neg", "prob_pos"]].to_numpy()).max())
    n = len(texts)
    rows = [("predict.py", predict_s), (f"score_spark.py, {args.master}", spark_s),
            (f"score_spark.py, {args.master}, after Spark has started", spark_s - startup_s)]
    settings = json.loads((args.model / "onnx.json").read_text())
    header = (f"{n} reviews from {source.name} (seeded random sample), backend {args.backend}, "
              f"model {args.model.name}, maxlen {settings.get('maxlen', '?')}, "
              f"score_spark.py --batch-size {args.batch_size}; "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load average before: {load_before:.2f}; Python {platform.python_version()}, "
              + ", ".join(f"{p} {metadata.version(p)}" for p in ("pyspark", "onnxruntime")))
    lines = ["| command | wall time | reviews/s | time against predict.py |", "| --- | --- | --- | --- |"]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.1f} s | {n / seconds:.2f} | {seconds / predict_s - 1:+.1%} |")
    print(header + "\n\n" + "\n".join(lines))
    if args.repeat > 1:
        print(f"\nFastest of {args.repeat} alternating runs each; all runs: predict.py "
              + ", ".join(f"{t:.1f}" for t in predict_runs) + " s; score_spark.py "
              + ", ".join(f"{t:.1f}" for t, _ in spark_runs) + " s.")
    print(f"\nSpark started in {startup_s:.1f} s. Same label as predict.py: {same_label:.1%}; "
          f"largest probability difference: {largest_diff:.1e} (predict.py writes 6 decimals).")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "reviews": n, "predict_runs_s": predict_runs,
                                         "spark_runs_s": [t for t, _ in spark_runs], "predict_s": predict_s,
                                         "spark_s": spark_s,
                                         "spark_startup_s": startup_s, "same_label": same_label,
                                         "largest_probability_difference": largest_diff}, indent=2) + "\n")


if __name__ == "__main__":
    main()
