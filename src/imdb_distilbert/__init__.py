"""Fine-tune DistilBERT for movie-review sentiment with ktrain, and use the saved predictor.

Importing this package sets up Keras 2 for ktrain and the Hugging Face TensorFlow models (compat.py), so
it must come before TensorFlow; after it, `ktrain.load_predictor(folder)` needs nothing else
(`load_predictor` below is that call).

The folders are the tiers, each using only those above it in this list (tests/test_layout.py checks it):

    compat, errors, network   version workarounds, user errors, the Hub check: what every tier uses
    config                    the run's settings: train.py's flags, the notebook's parameters, metrics.json's args
    files, packages, cli      outputs written all or nothing, installed packages and versions, the --model option
    data/                     the review files and splits, labels, cutting reviews to maxlen, length batches
    inference/                scoring a saved predictor (ktrain or ONNX backends), explanations, predict.py
    training/                 the recipe (train.py's steps), the ktrain learner, evaluation and its plots
    export/                   ONNX (fp32 and int8) and the Hugging Face folder
    serving/                  the web server and its page, in a terminal or inside a notebook
    spark/                    batch scoring on Apache Spark
    colab/                    setting up a Google Colab runtime and keeping runs on Drive

The command-line scripts in src/ (train.py, predict.py, export.py, export_hf.py, serve.py, score_spark.py)
only call the `main` of the module that does the work.
"""

from pathlib import Path
from typing import Any

from imdb_distilbert import compat  # noqa: F401  (first: Keras 2 before TensorFlow loads)

ROOT = Path(__file__).resolve().parents[2]  # the project checkout: data/, models/ and requirements*.txt live here


def load_predictor(folder: "str | Path", batch_size: int = 32) -> Any:  # a ktrain Predictor (ktrain loads lazily)
    """`ktrain.load_predictor(folder)`, with Keras 2 already set up for it and no Hub check (the folder holds its
    tokenizer and config). Its predict() keeps the head of a review longer than maxlen; to read long reviews as
    the training run chose (windows, or its --truncation), as predict.py does, use
    `imdb_distilbert.inference.backends.predict_like_saved_run(predictor, texts, folder)`."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ktrain

    return ktrain.load_predictor(str(folder), batch_size=batch_size)
