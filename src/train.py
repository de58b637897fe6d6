"""Fine-tune DistilBERT on the IMDB reviews and save a ktrain predictor: `python src/train.py --help`.

The code is in src/imdb_distilbert/training/recipe.py; this file only runs it.
"""

from imdb_distilbert import compat
from imdb_distilbert.errors import run_cli
from imdb_distilbert.training import recipe

if __name__ == "__main__":
    compat.use_fast_malloc()  # re-runs this command with tcmalloc preloaded when installed (IMDB_FAST_MALLOC=0: off)
    run_cli(recipe.main)
