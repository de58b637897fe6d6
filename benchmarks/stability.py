"""Does training learn real text on every seed? Train the pretrained stand-in on real IMDB reviews over several
seeds, with length-grouped and with fixed padding, and record test accuracy, ROC-AUC, loss and time.

    HF=$(../shared/pretrained/build.sh .venv/bin/python)
    export HF_HOME=$HF HF_HUB_OFFLINE=1
    python benchmarks/stability.py --seeds 42,1,2,3,4,5,6,7,8,9 --out runs/quick.jsonl        # the quick setting
    python benchmarks/stability.py --maxlen 400 --batch-size 6 --lr 2e-5 --sample 1000 \\
        --seeds 1,2,3,4 --out runs/recipe.jsonl                                                # the recipe's shape
    python benchmarks/stability.py --out runs/quick.jsonl --table                              # the table only

The default setting is README's quick CPU try (train.py --sample 2000 --maxlen 128 --epochs 1 --batch-size 16
--lr 1e-4). A run is train.py's path (dataset.load_splits, learning.set_seed, preprocess, build_learner, fit,
evaluation.predict) without the per-epoch validation and without saving: neither changes the weights, so a run
ends where train.py with the same flags and seed does, a few minutes sooner. Each run is its own process; its
result is appended to --out as one JSON line when it ends, and runs already there are not run again.
A run collapsed when its test accuracy is at most 0.55 (chance is 0.50). The records keep each run's training
seconds, but runs beside other work on the machine are slower: time speed with benchmarks/train_speed.py.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data" / "imdb"
COLLAPSED = 0.55


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="42,1,2,3,4,5,6,7,8,9", help="comma-separated seeds (default: 42 and 1-9)")
    p.add_argument("--paddings", default="grouped,fixed", help="comma-separated (default: grouped,fixed)")
    p.add_argument("--sample", type=int, default=2000, help="reviews of each split (default: 2000)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=DATA,
                   help="train.xlsx and test.xlsx (default: ../shared/data/imdb)")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per run (appended)")
    p.add_argument("--table", action="store_true", help="print the table of --out and stop")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one "seed,padding" and print its JSON
    return p.parse_args(argv)


def settings(args):
    return {k: getattr(args, k) for k in ("sample", "maxlen", "batch_size", "lr", "epochs")}


def read_cached(path):
    """dataset.read_split(path), read once: openpyxl takes half a minute for a 25,000-row split."""
    import pandas as pd

    from imdb_distilbert.data import dataset

    cache = Path("/tmp") / f"stability-{path.stem}-{int(path.stat().st_mtime)}.pkl"
    if not cache.exists():
        dataset.read_split(path).to_pickle(cache)
    return pd.read_pickle(cache)


def one_run(args, seed, padding):
    """Train and score one run in this process; returns its record."""
    from imdb_distilbert import compat  # noqa: F401  (before TensorFlow)
    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import evaluation, learning

    started = time.time()
    train_df, test_df = (dataset.sample(read_cached(args.data_dir / f"{name}.xlsx"), args.sample, seed)
                         for name in ("train", "test"))  # as dataset.load_splits samples them
    learning.set_seed(seed)
    train, val, preproc = learning.preprocess(train_df, test_df, args.maxlen, "head", padding, seed)
    learner = learning.build_learner(train, None, preproc, args.batch_size, "float32")
    fit_started = time.time()
    history = learning.fit(learner, args.lr, args.epochs)
    fit_seconds = time.time() - fit_started
    proba = evaluation.predict(learner, preproc, list(test_df[dataset.TEXT]), padding)
    scores = evaluation.score(test_df[dataset.LABEL], proba, preproc.get_classes())
    return {**settings(args), "seed": seed, "padding": padding, "accuracy": scores["accuracy"],
            "roc_auc": scores["roc_auc"], "test_loss": scores["loss"], "train_loss": history["loss"][-1],
            "share_pos": float((proba[:, 1] >= 0.5).mean()), "fit_seconds": round(fit_seconds, 1),
            "seconds": round(time.time() - started, 1), "cpu": platform.processor() or platform.machine(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "malloc": "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default"}


def table(records):
    """Markdown: one row per seed (both paddings side by side), then one per padding."""
    paddings = sorted({r["padding"] for r in records}, reverse=True)
    by = {(r["seed"], r["padding"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    lines = ["| seed | " + " | ".join(f"{p} accuracy (ROC-AUC)" for p in paddings) + " |",
             "| --- |" + " --- |" * len(paddings)]
    for seed in seeds:
        cells = [f"{by[seed, p]['accuracy']:.4f} ({by[seed, p]['roc_auc']:.3f})" if (seed, p) in by else ""
                 for p in paddings]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "| padding | runs | collapsed (accuracy <= 0.55) | mean accuracy | mean of runs that learnt "
              "| lowest |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in paddings:
        rs = [r for r in records if r["padding"] == p]
        acc = [r["accuracy"] for r in rs]
        learnt = [a for a in acc if a > COLLAPSED]
        lines.append(f"| {p} | {len(rs)} | {len(rs) - len(learnt)} | {sum(acc) / len(acc):.4f} | "
                     f"{sum(learnt) / max(1, len(learnt)):.4f} | {min(acc):.4f} |")
    return "\n".join(lines)


def main():
    args = parse_args()
    if args.one:
        seed, padding = args.one.split(",")
        print("RESULT " + json.dumps(one_run(args, int(seed), padding)), flush=True)
        return
    done = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] if args.out.exists() else []
    if not args.table:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for padding in args.paddings.split(","):
                if any(r["seed"] == seed and r["padding"] == padding
                       and {k: r[k] for k in settings(args)} == settings(args)
                       for r in done):
                    continue
                command = [sys.executable, __file__, "--one", f"{seed},{padding}", "--out", str(args.out),
                           "--data-dir", str(args.data_dir), *sum(([f"--{k.replace('_', '-')}", str(v)]
                                                                  for k, v in settings(args).items()), [])]
                printed = subprocess.run(command, capture_output=True, text=True)
                result = [line for line in printed.stdout.splitlines() if line.startswith("RESULT ")]
                if not result:
                    sys.exit(f"seed {seed} {padding} failed:\n{printed.stderr[-3000:]}")
                record = json.loads(result[0][len("RESULT "):])
                with open(args.out, "a") as out:
                    out.write(json.dumps(record) + "\n")
                done.append(record)
                print(f"seed {seed} {padding}: accuracy {record['accuracy']:.4f}, ROC-AUC {record['roc_auc']:.3f}, "
                      f"training {record['fit_seconds']:.0f} s", flush=True)
    wanted = [r for r in done if {k: r[k] for k in settings(args)} == settings(args)]
    print(table(wanted))


if __name__ == "__main__":
    main()
