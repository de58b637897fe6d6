"""Calibrated probabilities: one temperature, fitted on held-out reviews, folded into the classifier.

A fine-tuned transformer is usually over-confident: of the reviews it calls "pos" with probability 0.97, fewer
than 97% are. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) divides the
logits by one number T, fitted to minimise the log loss on reviews the model did not train on. Dividing the
classifier layer's weights and bias by T does exactly that inside the model (learning.fold_temperature), so every
path that loads it (the ktrain predictor, ONNX, the Hugging Face folder, the server, Spark) gives the calibrated
probabilities with no code of ours. The label never changes: dividing by a positive T keeps the largest logit
the largest.

How well probabilities match accuracy is measured by the expected calibration error (ECE): the reviews are put
in BINS bins by their top probability, and the gaps between each bin's mean top probability and its accuracy
are averaged, weighted by the bin's share of the reviews. NumPy and SciPy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BINS = 15  # equal-width bins of the top probability, as Guo et al.
LIMITS = (0.05, 20.0)  # the temperatures searched; a perfectly separated held-out set pushes T to the lower end
# Held-out reviews needed to fit a temperature at all. Measured (docs/training.md): with 100 reviews set aside from
# 2,000, the temperature made the test split's ECE worse in 3 of 3 seeds; with 200, better in 3 of 3.
MIN_REVIEWS = 200
CALIBRATION_SHARE = 0.05  # of the training split, carved off before training when there is no validation split


def with_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the model gives with its logits divided by `temperature`: softmax(log(proba) / T).
    (log(proba) is the logits up to a constant per review, which softmax ignores.)"""
    scaled = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    e = np.exp(scaled)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(proba: np.ndarray, truth: Sequence[int]) -> float:
    """Mean negative log probability of the true class (`truth`: class positions)."""
    proba = np.asarray(proba, dtype=np.float64)
    return float(-np.log(np.clip(proba[np.arange(len(proba)), np.asarray(truth)], 1e-12, 1)).mean())


def fit_temperature(proba: np.ndarray, truth: Sequence[int]) -> float:
    """The temperature T (within LIMITS) that minimises the log loss of with_temperature(proba, T) on these reviews."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: log_loss(with_temperature(proba, np.exp(log_t)), truth),
                            bounds=np.log(LIMITS), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(proba: np.ndarray, truth: Sequence[int], bins: int = BINS) -> list[dict[str, float]]:
    """Per bin of the top probability (equal width, from 1/classes to 1): its range, reviews, mean top probability
    and accuracy; empty bins left out."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence, right = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(truth)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "reviews": int(inside.sum()),
                        "confidence": float(confidence[inside].mean()), "accuracy": float(right[inside].mean())})
    return out


def ece(proba: np.ndarray, truth: Sequence[int], bins: int = BINS) -> float:
    """The expected calibration error: the mean over bins of |accuracy - mean top probability|, weighted by reviews."""
    table, n = reliability(proba, truth, bins), len(proba)
    return float(sum(b["reviews"] / n * abs(b["accuracy"] - b["confidence"]) for b in table))


def coverage(proba: np.ndarray, truth: Sequence[int], shares: Sequence[float] = (1.0, 0.95, 0.9, 0.8, 0.7)
             ) -> list[dict[str, float]]:
    """Accuracy against coverage: for each share of the reviews, the most confident ones, the top-probability
    threshold that keeps them (predict.py --min-confidence) and their accuracy. Ties at the threshold are kept, so
    a row's real coverage may be a little above its share."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence, right = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(truth)
    ordered = np.sort(confidence)[::-1]
    rows = []
    for share in shares:
        threshold = math.floor(float(ordered[max(math.ceil(share * len(ordered)) - 1, 0)]) * 1e4) / 1e4  # as shown
        kept = confidence >= threshold
        rows.append({"share": share, "min_confidence": threshold, "coverage": float(kept.mean()),
                     "accuracy": float(right[kept].mean())})
    return rows
