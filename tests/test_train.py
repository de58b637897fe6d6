"""End to end: src/train.py as a user runs it, on a tiny offline DistilBERT, then the saved predictor."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import synthetic
import tiny_distilbert
from conftest import ROOT, at_least, run_train

from imdb_distilbert.data import dataset

# `trained` (src/train.py run once on the synthetic splits) is a session fixture in conftest.py,
# shared with the prediction and export tests.


@pytest.fixture(scope="module")
def predictor(trained):
    import ktrain

    return ktrain.load_predictor(str(trained[0]))


def test_output_folder_holds_a_predictor_and_metrics(trained):
    output, result = trained
    names = {p.name for p in output.iterdir()}
    assert {"tf_model.h5", "tf_model.preproc", "config.json", "vocab.txt", "metrics.json"} <= names
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert "saved the predictor" in result.stdout
    assert "padding: grouped (--padding auto: length grouping saves a tenth" in result.stdout  # maxlen 32: about 0.75


def test_metrics_json(trained, synthetic_splits):
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    assert metrics["n_train"] == 400 and metrics["n_test"] == 200
    assert 0 <= metrics["f1"] <= 1 and 0 <= metrics["accuracy"] <= 1
    assert metrics["classes"] == ["neg", "pos"]
    assert metrics["args"]["epochs"] == 3 and metrics["args"]["lr"] == 2e-3 and metrics["args"]["sample"] is None
    assert metrics["versions"]["ktrain"] == "0.41.4" and metrics["versions"]["transformers"] == "4.54.1"
    assert metrics["base_model"]["revision"] == tiny_distilbert.COMMIT  # the tests' tiny model, not the pinned one
    assert metrics["data"]["train"] == {"content_sha256": dataset.fingerprint(dataset.read_split(
        synthetic_splits / "train.xlsx")), "imdb": False}


def test_loaded_predictor_gives_classes_and_probabilities(predictor):
    assert predictor.get_classes() == ["neg", "pos"]
    texts = ["the movie was wonderful and the cast was superb", "a boring film with awful acting", "it"]
    proba = predictor.predict(texts, return_proba=True)
    assert proba.shape == (3, 2)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    fresh = synthetic.reviews(100, seed=98)
    right = predictor.predict(list(fresh["Reviews"]), return_proba=True)[
        np.arange(100), (fresh["Sentiment"] == "pos").to_numpy().astype(int)]
    at_least("train: mean probability of the right class, 100 fresh reviews", right.mean(), 0.8)
    assert predictor.predict(texts[:2]) == list(np.array(["neg", "pos"])[proba[:2].argmax(1)])


def test_training_learns(trained, predictor, synthetic_splits):
    """Held-out reviews: the test split train.py scored, and fresh ones it never saw."""
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    at_least("train: test accuracy (metrics.json)", metrics["accuracy"], 0.9)
    test = pd.read_excel(synthetic_splits / "test.xlsx", dtype=str)
    predicted = predictor.predict(list(test["Reviews"]))
    assert np.mean(np.array(predicted) == test["Sentiment"].to_numpy()) == pytest.approx(metrics["accuracy"])
    fresh = synthetic.reviews(200, seed=99)
    predicted = predictor.predict(list(fresh["Reviews"]))
    at_least("train: accuracy on 200 fresh reviews", np.mean(np.array(predicted) == fresh["Sentiment"].to_numpy()), 0.9)


def test_sample_is_stratified_and_replaces_an_earlier_predictor(trained, synthetic_splits):
    output = trained[0].parent / "sampled"
    for n in (40, 60):  # the second run replaces the first run's predictor
        result = run_train("--data-dir", synthetic_splits, "--output", output,
                           "--sample", n, "--epochs", 1, "--maxlen", 16 if n == 60 else 24, "--batch-size", 16)
        assert result.returncode == 0, result.stderr[-3000:]
        (output / f"left-by-run-{n}").write_text("")  # a file of the folder's own, as a user might add
    metrics = json.loads((output / "metrics.json").read_text())
    # The whole folder is the second run's: its settings, its predictor, nothing of the first left in it.
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("left-by")) == ["left-by-run-60"]
    import ktrain

    assert ktrain.load_predictor(str(output)).preproc.maxlen == 16  # the first run's was 24
    assert metrics["n_train"] == 60 and metrics["n_test"] == 60 and metrics["args"]["sample"] == 60
    assert "train: 60 reviews, test: 60 reviews (neg 30, pos 30 in train)" in result.stdout
    # At maxlen 16 nearly every synthetic review reaches the cut: --padding auto keeps ktrain's fixed batches.
    assert "padding: fixed (--padding auto" in result.stdout and metrics["padding"]["padding"] == "fixed"


def test_predictor_folder_is_self_contained(trained, predictor, tmp_path):
    """Copied to a machine with an empty Hugging Face cache and no network, it still predicts."""
    copy = tmp_path / "copied-predictor"
    shutil.copytree(trained[0], copy)
    # As README.md shows it: the package's load_predictor, with no other set-up line (no HF_HUB_OFFLINE either).
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); from imdb_distilbert import load_predictor\n"
            f"p = load_predictor({str(copy)!r})\n"
            "print(p.predict(['a wonderful film, superb acting', 'an awful boring mess'], return_proba=True).tolist())")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TF_USE_LEGACY_KERAS")}
    env.update(HF_HOME=str(tmp_path / "empty-cache"), HF_ENDPOINT="http://127.0.0.1:9")  # no Hub: port 9 refuses
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    copied = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    original = predictor.predict(['a wonderful film, superb acting', 'an awful boring mess'], return_proba=True)
    assert np.abs(copied - original).max() <= 1e-6  # the same model, loaded from the copy alone
