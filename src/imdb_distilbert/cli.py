"""What the command-line tools share: the --model option, the predictor folder they work on."""

import argparse
from pathlib import Path

from imdb_distilbert import ROOT

DEFAULT_MODEL = ROOT / "models" / "distilbert-imdb"  # where src/train.py saves the predictor by default
SAVED_BY_TRAIN = "the predictor folder src/train.py saved"


def add_model_option(parser: argparse.ArgumentParser, what: str = SAVED_BY_TRAIN) -> None:
    """Add --model DIR (default: models/distilbert-imdb) to `parser`; `what` opens its help."""
    parser.add_argument("--model", type=Path, metavar="DIR", default=DEFAULT_MODEL,
                        help=f"{what} (default: models/distilbert-imdb)")
