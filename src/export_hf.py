"""Export a saved predictor as a Hugging Face folder with its model card: `python src/export_hf.py --help`.

The code is in src/imdb_distilbert/export/hf_folder.py; this file only runs it.
"""

from imdb_distilbert.errors import run_cli
from imdb_distilbert.export import hf_folder

if __name__ == "__main__":
    run_cli(hf_folder.main)
