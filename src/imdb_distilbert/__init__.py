"""Fine-tune DistilBERT for movie-review sentiment with ktrain, and use the saved predictor.

Importing this package sets up Keras 2 for ktrain and the Hugging Face TensorFlow models (compat.py), so
it must come before TensorFlow; after it, `ktrain.load_predictor(folder)` needs nothing else.

The folders are the tiers, each using only those above it in this list:

    compat, errors, network   version workarounds, user errors, the Hub check: what every tier uses
    data/                     the review files and splits, labels, cutting reviews to maxlen, length batches
    training/                 the recipe (train.py's steps), the ktrain learner, evaluation and its plots
    inference/                scoring a saved predictor (ktrain or ONNX backends), explanations, predict.py
    export/                   ONNX (fp32 and int8) and the Hugging Face folder
    serving/                  the web server and its page, in a terminal or inside a notebook
    spark/                    batch scoring on Apache Spark
    colab/                    setting up a Google Colab runtime and keeping runs on Drive

The command-line scripts in src/ (train.py, predict.py, export.py, export_hf.py, serve.py, score_spark.py)
only call the `main` of the module that does the work.
"""

from pathlib import Path

from imdb_distilbert import compat  # noqa: F401  (first: Keras 2 before TensorFlow loads)

ROOT = Path(__file__).resolve().parents[2]  # the project checkout: data/, models/ and requirements*.txt live here
