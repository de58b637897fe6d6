"""The run configuration: everything a training run is told, in one typed place; and reading a saved run.

`RunConfig` is what `python src/train.py --flags` parses, what the notebook's parameters cell sets (its
variables have the fields' names), and what a saved run's metrics.json records under "args". Code that
reads a saved run asks `RunConfig.saved(folder)`, not the JSON's keys.

To add a training option: add a field here (default, help, checks in `problems`); train.py's flag, the
notebook's parameter and metrics.json follow. Then use it in training/recipe.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from imdb_distilbert import ROOT

TRUNCATIONS = ("head", "tail", "head+tail")  # which part of a long review is kept (data/truncation.py)
LONG_REVIEWS = ("cut", "windows")  # how a review longer than maxlen is scored (data/windows.py)
MAX_WINDOWS = 16  # windows read per review at most; 16 windows of 400 with a quarter overlap read about 4,900 pieces
PADDINGS = ("auto", "grouped", "fixed")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
STRATEGIES = ("default", "mirrored")
CLASS_WEIGHTS = ("none", "balanced")
DEFAULT_OUTPUT = ROOT / "models" / "distilbert-imdb"


def option(help: str, metavar: Optional[str] = None, **argparse_kwargs: Any) -> dict:
    """A field's command-line form: its help text, and anything else argparse's add_argument takes."""
    return {"help": help, "metavar": metavar, **argparse_kwargs}


def value_type(f: dataclasses.Field) -> type:
    """The type of a field's values, None aside: int for "Optional[int]", Path for "Path"."""
    return {"int": int, "float": float, "str": str, "bool": bool}.get(f.type.replace("Optional[", "").rstrip("]"), Path)


@dataclass
class RunConfig:
    """The settings of one training run; the defaults are the tutorial's recipe."""

    epochs: int = field(default=2, metadata=option("training epochs (default: 2)", "N"))
    lr: float = field(default=2e-5, metadata=option("peak learning rate of the one-cycle schedule (default: 2e-5)"))
    batch_size: int = field(default=6, metadata=option("reviews per training step (default: 6)", "N"))
    maxlen: int = field(default=400, metadata=option("tokens kept per review; longer ones are cut (default: 400)", "N"))
    seed: int = field(default=42, metadata=option(
        "random seed for sampling, shuffling and initialisation (default: 42)", "N"))
    data_dir: Optional[Path] = field(default=None, metadata=option(
        "folder holding train.xlsx and test.xlsx (default: data/, where the splits are downloaded if missing)", "DIR"))
    train: Optional[Path] = field(default=None, metadata=option(
        "training split, .xlsx or .csv with a text and a label column (--text-column, --label-column) "
        "(default: DATA_DIR/train.xlsx)", "PATH"))
    test: Optional[Path] = field(default=None, metadata=option(
        "test split, same format (default: DATA_DIR/test.xlsx)", "PATH"))
    text_column: str = field(default="Reviews", metadata=option(
        "the column of both splits that holds the text (default: Reviews)", "NAME"))
    label_column: str = field(default="Sentiment", metadata=option(
        "the column of both splits that holds the label: two or more classes, words (pos, neutral, ...) or whole "
        "numbers (star ratings 1-5) (default: Sentiment)", "NAME"))
    class_weight: str = field(default="none", metadata=option(
        "balanced: weight each training review's loss by the inverse of its class's share of the training split, "
        "for imbalanced labels (ktrain's class_weight); none: every review counts the same (default: none)",
        choices=CLASS_WEIGHTS))
    sample: Optional[int] = field(default=None, metadata=option(
        "use a stratified random N reviews from each split, for quick runs (default: all)", "N"))
    drop_test_overlap: bool = field(default=False, metadata=option(
        "drop from the test split the reviews whose text (ignoring case, HTML tags, punctuation and whitespace) also "
        "occurs in train; the run always says how many there are (IMDB: 123) (default: keep them, as the tutorial "
        "does)"))
    output: Path = field(default=DEFAULT_OUTPUT, metadata=option(
        "folder for the saved predictor, metrics.json, report and plots (default: models/distilbert-imdb)", "DIR"))
    val_split: float = field(default=0.0, metadata=option(
        "validate on a stratified FRACTION of train during training, so the test split is used only once, at the "
        "end (default: 0, validate on the test split, as the tutorial does)", "FRACTION"))
    truncation: str = field(default="head", metadata=option(
        "which part of a review longer than --maxlen tokens to keep (default: head)", choices=TRUNCATIONS))
    long_reviews: str = field(default="windows", metadata=option(
        "how the evaluation and the saved predictor score a review longer than --maxlen tokens: windows reads all "
        "of it, in windows of --maxlen that overlap (--window-overlap), and averages their logits; cut keeps the "
        "--truncation part, as ktrain does. The report compares head, tail, head+tail and windows either way; "
        "predict.py, the server and Spark use this choice unless told otherwise (default: windows)",
        choices=LONG_REVIEWS))
    window_overlap: Optional[int] = field(default=None, metadata=option(
        "word pieces that consecutive windows share (default: a quarter of --maxlen)", "N"))
    max_windows: int = field(default=MAX_WINDOWS, metadata=option(
        f"windows read per review at most; past that, that many windows spread over the review are read, and the "
        f"run says so (default: {MAX_WINDOWS})", "N"))
    train_windows: bool = field(default=False, metadata=option(
        "train on every window of a long training review (each with the review's label) instead of its "
        "--truncation part: more training steps; docs/performance.md measures whether it helps (default: off)"))
    padding: str = field(default="auto", metadata=option(
        "grouped: batches of reviews of similar length (Hugging Face's group_by_length), each padded only to its "
        "longest review, in training, validation and evaluation (training about 1.6x faster at maxlen 400 on a CPU); "
        "fixed: every review padded to --maxlen, as ktrain and the tutorial do; auto: grouped where that saves at "
        "least a tenth of the tokens (maxlen 400: yes; 128: no, most reviews reach the cut), else fixed "
        "(default: auto)", choices=PADDINGS))
    precision: str = field(default="auto", metadata=option(
        "arithmetic of training: bfloat16 and float16 are mixed precision (float32 weights). auto picks bfloat16 on "
        "a CPU with bfloat16 instructions (AVX-512 BF16, AMX), where it is about 1.5x faster, else float32. float16 "
        "(with loss scaling) is for GPUs with float16 tensor cores, such as Colab's T4, L4 and A100 (default: auto). "
        "The saved predictor is float32 either way", choices=PRECISIONS))
    strategy: str = field(default="default", metadata=option(
        "default: train on one device (a GPU if there is one); mirrored: a copy of the model on every GPU of this "
        "machine (tf.distribute.MirroredStrategy), each taking --batch-size reviews per step", choices=STRATEGIES))
    lr_find: bool = field(default=False, metadata=option(
        "run the learning-rate finder before training and save lr_find.png with the suggested rates"))
    lr_find_only: bool = field(default=False, metadata=option(
        "run the learning-rate finder, save lr_find.png and metrics.json to --output, and stop without training"))
    calibrate: bool = field(default=True, metadata=option(
        "after training, fit one temperature on held-out reviews (the --val-split reviews, else 5%% of train set "
        "aside before training; never the test split) and fold it into the classifier, so that the saved model's "
        "probabilities are calibrated on every path; --no-calibrate keeps them raw (default: on)"))
    top_losses: int = field(default=20, metadata=option(
        "write the N most confidently wrong test reviews to top_losses.csv (default: 20)", "N"))
    checkpoint_dir: Optional[Path] = field(default=None, metadata=option(
        "where to save the model after every epoch (default: OUTPUT/checkpoints)", "DIR"))
    resume: bool = field(default=False, metadata=option(
        "continue an interrupted run from its last finished epoch (same flags as that run)"))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # "2" or "runs/a" (the notebook, metrics.json) become 2 or Path("runs/a")
            value, kind = getattr(self, f.name), value_type(f)
            if value is not None and kind is not bool and isinstance(value, (str, Path)) and kind is not str:
                setattr(self, f.name, kind(value))
        self.checkpoint_dir = self.checkpoint_dir or self.output / "checkpoints"

    def problems(self) -> list:
        """What is wrong with these values, one sentence each, in the words of train.py's flags."""
        found = [f"--{name.replace('_', '-')} must be at least 1"
                 for name in ("epochs", "batch_size", "maxlen") if getattr(self, name) < 1]
        if not 0 < self.lr < 1:
            found.append("--lr must be between 0 and 1 (the tutorial uses 2e-5)")
        if self.sample is not None and self.sample < 2:
            found.append("--sample must be at least 2 (a review of each class)")
        if self.maxlen > 512:
            found.append("--maxlen must be at most 512, the longest input DistilBERT accepts")
        if not 0 <= self.val_split < 1:
            found.append("--val-split must be a fraction from 0 (off) to below 1, such as 0.1")
        if self.text_column == self.label_column:
            found.append("--text-column and --label-column must name two different columns")
        if self.top_losses < 0:
            found.append("--top-losses must be 0 or more")
        if self.window_overlap is not None and not 0 <= self.window_overlap < (self.maxlen - 2) // 2:
            found.append(f"--window-overlap must be from 0 to {(self.maxlen - 2) // 2 - 1} word pieces, less than "
                         f"half of a window of --maxlen {self.maxlen} minus [CLS] and [SEP]")
        if self.max_windows < 1:
            found.append("--max-windows must be at least 1")
        if self.lr_find_only and self.resume:
            found.append("--lr-find-only and --resume do not go together: the finder does not train")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                found.append(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}")
        return found

    @classmethod
    def parser(cls, description: Optional[str] = None) -> argparse.ArgumentParser:
        """train.py's flags, one per field: --batch-size for batch_size, a switch for a bool."""
        p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        for f in dataclasses.fields(cls):
            kwargs = {k: v for k, v in f.metadata.items() if v is not None}
            if value_type(f) is bool:  # a switch: --lr-find; one that is on by default: --calibrate/--no-calibrate
                kwargs.pop("metavar", None)
                action = argparse.BooleanOptionalAction if f.default else "store_true"
                p.add_argument("--" + f.name.replace("_", "-"), action=action, default=f.default, **kwargs)
            else:
                p.add_argument("--" + f.name.replace("_", "-"), type=value_type(f), default=f.default, **kwargs)
        return p

    @classmethod
    def names(cls) -> list:
        """The fields' names: train.py's flags with _ for -, and the notebook's parameters."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_flags(cls, argv: Optional[list] = None, description: Optional[str] = None) -> "RunConfig":
        """Parse train.py's command line; a bad value stops with argparse's usage line and the problem."""
        p = cls.parser(description)
        config = cls(**vars(p.parse_args(argv)))
        for problem in config.problems()[:1]:
            p.error(problem)
        return config

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "RunConfig":
        """The fields found in `values` (the notebook passes globals(): its parameters cell's variables)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    @classmethod
    def saved(cls, folder: Path) -> Optional["RunConfig"]:
        """The configuration of the run that saved `folder`, from its metrics.json; None if it has none."""
        try:
            args = saved_metrics(folder)["args"]
            return cls(**{k: v for k, v in args.items() if k in cls.names()})
        except (ValueError, KeyError, TypeError):
            return None

    def record(self) -> dict:
        """What metrics.json keeps under "args": every field, paths as strings (by json.dumps' default=str)."""
        return dict(vars(self))


def saved_metrics(folder: Path) -> Optional[dict]:
    """The metrics.json that training saved in `folder` (metrics, facts, "args", versions), or None."""
    try:
        return json.loads((Path(folder) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def mistakes(metrics: dict) -> int:
    """How many test reviews were predicted wrong (off the confusion matrix's diagonal)."""
    return sum(n for i, row in enumerate(metrics["confusion_matrix"]) for j, n in enumerate(row) if i != j)
