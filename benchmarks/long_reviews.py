"""Reviews longer than maxlen, side by side: head, tail, head+tail and windows, on the real splits, with the stand-in.

    HF=$(../shared/pretrained/build.sh .venv/bin/python)
    export HF_HOME=$HF HF_HUB_OFFLINE=1
    python benchmarks/long_reviews.py --maxlen 128 --sample 2000 --out benchmarks/results/long-reviews-128.json
    python benchmarks/long_reviews.py --maxlen 400 --sample 1000 --out benchmarks/results/long-reviews-400.json
    python benchmarks/long_reviews.py --out benchmarks/results/long-reviews-128.json --table   # the table only

Two trainings with train.py (the quick CPU setting by default: --epochs 1 --batch-size 16 --lr 1e-4, no
calibration, so both see the same reviews): one on each review's head (the default --truncation head) and one with
--train-windows. Then the saved predictor of each scores the same test sample every way, through predict.py's ktrain
backend (tokenizing and cutting or windowing included), timed: head, tail, head+tail (cut: a review that fits is
read whole) and windows, whose answers are combined three ways (the mean of the windows' logits, the mean of their
probabilities, the most confident window) from one scoring (the windows row is the mean of logits, timed).
Accuracy and log loss on the whole test sample and on its long reviews (those longer than maxlen word pieces,
[CLS] and [SEP] included). Scoring times are of one process on this machine: compare them within one run.
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
READINGS = ("head", "tail", "head+tail", "windows")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--sample", type=int, default=2000, help="reviews of each split (default: 2000)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=DATA,
                   help="train.xlsx and test.xlsx (default: ../shared/data/imdb)")
    p.add_argument("--work", type=Path, default=Path("/tmp/long-reviews"), help="where the predictors are saved")
    p.add_argument("--out", type=Path, required=True, help="the results (JSON)")
    p.add_argument("--control-epochs", type=int, metavar="N", help="also train on heads for N epochs, about as many "
                   "steps as --train-windows makes, to tell its windows from its extra steps (default: not)")
    p.add_argument("--table", action="store_true", help="print the table of --out and stop")
    return p.parse_args(argv)


def train(args, name, *extra, epochs=None):
    """train.py into WORK/maxlen-N/name, unless a finished run is there. Returns the folder."""
    output = args.work / f"maxlen-{args.maxlen}-seed-{args.seed}" / name
    if (output / "metrics.json").is_file():
        return output
    command = [sys.executable, str(ROOT / "src" / "train.py"), "--data-dir", args.data_dir, "--sample", args.sample,
               "--maxlen", args.maxlen, "--epochs", epochs or args.epochs, "--batch-size", args.batch_size,
               "--lr", args.lr, "--seed", args.seed, "--no-calibrate", "--top-losses", 0, "--output", output, *extra]
    print("$", " ".join(map(str, command[1:])), flush=True)
    subprocess.run([str(c) for c in command], check=True)
    return output


def score(folder, test, args):
    """Every reading of `test` by the predictor in `folder`: accuracy and log loss on all and long reviews, seconds."""
    import numpy as np

    from imdb_distilbert.data import windows
    from imdb_distilbert.inference import backends
    from imdb_distilbert.training import calibration

    texts = list(test["Reviews"])
    found = {}
    for reading in READINGS[:3]:
        model = backends.KtrainBackend(folder, batch_size=32, long_reviews="cut", cut=reading)
        model.predict_proba(texts[:8])  # warm up: the first call builds TensorFlow's functions
        started = time.perf_counter()
        proba = model.predict_proba(texts)
        found[reading] = {"proba": proba, "seconds": time.perf_counter() - started}
    # windows: what the backend does (backends.predict_like_saved_run), with the windows' answers kept, so that one
    # scoring gives the three combinations; the time is of the windowing, the scoring and the combination.
    model = backends.KtrainBackend(folder, batch_size=32, long_reviews="windows")
    classes = model.classes
    model.predict_proba(texts[:8])
    started = time.perf_counter()
    pieces = windows.of_texts(texts, model.predictor.preproc.get_tokenizer(), model.reading)
    piece_proba = np.concatenate([model.predictor.predict(pieces.pieces[i:i + 32], return_proba=True)
                                  for i in range(0, len(pieces.pieces), 32)])
    found["windows"] = {"proba": pieces.combine(piece_proba), "seconds": time.perf_counter() - started}
    for how in windows.COMBINATIONS:
        found[f"windows, {how}"] = {"proba": pieces.combine(piece_proba, how), "seconds": None}
    truth = np.array([classes.index(label) for label in test["Sentiment"]])
    long = pieces.counts() > 1
    rows = {}
    for name, r in found.items():
        p = r["proba"]
        rows[name] = {"accuracy": float((p.argmax(1) == truth).mean()), "log_loss": calibration.log_loss(p, truth),
                      "long_accuracy": float((p[long].argmax(1) == truth[long]).mean()),
                      "long_log_loss": calibration.log_loss(p[long], truth[long]),
                      "seconds": None if r["seconds"] is None else round(r["seconds"], 2)}
    facts = {"n_test": len(texts), "n_long": int(long.sum()), "windows_scored": len(pieces.pieces),
             "capped": len(pieces.capped), "overlap": model.reading.window_overlap()}
    return rows, facts


def table(results):
    lines = [f"maxlen {results['settings']['maxlen']}, {results['facts']['n_test']} test reviews of which "
             f"{results['facts']['n_long']} long; {results['facts']['windows_scored']} windows; seed "
             f"{results['settings']['seed']}",
             "| trained on | read as | accuracy | log loss | long: accuracy | long: log loss | scoring s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for trained, rows in results["runs"].items():
        for name, r in rows.items():
            seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
            lines.append(f"| {trained} | {name} | {r['accuracy']:.4f} | {r['log_loss']:.4f} | "
                         f"{r['long_accuracy']:.4f} | {r['long_log_loss']:.4f} | {seconds} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    folders = {"head (default)": train(args, "head"), "windows (--train-windows)": train(args, "windows",
                                                                                        "--train-windows")}
    if args.control_epochs:
        folders[f"head, {args.control_epochs} epochs"] = train(args, f"head-{args.control_epochs}-epochs",
                                                               epochs=args.control_epochs)
    if args.out.is_file():  # rows already measured (a rerun with --control-epochs adds its own)
        done = json.loads(args.out.read_text())
        folders = {k: v for k, v in folders.items() if k not in done["runs"]}
    import imdb_distilbert  # noqa: F401  (Keras 2 before TensorFlow)
    from imdb_distilbert.data import dataset

    _, test = dataset.load_splits(args.data_dir / "train.xlsx", args.data_dir / "test.xlsx", args.sample, args.seed)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu": cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "runs": {}, "train_seconds": {}}
    for trained, folder in folders.items():
        rows, facts = score(folder, test, args)
        results["runs"][trained], results["facts"] = rows, facts
        results["train_seconds"][trained] = json.loads((folder / "metrics.json").read_text())["seconds"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def cpu():
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
