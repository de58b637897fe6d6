"""Serve a saved predictor over HTTP: a JSON API and a page: `python src/serve.py --help`.

The code is in src/imdb_distilbert/serving/serve.py; this file only runs it.
"""

from imdb_distilbert.errors import run_cli
from imdb_distilbert.serving import serve

if __name__ == "__main__":
    run_cli(serve.main)
