"""--min-confidence P: a review whose top probability is below P is labelled "uncertain", on every path (predict.py
with each backend, Spark in tests/test_spark.py, the server in tests/test_serve.py), and nothing else changes."""

import json

import numpy as np
import pytest
import synthetic
from conftest import assert_user_error, run_predict

from imdb_distilbert.inference import backends


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """Reviews the tiny model is sure about, and mixed ones (both polarities) it is not."""
    frame = synthetic.reviews(40, seed=21, mixed=True)
    path = tmp_path_factory.mktemp("uncertain") / "reviews.csv"
    frame.to_csv(path, index=False)
    return path


def threshold_between(tops):
    """A --min-confidence that splits `tops` (top probabilities, as printed: rounded to 6 decimals) near the
    middle, halfway between two printed values that differ by more than their rounding, so that the printed
    numbers say on which side each review falls (a saturated model prints many 1.0s)."""
    values = np.unique(np.round(tops, 6))
    gaps = [i for i in range(len(values) - 1) if values[i + 1] - values[i] > 2e-6]
    assert gaps, f"no two top probabilities apart: {values}"
    i = min(gaps, key=lambda g: abs(np.searchsorted(np.sort(tops), values[g], side="right") - len(tops) / 2))
    return float((values[i] + values[i + 1]) / 2)


def predictions(exported, reviews, backend, *flags):
    result = run_predict("--model", exported[0], "--backend", backend, "--file", reviews, "--json", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("backend", ["ktrain", "onnx-int8"])
def test_reviews_below_the_threshold_are_uncertain(exported, reviews, backend):
    plain = predictions(exported, reviews, backend)
    top = np.array([max(r["prob_neg"], r["prob_pos"]) for r in plain])
    threshold = threshold_between(top)
    marked = predictions(exported, reviews, backend, "--min-confidence", threshold)
    uncertain = [r["label"] == backends.UNCERTAIN for r in marked]
    assert uncertain == list(top < threshold) and 0 < sum(uncertain) < len(marked)
    for was, now in zip(plain, marked, strict=True):  # the probabilities and the sure labels are unchanged
        assert now["prob_pos"] == was["prob_pos"]
        assert now["label"] in (was["label"], backends.UNCERTAIN)


def test_the_count_is_said_and_bad_thresholds_refused(exported, reviews, tmp_path):
    result = run_predict("--model", exported[0], "--file", reviews, "--min-confidence", 0.99999,
                         "--out", tmp_path / "out.csv")
    assert result.returncode == 0 and ", uncertain " in result.stdout, result.stdout + result.stderr
    for bad in ("0", "1.5"):
        assert_user_error(run_predict("--model", exported[0], "great", "--min-confidence", bad),
                          "--min-confidence must be a probability above 0 and at most 1")


def test_labels_helper():
    proba = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    assert backends.labels(proba, ["neg", "pos"]) == ["neg", "neg", "pos"]
    assert backends.labels(proba, ["neg", "pos"], 0.8) == ["neg", "uncertain", "pos"]
