"""Score a trained model on the test split."""

import platform
from importlib import metadata

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from dataset import LABEL, TEXT


def evaluate(learner, preproc, test_df):
    """Predict the test split with the trained model, as the saved predictor will, and score it."""
    import ktrain

    print(f"evaluating on the {len(test_df)} test reviews...")
    predictor = ktrain.get_predictor(learner.model, preproc)
    proba = predictor.predict(list(test_df[TEXT]), return_proba=True, verbose=1)
    return {**score(test_df[LABEL], proba, preproc.get_classes()), "n_test": len(test_df),
            "classes": preproc.get_classes()}


def score(y_true, proba, class_names):
    """Accuracy and macro F1 from true labels (class names) and predicted probabilities (n, k)."""
    y_pred = np.asarray(class_names)[np.asarray(proba).argmax(axis=1)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average="macro")),  # mean of the per-class F1s
    }


def package_versions():
    """The versions that produced a run, for metrics.json."""
    names = ["ktrain", "tensorflow", "tf_keras", "transformers", "pandas", "numpy", "scikit-learn"]
    return {"python": platform.python_version(), **{name: metadata.version(name) for name in names}}
