"""Fine-tune DistilBERT on IMDB movie reviews with ktrain, evaluate it, and save a predictor.

    python src/train.py --epochs 2                      # the tutorial's full run (needs a GPU)
    python src/train.py --sample 2000 --maxlen 128 --epochs 1 --batch-size 16 --lr 1e-4   # quick CPU run
    python src/train.py --lr-find-only --output runs/lr         # plot loss against learning rate first
    python src/train.py --epochs 2 --resume                     # continue a run that was interrupted

Then, from Python (with src/ on the path; the package sets Keras 2 up for ktrain):
    import imdb_distilbert, ktrain
    ktrain.load_predictor("models/distilbert-imdb").predict(["great film"])
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imdb_distilbert import (
    ROOT,
    compat,  # environment fixes, before TensorFlow loads
    files,
    network,
)
from imdb_distilbert.config import RunConfig
from imdb_distilbert.data import checks, dataset
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import selfcheck

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DATA_DIR = ROOT / "data"


def parse_args(argv: list[str] | None = None) -> RunConfig:
    """train.py's flags as a RunConfig (config.py defines them: names, defaults, help and checks)."""
    return RunConfig.from_flags(argv, __doc__)


def resolve_data(config: RunConfig, download: bool = False) -> tuple[Path, Path]:
    """The two split paths. The splits are downloaded when they are missing from the default data/ folder,
    or from --data-dir when `download` is set (the notebook's way of keeping them on Google Drive)."""
    data_dir = config.data_dir or DEFAULT_DATA_DIR
    train = config.train or data_dir / "train.xlsx"
    test = config.test or data_dir / "test.xlsx"
    defaults = not (config.train or config.test) and (download or not config.data_dir)
    if defaults and not (train.exists() and test.exists()):
        print(f"{data_dir} has no IMDB splits yet; downloading them (about 26 MB) from {dataset.DATA_URL}")
        dataset.download_splits(data_dir)
    return train, test


def check_output(output: Path, lr_find_only: bool = False) -> None:
    """Refuse to replace anything but a folder this project wrote (files.check_replaceable: its marker), and, for
    --lr-find-only, a predictor."""
    files.check_replaceable(output)
    if lr_find_only and (output / "tf_model.preproc").exists():
        raise UserError(f"--output {output} holds a trained predictor that --lr-find-only would replace; "
                        "give it a new folder, such as --output runs/lr-find.")


def check_checkpoints(config: RunConfig) -> None:
    """--resume needs a checkpoint, and an interrupted run's checkpoint is not silently overwritten."""
    found = (config.checkpoint_dir / "state.json").exists()
    if config.resume and not found:
        raise UserError(f"--resume found no checkpoint in {config.checkpoint_dir}; "
                        "run without --resume to start training, or point --checkpoint-dir at the interrupted run's.")
    if found and not config.resume and not config.lr_find_only:
        raise UserError(f"{config.checkpoint_dir} holds a checkpoint of an interrupted run; "
                        "add --resume to continue it, or delete that folder to start over.")


def run_settings(config: RunConfig) -> dict[str, Any]:
    """What must match between an interrupted run and its --resume."""
    keys = ("epochs", "lr", "batch_size", "maxlen", "seed", "sample", "val_split", "truncation", "strategy",
            "text_column", "label_column", "class_weight")
    return {**{k: getattr(config, k) for k in keys},
            "train": str(config.train.resolve()), "test": str(config.test.resolve())}


def main(argv: list[str] | None = None) -> None:
    """The whole run; the notebook makes the same calls, one cell each."""
    run = Run(parse_args(argv))
    train_df, val_df, test_df = run.load_data()
    learner, preproc = run.build(train_df, val_df)  # TensorFlow loads here, after the inputs are known to be good
    if run.config.lr_find or run.config.lr_find_only:
        run.find_lr(learner)
        if run.config.lr_find_only:
            return run.save_lr_find()
    history = run.fit(learner)
    run.calibrate(learner, preproc)
    metrics = run.evaluate(learner, preproc, test_df, history)
    run.save(learner, preproc, metrics)


def start(config: RunConfig | None = None, **params: Any) -> Run:
    """The notebook's entry: a Run of `config` (a RunConfig; the notebook makes it from its parameters cell), or of
    keyword parameters named like the flags, e.g. start(epochs=2, batch_size=6, output="models/distilbert-imdb").

    Values are checked as train.py checks its flags. Unlike the command line, a `data_dir` that lacks
    the splits gets them downloaded (so the notebook can keep them on Google Drive).
    """
    if config is None:
        unknown = sorted(set(params) - set(RunConfig.names()))
        if unknown:
            raise UserError(f"start() has no parameter {unknown[0]!r}; its parameters are train.py's flags with _ "
                            f"for -: {', '.join(RunConfig.names())}.")
        config = RunConfig(**params)
    for problem in config.problems()[:1]:
        raise UserError(problem)
    return Run(config, download=True)


class Run:
    """One training run: its settings, its clock, and what it will write to --output.

    Creating it checks the output folder and any checkpoint, that the pretrained model is cached or the
    Hub answers (in seconds: imdb_distilbert/network.py), and finds (or downloads) the data.

    In its methods, `learner` is the ktrain Learner and `preproc` ktrain's preprocessor that learning.py builds.
    """

    def __init__(self, config: RunConfig, download: bool = False) -> None:
        self.config, self.started, self.clock = config, time.time(), time.time()
        files.claim(config.output)  # a second run on this output is refused now, not when it saves
        files.claim(config.checkpoint_dir)
        check_output(config.output, config.lr_find_only)
        check_checkpoints(config)
        network.check_model(network.BASE_MODEL)
        config.train, config.test = resolve_data(config, download)
        self.files, self.facts = {}, {"seconds": {}}
        self.data_check: checks.DataCheck | None = None  # load_data checks the data
        revision = network.cached_revision(network.BASE_MODEL)
        self.facts["base_model"] = {"name": network.BASE_MODEL, "revision": revision, "pinned": network.BASE_REVISION}
        if revision != network.BASE_REVISION:
            print(f"note: the cached {network.BASE_MODEL} is revision {revision}, not the pinned "
                  f"{network.BASE_REVISION[:12]}; metrics.json records which one this run used")
        self.classes, self.class_weight, self.calibration_df = None, None, None  # load_data finds them
        self.temperature = 1.0  # calibrate() fits it

    def reading(self, long_reviews: str | None = None) -> Any:
        """How this run reads a review longer than --maxlen (data/windows.py): as --long-reviews says, or as
        `long_reviews` ("cut", "windows") says."""
        from imdb_distilbert.data import windows

        c = self.config
        return windows.Reading(c.maxlen, c.truncation, long_reviews or c.long_reviews, c.window_overlap, c.max_windows)

    def lap(self, name: str) -> None:
        """Record the seconds since the last lap under `name`."""
        now = time.time()
        self.facts["seconds"][name] = round(now - self.clock, 1)
        self.clock = now

    def load_data(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(train, validation, test) DataFrames; validation is the test split unless --val-split."""
        config = self.config
        train_df, test_df = dataset.load_splits(config.train, config.test, config.sample, config.seed,
                                                config.text_column, config.label_column)
        # Duplicates, train/test overlap, conflicting labels, balance, swapped splits: said, and in metrics.json.
        test_df, self.data_check = checks.check_and_report(train_df, test_df, config.drop_test_overlap)
        self.facts["data_check"] = self.data_check.facts
        if len(self.data_check.conflicts):
            self.files[checks.CONFLICTS_CSV] = checks.conflicts_csv(self.data_check.conflicts)
        self.classes = dataset.check_labels(train_df, test_df)  # in the order of the model's outputs
        val_df = test_df  # the tutorial validates on the test split
        if config.val_split:
            train_df, val_df = dataset.split_validation(train_df, config.val_split, config.seed)
        # The reviews the saved predictor checks itself with (inference/selfcheck.py): scored by save().
        self.check_reviews = selfcheck.pick_reviews(list(test_df[dataset.TEXT]), config.maxlen, config.seed)
        self.calibration_df = self.held_out_for_calibration(train_df, val_df)
        if self.calibration_df is not None and not config.val_split:
            train_df = train_df.drop(self.calibration_df.index)
        print(dataset.describe(train_df, test_df)
              + (f", validation: {len(val_df)} from train" if config.val_split else ""))
        self.facts.update(n_train=len(train_df), n_val=len(val_df),
                          validation=f"{config.val_split:g} of train" if config.val_split else "test split",
                          dropped_empty_reviews={"train": train_df.attrs["dropped_empty"],
                                                 "test": test_df.attrs["dropped_empty"]},
                          data={name: {"content_sha256": df.attrs["content_sha256"],  # of the whole file, unsampled
                                       "imdb": df.attrs["content_sha256"] == dataset.IMDB_SHA256[f"{name}.xlsx"]}
                                for name, df in (("train", train_df), ("test", test_df))})
        if config.class_weight == "balanced":
            weights = dataset.class_weights(train_df, self.classes)
            self.class_weight = weights
            self.facts["class_weight"] = {c: round(weights[i], 4) for i, c in enumerate(self.classes)}
            print("class weights (--class-weight balanced): "
                  + ", ".join(f"{c} {w:.3g}" for c, w in self.facts["class_weight"].items()))
        return train_df, val_df, test_df

    def held_out_for_calibration(self, train_df: pd.DataFrame, val_df: pd.DataFrame) -> pd.DataFrame | None:
        """The reviews the temperature is fitted on (training/calibration.py): the validation split when there is
        one, else a stratified share of train set aside before training; never the test split. None when
        --no-calibrate, or when too few reviews would be left for it (said)."""
        from imdb_distilbert.training import calibration

        if not self.config.calibrate:
            return None
        held_out = val_df if self.config.val_split else None
        if held_out is None and len(train_df) * calibration.CALIBRATION_SHARE >= calibration.MIN_REVIEWS:
            held_out = dataset.split_validation(train_df, calibration.CALIBRATION_SHARE, self.config.seed)[1]
        if held_out is None or len(held_out) < calibration.MIN_REVIEWS:
            print(f"not calibrating: it needs {calibration.MIN_REVIEWS} held-out reviews "
                  f"({calibration.CALIBRATION_SHARE:.0%} of train, or --val-split), and this run has "
                  f"{0 if held_out is None else len(held_out)}")
            self.facts["calibrated_on"] = None
            return None
        source = "the validation split" if self.config.val_split else f"{len(held_out)} reviews set aside from train"
        self.facts["calibrated_on"] = {"reviews": source, "n": len(held_out)}
        return held_out

    def build(self, train_df: pd.DataFrame, val_df: pd.DataFrame) -> tuple[Any, Any]:
        """Tokenize the reviews and build DistilBERT with a fresh classifier head. Returns (learner, preproc)."""
        from imdb_distilbert.training import learning  # TensorFlow loads here

        config = self.config
        learning.set_seed(config.seed)
        train, val, preproc = learning.preprocess(train_df, val_df, config.maxlen, config.truncation, config.padding,
                                                  config.seed, self.classes,
                                                  self.reading("windows") if config.train_windows else None)
        if config.train_windows:
            self.facts["n_train_windows"] = len(train.x)
        if config.padding == "auto":  # decided: later steps (evaluation, metrics.json) see what was used
            config.padding = "grouped" if isinstance(train, learning.LengthGroupedDataset) else "fixed"
            print(f"padding: {config.padding} (--padding auto: length grouping "
                  f"{'saves' if config.padding == 'grouped' else 'would save less than'} a tenth of the tokens "
                  f"at maxlen {config.maxlen})")
        learner = learning.build_learner(train, val, preproc, config.batch_size, config.precision, config.strategy)
        self.lap("preprocess")
        return learner, preproc

    def find_lr(self, learner: Any) -> dict[str, Any]:
        """Run the learning-rate finder; lr_find.png and the suggested rates go to --output."""
        from imdb_distilbert.training import learning, plots

        found = learning.find_lr(learner, self.class_weight)
        self.files["lr_find.png"] = plots.lr_find(found)
        self.facts["lr_find"] = found["suggested"]
        self.facts["lr_find_curve"] = {"lrs": found["lrs"], "losses": found["losses"]}  # the plot's numbers
        self.lap("lr_find")
        print("suggested learning rates: " + ", ".join(f"{k} {v:.1e}" for k, v in found["suggested"].items() if v))
        return found

    def save_lr_find(self) -> None:
        """--lr-find-only: write lr_find.png and metrics.json, no predictor."""
        from imdb_distilbert.training import learning

        self.files["metrics.json"] = to_json(self.record())
        print(f"saved lr_find.png and metrics.json to {learning.save_files(self.config.output, self.files)}")

    def fit(self, learner: Any) -> dict[str, list[float]]:
        """fit_onecycle with a checkpoint after every epoch (resumed from the last one with --resume)."""
        from imdb_distilbert.training import learning

        config = self.config
        self.facts["training_precision"] = learning.precision_of(learner)  # "precision" is the metric
        # Replicas, devices, the batch of a step (--batch-size x replicas) and the peak rate it trains with.
        self.facts["distribution"] = {**learning.distribution_of(learner), "lr": config.lr}
        self.facts["padding"] = learning.padding_of(learner)  # the bucket width, the share of fixed padding's tokens
        checkpoints = learning.Checkpoints(config.checkpoint_dir, run_settings(config), config.epochs)
        if config.resume:
            checkpoints.resume(learner)
        try:
            history = learning.fit(learner, config.lr, config.epochs, checkpoints, class_weight=self.class_weight)
        except KeyboardInterrupt:
            if checkpoints.done:
                raise KeyboardInterrupt(
                    f"epoch {checkpoints.done} of {config.epochs} is saved in {checkpoints.folder}; "
                    "run the same command with --resume to continue from there.") from None
            raise
        self.lap("train")
        self.facts["malloc"] = compat.malloc_in_use()
        self.checkpoints = checkpoints
        return history

    def calibrate(self, learner: Any, preproc: Any) -> float:
        """Fit the temperature on the held-out reviews and fold it into the model (a no-op with --no-calibrate).
        Returns the temperature (1: none)."""
        if self.calibration_df is None:
            return 1.0
        from imdb_distilbert.training import calibration, learning

        df = self.calibration_df
        print(f"calibrating on {self.facts['calibrated_on']['reviews']}...")
        proba = learning.read_proba(learner.model, preproc, list(df[dataset.TEXT]), self.reading())
        truth = [self.classes.index(label) for label in df[dataset.LABEL]]
        temperature = calibration.fit_temperature(proba, truth)
        learning.fold_temperature(learner.model, temperature)
        self.temperature = temperature  # evaluate() reports it, with the test split's ECE before and after
        self.lap("calibrate")
        kind = "over-confident, now softened" if temperature > 1 else "under-confident, now sharpened"
        print(f"temperature {temperature:.3f} (the raw probabilities were {kind}), folded into "
              f"the classifier; held-out log loss {calibration.log_loss(proba, truth):.4f} -> "
              f"{calibration.log_loss(calibration.with_temperature(proba, temperature), truth):.4f}")
        return temperature

    def evaluate(self, learner: Any, preproc: Any, test_df: pd.DataFrame,
                 history: dict[str, list[float]]) -> dict[str, Any]:
        """Score the test split; the report, plots and worst mistakes go to --output. Returns metrics."""
        from imdb_distilbert.training import evaluation

        self.facts["peak_memory_mb"] = {"after_training": evaluation.peak_memory_mb()}
        metrics, files = evaluation.evaluate(learner, preproc, test_df, history, self.reading(),
                                             self.config.top_losses, self.config.padding, self.temperature)
        self.lap("evaluate")
        self.facts["peak_memory_mb"]["after_evaluation"] = evaluation.peak_memory_mb()
        self.files.update(files)
        if self.data_check is not None:  # what the data check found, after the scores
            self.files["report.txt"] += self.data_check.report()
        auc = "n/a" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
        print(f"test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, ROC-AUC {auc}")
        return metrics

    def save(self, learner: Any, preproc: Any, metrics: dict[str, Any]) -> Path:
        """Write the predictor and everything else to --output, all or nothing. Returns the folder."""
        from imdb_distilbert.training import learning

        # A few reviews and the saved model's answers, so that a later environment can be checked against them.
        proba = learning.predictor_proba(learner, preproc, self.check_reviews, self.reading())
        self.files[selfcheck.SELF_CHECK] = selfcheck.record(self.check_reviews, proba, preproc.get_classes())
        self.lap("self_check")
        self.files["metrics.json"] = to_json(self.record(metrics))
        output = learning.save_predictor(learner, preproc, self.config.output, self.files)
        self.checkpoints.clear()  # the predictor holds the final weights
        print(f"saved the predictor, metrics.json, report.txt, plots, top_losses.csv/.html and {selfcheck.SELF_CHECK} "
              f"to {output}")
        return output

    def record(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """What metrics.json holds: the metrics, then the run's facts, arguments and package versions."""
        from imdb_distilbert.training import evaluation

        self.facts["seconds"]["total"] = round(time.time() - self.started, 1)
        return {**(metrics or {}), **self.facts, "args": self.config.record(),
                "versions": evaluation.package_versions()}


def to_json(record: dict[str, Any]) -> str:
    """`record` as indented JSON text (paths become strings)."""
    return json.dumps(record, indent=2, default=str) + "\n"


