"""A predictor that checks itself (inference/selfcheck.py): the answers saved with it, predict.py --check, the
server's check at start-up, and folders whose stored answers no longer match or that have none."""

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, TINY, assert_user_error, run_predict, run_train
from test_serve import Server

from imdb_distilbert.inference import backends, selfcheck

MAXLEN = dict(zip(TINY[::2], TINY[1::2], strict=True))["--maxlen"]


def copy(folder, tmp_path):
    target = tmp_path / "predictor"
    shutil.copytree(folder, target)
    return target


def edit(folder, change):
    """Change the folder's self_check.json with `change(stored)`, as if it had been saved in another environment."""
    path = folder / selfcheck.SELF_CHECK
    stored = json.loads(path.read_text())
    change(stored)
    path.write_text(json.dumps(stored))


def elsewhere(stored):
    """Answers and versions of another environment: each probability moved by 0.01, transformers 4.99.0, and for the
    ONNX models onnxruntime 1.0.0."""
    stored["proba"] = [[p + 0.01 * (-1) ** i for i, p in enumerate(row)] for row in stored["proba"]]
    stored["versions"]["transformers"] = "4.99.0"
    if "onnx" in stored:
        stored["onnx"]["proba"]["onnx-int8"] = [[p + 0.01 * (-1) ** i for i, p in enumerate(row)]
                                                for row in stored["onnx"]["proba"]["onnx-int8"]]
        stored["onnx"]["versions"]["onnxruntime"] = "1.0.0"


def test_pick_reviews_takes_one_longer_than_maxlen():
    texts = [f"review {i} with a few words" for i in range(20)]
    picked = selfcheck.pick_reviews(texts, maxlen=32, seed=1)
    assert len(picked) == selfcheck.N_REVIEWS and len(set(picked)) == selfcheck.N_REVIEWS
    assert len(picked[-1].split()) > 32 and all(p in texts for p in picked[:-1])
    assert picked == selfcheck.pick_reviews(texts, maxlen=32, seed=1)  # seeded


def test_saving_stores_reviews_answers_and_versions(trained):
    stored = json.loads((trained[0] / selfcheck.SELF_CHECK).read_text())
    assert len(stored["reviews"]) == selfcheck.N_REVIEWS and stored["classes"] == ["neg", "pos"]
    assert max(len(r.split()) for r in stored["reviews"]) > MAXLEN  # the run's cut of long reviews is checked
    proba = np.array(stored["proba"])
    assert proba.shape == (selfcheck.N_REVIEWS, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(stored["versions"]) == {"python", *selfcheck.KTRAIN_PACKAGES}
    assert "self_check" in json.loads((trained[0] / "metrics.json").read_text())["seconds"]


def test_the_export_adds_the_onnx_models_answers(exported):
    stored = json.loads((exported[0] / selfcheck.SELF_CHECK).read_text())
    assert set(stored["onnx"]["proba"]) == {"onnx", "onnx-int8"}
    assert set(stored["onnx"]["versions"]) == {"python", *selfcheck.ONNX_PACKAGES}
    assert "self-check reviews: largest difference" in exported[1].stdout


@pytest.mark.parametrize("backend", ["ktrain", "onnx", "onnx-int8"])
def test_the_saved_predictor_reproduces_here(trained, exported, backend):
    folder = trained[0] if backend == "ktrain" else exported[0]
    result = run_predict("--model", folder, "--backend", backend, "--check")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    line, = result.stdout.splitlines()
    tolerance = selfcheck.INT8_TOLERANCE if backend == "onnx-int8" else selfcheck.TOLERANCE
    assert line.startswith(f"self-check: reproduced: the {backend} backend gives the stored answers for 8 reviews")
    assert f"tolerance {tolerance:.0e})" in line


@pytest.mark.parametrize("backend, package", [("ktrain", "transformers 4.99.0 -> "),
                                              ("onnx-int8", "onnxruntime 1.0.0 -> ")])
def test_answers_that_no_longer_match_are_a_diagnosis(exported, tmp_path, backend, package):
    folder = copy(exported[0], tmp_path)
    edit(folder, elsewhere)
    result = run_predict("--model", folder, "--backend", backend, "--check")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line, = result.stdout.splitlines()
    assert line.startswith(f"self-check: NOT reproduced: the {backend} backend's probabilities for the 8 stored "
                           "reviews differ from the stored ones by up to 1.0")
    assert "packages that differ from the ones the answers were stored with: " + package in line


def test_same_versions_other_answers_blame_the_files(exported, tmp_path):
    folder = copy(exported[0], tmp_path)
    edit(folder, lambda stored: stored.update(proba=[row[::-1] for row in stored["proba"]]))
    result = selfcheck.check(folder, "onnx")
    assert result.reproduced is False and "suspect the folder's files" in result.line, result.line


def test_the_server_refuses_a_model_that_does_not_reproduce(exported, tmp_path):
    folder = copy(exported[0], tmp_path)
    edit(folder, elsewhere)
    result = run_train("--model", folder, "--port", 0, script=ROOT / "src" / "serve.py", timeout=120)
    assert "self-check: NOT reproduced: the onnx-int8 backend's" in result.stdout
    assert_user_error(result, "does not give its stored answers in this environment", "--skip-check")
    served = Server("--model", folder, "--skip-check")  # serves anyway, and still says so
    try:
        assert any(line.startswith("self-check: NOT reproduced") for line in served.lines)
        assert served.predict(["a great film"])[0] == 200
    finally:
        served.stop()


def test_a_folder_saved_before_self_checks(exported, tmp_path, capsys):
    folder = copy(exported[0], tmp_path)
    (folder / selfcheck.SELF_CHECK).unlink()
    result = run_predict("--model", folder, "--backend", "onnx", "--check")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.splitlines() == [f"self-check: {folder} has no self_check.json (saved before predictors "
                                          "checked themselves), so nothing says whether this environment reproduces "
                                          "it; train it again to get one."]
    assert run_predict("--model", folder, "--backend", "onnx", "a great film").returncode == 0  # it still predicts
    served = Server("--model", folder)  # and serves
    try:
        assert any("has no self_check.json" in line for line in served.lines)
        assert served.predict(["a great film"])[0] == 200
    finally:
        served.stop()


def test_an_export_before_self_checks_has_no_int8_answers(exported, tmp_path):
    folder = copy(exported[0], tmp_path)
    edit(folder, lambda stored: stored.pop("onnx"))
    result = selfcheck.check(folder, "onnx-int8")
    assert result.reproduced is None and "run src/export.py again" in result.line
    assert selfcheck.check(folder, "onnx").reproduced  # fp32 is compared with the saved model's answers


def test_export_refuses_where_fp32_does_not_give_the_stored_answers(trained, tmp_path):
    folder = copy(trained[0], tmp_path)
    edit(folder, elsewhere)
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a great film\nan awful film\n")
    result = run_train("--model", folder, "--reviews", reviews, "--min-agreement", 0, script=ROOT / "src" / "export.py")
    assert_user_error(result, "does not reproduce the saved model", "transformers 4.99.0 -> ")
    assert not backends.has_onnx_export(folder, "onnx")
