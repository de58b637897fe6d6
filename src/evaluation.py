"""Score a trained model on the test split."""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def score(y_true, proba, class_names):
    """Accuracy and macro F1 from true labels (class names) and predicted probabilities (n, k)."""
    proba = np.asarray(proba)
    y_pred = np.asarray(class_names)[proba.argmax(axis=1)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average="macro")),  # mean of the per-class F1s
    }


def predict_proba(learner, preproc, texts):
    """Class probabilities for `texts` from the model being trained, as the saved predictor gives them."""
    import ktrain

    return ktrain.get_predictor(learner.model, preproc).predict(list(texts), return_proba=True, verbose=1)
