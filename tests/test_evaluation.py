"""The metrics themselves, on cases small enough to check by hand."""

import numpy as np
import pandas as pd
import pytest

from imdb_distilbert.training import evaluation


def test_score_by_hand():
    truth = ["pos", "pos", "pos", "neg"]
    proba = [[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1]]  # predicts pos, pos, neg, neg
    result = evaluation.score(truth, proba, ["neg", "pos"])
    assert result["accuracy"] == 0.75
    # pos: precision 1, recall 2/3 -> F1 0.8; neg: precision 1/2, recall 1 -> F1 2/3
    assert result["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert result["per_class"]["pos"] == pytest.approx({"precision": 1, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert result["precision"] == pytest.approx(0.75) and result["recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["confusion_matrix"] == [[1, 0], [1, 2]]
    assert result["roc_auc"] == pytest.approx(1.0)  # every pos scores above the neg
    assert result["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.3, 0.9])))
    text = evaluation.report_text(result)
    assert "accuracy 0.7500" in text and "ROC-AUC 1.0000" in text


def test_top_losses_by_hand():
    test = pd.DataFrame({"Reviews": ["a", "b", "c", "d"], "Sentiment": ["pos", "neg", "pos", "neg"]})
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])  # a and b are wrong, a worse
    worst = evaluation.top_losses(test, proba, ["neg", "pos"], 5)
    assert list(worst["review"]) == ["a", "b"] and list(worst["predicted_label"]) == ["neg", "pos"]
    assert list(worst["probability"]) == pytest.approx([0.9, 0.6])
    assert list(worst["loss"]) == pytest.approx([-np.log(0.1), -np.log(0.4)])
    assert len(evaluation.top_losses(test, proba, ["neg", "pos"], 1)) == 1


def test_package_versions_name_the_stack():
    versions = evaluation.package_versions()
    assert {"python", "ktrain", "tensorflow", "tf_keras", "transformers", "pandas", "numpy"} <= set(versions)
