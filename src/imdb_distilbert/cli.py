"""What the command-line tools share: the --model option, the predictor folder they work on, its text column."""

import argparse
from pathlib import Path

from imdb_distilbert import ROOT
from imdb_distilbert.config import RunConfig

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
