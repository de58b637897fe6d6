"""Calibrated probabilities (training/calibration.py): the temperature is found, folded into the classifier, and
reported; accuracy against coverage. Real-text ECE before/after, with the pretrained stand-in: docs/performance.md."""

import json

import numpy as np
import pytest
import synthetic
from conftest import TINY, at_most, run_train

from imdb_distilbert.training import calibration


def overconfident(n=4000, temperature=3.0, seed=0):
    """Probabilities that are softmax(T * logits) for labels drawn from softmax(logits): over-confident by T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, 2))
    truth = (rng.random(n) < calibration.with_temperature(np.exp(logits), 1.0)[:, 1]).astype(int)
    return calibration.with_temperature(np.exp(logits), 1 / temperature), truth


def test_the_temperature_of_an_overconfident_model_is_found():
    proba, truth = overconfident(temperature=3.0)
    t = calibration.fit_temperature(proba, truth)
    assert 2.7 < t < 3.3, t
    fixed = calibration.with_temperature(proba, t)
    assert (fixed.argmax(1) == proba.argmax(1)).all()  # the labels do not change
    assert calibration.ece(fixed, truth) < calibration.ece(proba, truth) / 3
    assert calibration.log_loss(fixed, truth) < calibration.log_loss(proba, truth)


def test_ece_by_hand():
    """Two bins used: 0.95 for four reviews of which three are right (gap 0.2), 0.6 for one that is right (0.4)."""
    proba = np.array([[0.05, 0.95]] * 4 + [[0.6, 0.4]])
    truth = [1, 1, 1, 0, 0]
    assert calibration.ece(proba, truth) == pytest.approx(4 / 5 * 0.2 + 1 / 5 * 0.4)
    assert [b["reviews"] for b in calibration.reliability(proba, truth)] == [1, 4]


def test_coverage_keeps_the_most_confident():
    proba = np.array([[0.01, 0.99], [0.1, 0.9], [0.3, 0.7], [0.45, 0.55]] * 25)
    truth = [1, 1, 0, 0] * 25  # the two least confident are wrong
    rows = {r["share"]: r for r in calibration.coverage(proba, truth, (1.0, 0.5))}
    assert rows[1.0]["accuracy"] == 0.5 and rows[1.0]["coverage"] == 1.0
    assert rows[0.5] == {"share": 0.5, "min_confidence": 0.9, "coverage": 0.5, "accuracy": 1.0}


def test_folding_the_temperature_into_a_miscalibrated_model(tmp_path):
    """A deliberately miscalibrated model (its classifier scaled up 30x: near-certain, right half the time) is fitted
    a large temperature, and folding it into the weights gives exactly softmax(log p / T) from the model itself."""
    from imdb_distilbert.training import learning

    frame = synthetic.reviews(200, seed=3)
    train, val, preproc = learning.preprocess(frame, frame, maxlen=16)
    learner = learning.build_learner(train, val, preproc, batch_size=16, precision="float32")
    model = learner.model
    learning.fold_temperature(model, 1 / 30)
    texts, truth = list(frame["Reviews"]), list((frame["Sentiment"] == "pos").astype(int))
    before = learning.predict_proba(model, preproc, texts)
    t = calibration.fit_temperature(before, truth)
    learning.fold_temperature(model, t)
    after = learning.predict_proba(model, preproc, texts)
    assert np.abs(after - calibration.with_temperature(before, t)).max() < 1e-5
    assert (after.argmax(1) == before.argmax(1)).all()
    assert t > 5 and calibration.ece(after, truth) < calibration.ece(before, truth) / 2, t


@pytest.fixture(scope="module")
def calibrated_run(synthetic_splits, tmp_path_factory):
    """train.py with --val-split 0.5: 200 held-out reviews to fit the temperature on (calibration.MIN_REVIEWS)."""
    output = tmp_path_factory.mktemp("calibrated") / "predictor"
    result = run_train("--data-dir", synthetic_splits, "--output", output, "--val-split", 0.5, *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result


def test_a_run_reports_calibration_and_coverage(calibrated_run):
    output, result = calibrated_run
    metrics = json.loads((output / "metrics.json").read_text())
    found = metrics["calibration"]
    assert found["temperature"] != 1.0 and metrics["args"]["calibrate"] is True
    assert metrics["calibrated_on"] == {"reviews": "the validation split", "n": 200}
    assert metrics["n_train"] == 200 and found["bins"] == 15
    at_most("calibration: test ECE after the temperature, tiny model on synthetic text", found["ece_after"], 0.1)
    assert [r["share"] for r in metrics["coverage"]] == [1.0, 0.95, 0.9, 0.8, 0.7]
    report = (output / "report.txt").read_text()
    assert "ECE (15 bins)" in report and "accuracy against coverage" in report
    assert (output / "reliability.png").read_bytes().startswith(b"\x89PNG")
    assert "folded into the classifier" in result.stdout


def test_the_saved_predictor_gives_the_calibrated_probabilities(calibrated_run, synthetic_splits):
    """The test split's probabilities from the saved predictor, loaded as a user does, are the calibrated ones
    the report scored: their log loss is the report's "after"."""
    import ktrain
    import pandas as pd

    output, _ = calibrated_run
    metrics = json.loads((output / "metrics.json").read_text())
    test = pd.read_excel(synthetic_splits / "test.xlsx")
    proba = ktrain.load_predictor(str(output)).predict(list(test["Reviews"]), return_proba=True)
    truth = list((test["Sentiment"] == "pos").astype(int))
    assert calibration.log_loss(proba, truth) == pytest.approx(metrics["calibration"]["log_loss_after"], abs=1e-4)


def test_too_few_held_out_reviews_or_no_calibrate(trained):
    """The shared tiny run has 400 training reviews: 5% is 20, too few to fit a temperature on (200 are needed);
    it says so, trains on all 400, and saves the raw probabilities."""
    output, result = trained
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == 1.0 and "not calibrating" in result.stdout
    assert metrics["n_train"] == 400


def test_the_onnx_export_gives_the_calibrated_probabilities(calibrated_run, synthetic_splits, tmp_path):
    """The temperature is in the weights, so the ONNX export (no code of ours at load) gives the calibrated
    probabilities too: its fp32 model's log loss on the test split is the report's "after"."""
    import shutil

    import pandas as pd
    from test_export import run_export

    from imdb_distilbert.inference import backends

    folder = tmp_path / "predictor"
    shutil.copytree(calibrated_run[0], folder)
    result = run_export("--model", folder, "--reviews", synthetic_splits / "test.xlsx")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    test = pd.read_excel(synthetic_splits / "test.xlsx")
    proba = backends.load(folder, "onnx").predict_proba(list(test["Reviews"]))
    truth = list((test["Sentiment"] == "pos").astype(int))
    assert calibration.log_loss(proba, truth) == pytest.approx(metrics["calibration"]["log_loss_after"], abs=1e-4)
