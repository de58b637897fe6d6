"""Classify reviews with a saved predictor (ktrain, or its ONNX export): `python src/predict.py --help`.

The code is in src/imdb_distilbert/inference/predict.py; this file only runs it.
"""

from imdb_distilbert.errors import run_cli
from imdb_distilbert.inference import predict

if __name__ == "__main__":
    run_cli(predict.main)
