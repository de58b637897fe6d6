"""--precision float16, the opt-in for GPUs with float16 tensor cores, checked for correctness on the CPU:
it trains with loss scaling, learns, and saves a float32 predictor that its ONNX export matches."""


import h5py
import numpy as np
import pytest
import synthetic
from conftest import ROOT, TINY, assert_scored_as_its_predictor, at_least, run_train

from imdb_distilbert.inference import backends


@pytest.fixture(scope="module")
def float16_run(synthetic_splits, tmp_path_factory):
    output = tmp_path_factory.mktemp("float16") / "predictor"
    result = run_train("--data-dir", synthetic_splits, "--output", output, *TINY, "--precision", "float16")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def test_float16_uses_loss_scaling(synthetic_splits):
    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import learning

    train_df, test_df = dataset.load_splits(synthetic_splits / "train.xlsx", synthetic_splits / "test.xlsx", 64, 1)
    train, val, preproc = learning.preprocess(train_df, test_df, 32)
    try:
        learner = learning.build_learner(train, val, preproc, 16, "float16")
        assert learning.precision_of(learner) == "float16"
        assert type(learner.model.optimizer).__name__ == "LossScaleOptimizer"
        assert learner.model.classifier.compute_dtype == "float32"  # float32 logits, so a float32 loss
        learning.to_float32(learner)
        assert learner.model.compute_dtype == "float32"
        assert type(learner.model.optimizer).__name__ != "LossScaleOptimizer"
    finally:
        import tensorflow as tf

        tf.keras.mixed_precision.set_global_policy("float32")


def test_float16_learns_and_saves_float32(float16_run, synthetic_splits):
    # evaluated in grouped batches
    metrics = assert_scored_as_its_predictor(float16_run, synthetic_splits / "test.xlsx")
    assert metrics["training_precision"] == "float16" and metrics["padding"]["padding"] == "grouped"
    at_least("precision: float16 test accuracy", metrics["accuracy"], 0.9)
    with h5py.File(float16_run / "tf_model.h5") as saved:
        dtypes = set()
        saved.visititems(lambda name, item: dtypes.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {"float32"}


def test_float16_predictor_matches_its_onnx_export(float16_run):
    # fp32 parity is the point here; this tiny model's answers on the sample's real (out-of-domain) reviews
    # sit near 0.5, where int8 may change a label or two, which export.py would refuse at its default bar.
    result = run_train("--model", float16_run, "--min-agreement", "0", script=ROOT / "src" / "export.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    texts = list(synthetic.reviews(60, seed=31)["Reviews"])
    expected = backends.load(float16_run, "ktrain").predict_proba(texts)
    proba = backends.load(float16_run, "onnx").predict_proba(texts)
    assert np.abs(proba - expected).max() <= 1e-4
