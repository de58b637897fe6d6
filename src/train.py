"""Fine-tune DistilBERT on IMDB movie reviews with ktrain, evaluate it, and save a predictor.

    python src/train.py --epochs 2                      # the tutorial's full run (needs a GPU)
    python src/train.py --sample 2000 --maxlen 128 --epochs 1 --batch-size 16 --lr 1e-4   # quick CPU run

Then, from Python (import src/compat.py before ktrain, as README.md shows):
    ktrain.load_predictor("models/distilbert-imdb").predict(["great film"])
"""

import argparse
import json
import time
from pathlib import Path

import compat  # environment fixes, before TensorFlow loads
import dataset
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / "data"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, metavar="N", default=2, help="training epochs (default: 2)")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of the one-cycle schedule (default: 2e-5)")
    p.add_argument("--batch-size", type=int, metavar="N", default=6, help="reviews per training step (default: 6)")
    p.add_argument("--maxlen", type=int, metavar="N", default=400, help="tokens kept per review; longer ones are cut (default: 400)")
    p.add_argument("--seed", type=int, metavar="N", default=42, help="random seed for sampling, shuffling and initialisation (default: 42)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder holding train.xlsx and test.xlsx "
                   "(default: data/, where the splits are downloaded if missing)")
    p.add_argument("--train", type=Path, metavar="PATH", help="training split, .xlsx or .csv with Reviews and Sentiment columns "
                   "(default: DATA_DIR/train.xlsx)")
    p.add_argument("--test", type=Path, metavar="PATH", help="test split, same format (default: DATA_DIR/test.xlsx)")
    p.add_argument("--sample", type=int, metavar="N", help="use a stratified random N reviews from each split, "
                   "for quick runs (default: all)")
    p.add_argument("--output", type=Path, metavar="DIR", default=ROOT / "models" / "distilbert-imdb",
                   help="folder for the saved predictor and metrics.json (default: models/distilbert-imdb)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "maxlen"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.lr < 1:
        p.error("--lr must be between 0 and 1 (the tutorial uses 2e-5)")
    if args.sample is not None and args.sample < 2:
        p.error("--sample must be at least 2 (one review of each class)")
    if args.maxlen > 512:
        p.error("--maxlen must be at most 512, the longest input DistilBERT accepts")
    return args


def resolve_data(args):
    """The two split paths; downloads the splits into data/ when the defaults are used and missing."""
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    train = args.train or data_dir / "train.xlsx"
    test = args.test or data_dir / "test.xlsx"
    if not (args.data_dir or args.train or args.test) and not (train.exists() and test.exists()):
        print(f"{data_dir} has no IMDB splits yet; downloading them (about 26 MB) from {dataset.DATA_URL}")
        dataset.download_splits(data_dir)
    return train, test


def check_output(output):
    """Refuse to replace anything but an earlier predictor folder."""
    if output.is_file():
        raise UserError(f"--output {output} is a file; give a folder path for the predictor.")
    if output.is_dir() and any(output.iterdir()) and not (output / "tf_model.preproc").exists():
        raise UserError(f"--output {output} is a folder that holds something other than a saved predictor; "
                        "choose a new or empty folder.")


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    check_output(args.output)
    train_df, test_df = dataset.load_splits(*resolve_data(args), args.sample, args.seed)
    print(dataset.describe(train_df, test_df))

    import evaluation
    import training  # TensorFlow loads here, after the inputs are known to be good

    training.set_seed(args.seed)
    train, val, preproc = training.preprocess(train_df, test_df, args.maxlen)
    learner = training.build_learner(train, val, preproc, args.batch_size)
    fit_started = time.time()
    training.fit(learner, args.lr, args.epochs)
    train_seconds = time.time() - fit_started

    metrics = evaluation.evaluate(learner, preproc, test_df)
    metrics.update(
        n_train=len(train_df),
        dropped_empty_reviews={"train": train_df.attrs["dropped_empty"], "test": test_df.attrs["dropped_empty"]},
        train_seconds=round(train_seconds, 1),
        malloc=compat.malloc_in_use(),
        total_seconds=round(time.time() - started, 1),
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        versions=evaluation.package_versions(),
    )
    output = training.save_predictor(learner, preproc, args.output, {"metrics.json": json.dumps(metrics, indent=2) + "\n"})
    print(f"test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}")
    print(f"saved the predictor and metrics.json to {output}")


if __name__ == "__main__":
    compat.use_fast_malloc()  # re-runs this command with tcmalloc preloaded when installed (IMDB_FAST_MALLOC=0: off)
    run_cli(main)
