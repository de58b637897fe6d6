"""Fine-tune DistilBERT on IMDB movie reviews with ktrain, evaluate it, and save a predictor.

    python src/train.py --epochs 2                      # the tutorial's full run (needs a GPU)
    python src/train.py --sample 2000 --maxlen 128 --epochs 1 --batch-size 16 --lr 1e-4   # quick CPU run
    python src/train.py --lr-find-only --output runs/lr         # plot loss against learning rate first
    python src/train.py --epochs 2 --resume                     # continue a run that was interrupted

Then, from Python (with src/ on the path; the package sets Keras 2 up for ktrain):
    import imdb_distilbert, ktrain
    ktrain.load_predictor("models/distilbert-imdb").predict(["great film"])
"""

import argparse
import json
import time
from pathlib import Path

from imdb_distilbert import compat  # environment fixes, before TensorFlow loads
from imdb_distilbert.data import dataset
from imdb_distilbert import network
from imdb_distilbert.data import truncation
from imdb_distilbert.errors import UserError, run_cli

from imdb_distilbert import ROOT
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
                   help="folder for the saved predictor, metrics.json, report and plots (default: models/distilbert-imdb)")
    p.add_argument("--val-split", type=float, metavar="FRACTION", default=0.0,
                   help="validate on a stratified FRACTION of train during training, so the test split is used "
                   "only once, at the end (default: 0, validate on the test split, as the tutorial does)")
    p.add_argument("--truncation", choices=truncation.MODES, default="head",
                   help="which part of a review longer than --maxlen tokens to keep (default: head)")
    p.add_argument("--padding", choices=("auto", "grouped", "fixed"), default="auto",
                   help="grouped: batches of reviews of similar length (Hugging Face's group_by_length), each padded "
                   "only to its longest review, in training, validation and evaluation (training about 1.6x faster at maxlen 400 on a CPU); "
                   "fixed: every review padded to --maxlen, as ktrain and the tutorial do; auto: grouped where that "
                   "saves at least a tenth of the tokens (maxlen 400: yes; 128: no, most reviews reach the cut), "
                   "else fixed (default: auto)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="arithmetic of training: bfloat16 and float16 are mixed precision (float32 weights). auto picks "
                   "bfloat16 on a CPU with bfloat16 instructions (AVX-512 BF16, AMX), where it is about 1.5x faster, "
                   "else float32. float16 (with loss scaling) is for GPUs with float16 tensor cores, such as "
                   "Colab's T4, L4 and A100 (default: auto). The saved predictor is float32 either way")
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default",
                   help="default: train on one device (a GPU if there is one); mirrored: a copy of the model on every "
                   "GPU of this machine (tf.distribute.MirroredStrategy), each taking --batch-size reviews per step")
    p.add_argument("--lr-find", action="store_true", help="run the learning-rate finder before training "
                   "and save lr_find.png with the suggested rates")
    p.add_argument("--lr-find-only", action="store_true", help="run the learning-rate finder, save lr_find.png "
                   "and metrics.json to --output, and stop without training")
    p.add_argument("--top-losses", type=int, metavar="N", default=20,
                   help="write the N most confidently wrong test reviews to top_losses.csv (default: 20)")
    p.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                   help="where to save the model after every epoch (default: OUTPUT/checkpoints)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last finished epoch (same flags as that run)")
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
    if not 0 <= args.val_split < 1:
        p.error("--val-split must be a fraction from 0 (off) to below 1, such as 0.1")
    if args.top_losses < 0:
        p.error("--top-losses must be 0 or more")
    if args.lr_find_only and args.resume:
        p.error("--lr-find-only and --resume do not go together: the finder does not train")
    args.checkpoint_dir = args.checkpoint_dir or args.output / "checkpoints"
    return args


def resolve_data(args, download=False):
    """The two split paths. The splits are downloaded when they are missing from the default data/ folder,
    or from --data-dir when `download` is set (the notebook's way of keeping them on Google Drive)."""
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    train = args.train or data_dir / "train.xlsx"
    test = args.test or data_dir / "test.xlsx"
    defaults = not (args.train or args.test) and (download or not args.data_dir)
    if defaults and not (train.exists() and test.exists()):
        print(f"{data_dir} has no IMDB splits yet; downloading them (about 26 MB) from {dataset.DATA_URL}")
        dataset.download_splits(data_dir)
    return train, test


def check_output(output, lr_find_only=False):
    """Refuse to replace anything but an earlier run's folder (and, for --lr-find-only, a predictor)."""
    if output.is_file():
        raise UserError(f"--output {output} is a file; give a folder path for the predictor.")
    ours = ("tf_model.preproc", "metrics.json", "checkpoints/state.json")
    if output.is_dir() and any(output.iterdir()) and not any((output / name).exists() for name in ours):
        raise UserError(f"--output {output} is a folder that holds something other than a saved predictor; "
                        "choose a new or empty folder.")
    if lr_find_only and (output / "tf_model.preproc").exists():
        raise UserError(f"--output {output} holds a trained predictor that --lr-find-only would replace; "
                        "give it a new folder, such as --output runs/lr-find.")


def check_checkpoints(args):
    """--resume needs a checkpoint, and an interrupted run's checkpoint is not silently overwritten."""
    found = (args.checkpoint_dir / "state.json").exists()
    if args.resume and not found:
        raise UserError(f"--resume found no checkpoint in {args.checkpoint_dir}; "
                        "run without --resume to start training, or point --checkpoint-dir at the interrupted run's.")
    if found and not args.resume and not args.lr_find_only:
        raise UserError(f"{args.checkpoint_dir} holds a checkpoint of an interrupted run; add --resume to continue it, "
                        "or delete that folder to start over.")


def run_settings(args):
    """What must match between an interrupted run and its --resume."""
    keys = ("epochs", "lr", "batch_size", "maxlen", "seed", "sample", "val_split", "truncation", "strategy")
    return {**{k: getattr(args, k) for k in keys}, "train": str(args.train.resolve()), "test": str(args.test.resolve())}


def main(argv=None):
    """The whole run; the notebook makes the same calls, one cell each."""
    run = Run(parse_args(argv))
    train_df, val_df, test_df = run.load_data()
    learner, preproc = run.build(train_df, val_df)  # TensorFlow loads here, after the inputs are known to be good
    if run.args.lr_find or run.args.lr_find_only:
        run.find_lr(learner)
        if run.args.lr_find_only:
            return run.save_lr_find()
    history = run.fit(learner)
    metrics = run.evaluate(learner, preproc, test_df, history)
    run.save(learner, preproc, metrics)


def start(**params):
    """The notebook's entry: a Run from keyword parameters named like the flags, e.g.
    start(epochs=2, batch_size=6, output="models/distilbert-imdb").

    Values are checked as train.py checks its flags. Unlike the command line, a `data_dir` that lacks
    the splits gets them downloaded (so the notebook can keep them on Google Drive).
    """
    argv = []
    for name, value in params.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return Run(parse_args(argv), download=True)


class Run:
    """One training run: its settings, its clock, and what it will write to --output.

    Creating it checks the output folder and any checkpoint, that the pretrained model is cached or the
    Hub answers (in seconds: src/network.py), and finds (or downloads) the data.
    """

    def __init__(self, args, download=False):
        self.args, self.started, self.clock = args, time.time(), time.time()
        check_output(args.output, args.lr_find_only)
        check_checkpoints(args)
        network.check_model(network.BASE_MODEL)
        args.train, args.test = resolve_data(args, download)
        self.files, self.facts = {}, {"seconds": {}}

    def lap(self, name):
        """Record the seconds since the last lap under `name`."""
        now = time.time()
        self.facts["seconds"][name] = round(now - self.clock, 1)
        self.clock = now

    def load_data(self):
        """(train, validation, test) DataFrames; validation is the test split unless --val-split."""
        args = self.args
        train_df, test_df = dataset.load_splits(args.train, args.test, args.sample, args.seed)
        val_df = test_df  # the tutorial validates on the test split
        if args.val_split:
            train_df, val_df = dataset.split_validation(train_df, args.val_split, args.seed)
        print(dataset.describe(train_df, test_df) + (f", validation: {len(val_df)} from train" if args.val_split else ""))
        self.facts.update(n_train=len(train_df), n_val=len(val_df),
                          validation=f"{args.val_split:g} of train" if args.val_split else "test split",
                          dropped_empty_reviews={"train": train_df.attrs["dropped_empty"],
                                                 "test": test_df.attrs["dropped_empty"]})
        return train_df, val_df, test_df

    def build(self, train_df, val_df):
        """Tokenize the reviews and build DistilBERT with a fresh classifier head. Returns (learner, preproc)."""
        from imdb_distilbert.training import learning  # TensorFlow loads here

        args = self.args
        learning.set_seed(args.seed)
        train, val, preproc = learning.preprocess(train_df, val_df, args.maxlen, args.truncation, args.padding, args.seed)
        if args.padding == "auto":  # decided: later steps (evaluation, metrics.json) see what was used
            args.padding = "grouped" if isinstance(train, learning.LengthGroupedDataset) else "fixed"
            print(f"padding: {args.padding} (--padding auto: length grouping "
                  f"{'saves' if args.padding == 'grouped' else 'would save less than'} a tenth of the tokens at maxlen {args.maxlen})")
        learner = learning.build_learner(train, val, preproc, args.batch_size, args.precision, args.strategy)
        self.lap("preprocess")
        return learner, preproc

    def find_lr(self, learner):
        """Run the learning-rate finder; lr_find.png and the suggested rates go to --output."""
        from imdb_distilbert.training import plots
        from imdb_distilbert.training import learning

        found = learning.find_lr(learner)
        self.files["lr_find.png"] = plots.lr_find(found)
        self.facts["lr_find"] = found["suggested"]
        self.facts["lr_find_curve"] = {"lrs": found["lrs"], "losses": found["losses"]}  # the plot's numbers
        self.lap("lr_find")
        print("suggested learning rates: " + ", ".join(f"{k} {v:.1e}" for k, v in found["suggested"].items() if v))
        return found

    def save_lr_find(self):
        """--lr-find-only: write lr_find.png and metrics.json, no predictor."""
        from imdb_distilbert.training import learning

        self.files["metrics.json"] = to_json(self.record())
        print(f"saved lr_find.png and metrics.json to {learning.save_files(self.args.output, self.files)}")

    def fit(self, learner):
        """fit_onecycle with a checkpoint after every epoch (resumed from the last one with --resume)."""
        from imdb_distilbert.training import learning

        args = self.args
        self.facts["training_precision"] = learning.precision_of(learner)  # "precision" is the metric
        # Replicas, devices, the batch of a step (--batch-size x replicas) and the peak rate it trains with.
        self.facts["distribution"] = {**learning.distribution_of(learner), "lr": args.lr}
        self.facts["padding"] = learning.padding_of(learner)  # the bucket width, the share of fixed padding's tokens
        checkpoints = learning.Checkpoints(args.checkpoint_dir, run_settings(args), args.epochs)
        if args.resume:
            checkpoints.resume(learner)
        try:
            history = learning.fit(learner, args.lr, args.epochs, checkpoints)
        except KeyboardInterrupt:
            if checkpoints.done:
                raise KeyboardInterrupt(f"epoch {checkpoints.done} of {args.epochs} is saved in {checkpoints.folder}; "
                                        "run the same command with --resume to continue from there.") from None
            raise
        self.lap("train")
        self.facts["malloc"] = compat.malloc_in_use()
        self.checkpoints = checkpoints
        return history

    def evaluate(self, learner, preproc, test_df, history):
        """Score the test split; the report, plots and worst mistakes go to --output. Returns metrics."""
        from imdb_distilbert.training import evaluation

        self.facts["peak_memory_mb"] = {"after_training": evaluation.peak_memory_mb()}
        metrics, files = evaluation.evaluate(learner, preproc, test_df, history, self.args.maxlen,
                                             self.args.truncation, self.args.top_losses, self.args.padding)
        self.lap("evaluate")
        self.facts["peak_memory_mb"]["after_evaluation"] = evaluation.peak_memory_mb()
        self.files.update(files)
        print(f"test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, "
              f"ROC-AUC {metrics['roc_auc'] or float('nan'):.4f}")
        return metrics

    def save(self, learner, preproc, metrics):
        """Write the predictor and everything else to --output, all or nothing. Returns the folder."""
        from imdb_distilbert.training import learning

        self.files["metrics.json"] = to_json(self.record(metrics))
        output = learning.save_predictor(learner, preproc, self.args.output, self.files)
        self.checkpoints.clear()  # the predictor holds the final weights
        print(f"saved the predictor, metrics.json, report.txt, plots and top_losses.csv/.html to {output}")
        return output

    def record(self, metrics=None):
        """What metrics.json holds: the metrics, then the run's facts, arguments and package versions."""
        from imdb_distilbert.training import evaluation

        self.facts["seconds"]["total"] = round(time.time() - self.started, 1)
        return {**(metrics or {}), **self.facts, "args": vars(self.args), "versions": evaluation.package_versions()}


def to_json(record):
    """`record` as indented JSON text (paths become strings)."""
    return json.dumps(record, indent=2, default=str) + "\n"


