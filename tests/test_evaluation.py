"""The metrics themselves, on cases small enough to check by hand."""

import pytest

import evaluation


def test_score_by_hand():
    truth = ["pos", "pos", "pos", "neg"]
    proba = [[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1]]  # predicts pos, pos, neg, neg
    result = evaluation.score(truth, proba, ["neg", "pos"])
    assert result["accuracy"] == 0.75
    # pos: precision 1, recall 2/3 -> F1 0.8; neg: precision 1/2, recall 1 -> F1 2/3
    assert result["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_package_versions_name_the_stack():
    versions = evaluation.package_versions()
    assert {"python", "ktrain", "tensorflow", "tf_keras", "transformers", "pandas", "numpy"} <= set(versions)
