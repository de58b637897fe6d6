"""What the command-line tools share: the --model option, the predictor folder they work on, its text column."""

import argparse
from pathlib import Path

from imdb_distilbert import ROOT
from imdb_distilbert.config import LONG_REVIEWS, RunConfig

DEFAULT_MODEL = ROOT / "models" / "distilbert-imdb"  # where src/train.py saves the predictor by default
SAVED_BY_TRAIN = "the predictor folder src/train.py saved"


def add_model_option(parser: argparse.ArgumentParser, what: str = SAVED_BY_TRAIN) -> None:
    """Add --model DIR (default: models/distilbert-imdb) to `parser`; `what` opens its help."""
    parser.add_argument("--model", type=Path, metavar="DIR", default=DEFAULT_MODEL,
                        help=f"{what} (default: models/distilbert-imdb)")


def text_columns(model: Path, given: str | None = None) -> list[str]:
    """The column to read reviews from in a spreadsheet for the predictor in `model`: `given` (--column) if the
    user named one; else the text column it was trained on (train.py --text-column, from its metrics.json), or
    IMDB's Reviews, whichever the file has, in that order."""
    if given:
        return [given]
    saved = RunConfig.saved(model)
    return list(dict.fromkeys([saved.text_column if saved else "Reviews", "Reviews"]))


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """--long-reviews, --window-overlap and --max-windows: how a review longer than the model's maxlen is read
    (data/windows.py). Each defaults to what the training run chose (its metrics.json)."""
    parser.add_argument("--long-reviews", choices=LONG_REVIEWS, help="a review longer than the model's maxlen: "
                        "windows reads all of it (overlapping windows, their logits averaged), cut keeps the part "
                        "training kept (train.py --truncation) (default: what the training run chose)")
    parser.add_argument("--window-overlap", type=int, metavar="N",
                        help="word pieces consecutive windows share (default: the run's, else a quarter of maxlen)")
    parser.add_argument("--max-windows", type=int, metavar="N", help="windows read per review at most; past that, "
                        "that many spread over it, said on standard error (default: the run's, else 16)")


def reading_of(args: argparse.Namespace) -> dict:
    """The reading options given on the command line, for backends.load()."""
    return {"long_reviews": args.long_reviews, "overlap": args.window_overlap, "max_windows": args.max_windows}
