"""Score a large table of reviews on Apache Spark with the ONNX export: `python src/score_spark.py --help`.

The code is in src/imdb_distilbert/spark/score_spark.py; this file only runs it.
"""

from imdb_distilbert.errors import run_cli
from imdb_distilbert.spark import score_spark

if __name__ == "__main__":
    run_cli(score_spark.main)
