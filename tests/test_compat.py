"""Regression tests for the incompatibilities of today's packages that imdb_distilbert/compat.py works around."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import synthetic
import tiny_distilbert
from conftest import HF_HOME, ROOT, run_train
from safetensors.numpy import load_file

from imdb_distilbert import compat
from imdb_distilbert.data import dataset
from imdb_distilbert.training import learning


def test_keras2_is_selected():
    import tensorflow as tf

    assert tf.keras.Model.__module__.startswith("tf_keras")


def test_keras3_loaded_first_is_reported_in_one_sentence():
    code = ("import tensorflow as tf; tf.keras.Model\n"
            f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "from imdb_distilbert.training import learning")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # a fresh Python, as a user has
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "RuntimeError: TensorFlow is using Keras 3, but ktrain needs Keras 2" in result.stderr


def test_ktrain_np_inf_under_numpy2():
    from ktrain.lroptimize.triangular import CyclicLR

    from imdb_distilbert.training import learning  # noqa: F401  (importing the training tier sets the alias)

    assert int(np.__version__.split(".")[0]) >= 2
    assert CyclicLR(base_lr=1e-5, max_lr=1e-3, step_size=10).best == np.inf  # uses np.Inf


def test_hub_pytorch_safetensors_loads_into_tensorflow():
    """The Hub's distilbert-base-uncased is a PyTorch model.safetensors; transformers 4.55+ fails here."""
    from transformers import TFAutoModelForSequenceClassification

    model = TFAutoModelForSequenceClassification.from_pretrained(learning.MODEL_NAME)
    stored = load_file(str(next(HF_HOME.glob("hub/models--*/snapshots/*/model.safetensors"))))
    loaded = {w.name: w.numpy() for w in model.weights}
    embeddings = next(v for k, v in loaded.items() if "word_embeddings" in k)
    np.testing.assert_array_equal(embeddings, stored["distilbert.embeddings.word_embeddings.weight"])


def test_pandas3_string_columns_reach_ktrain_as_plain_strings(tmp_path):
    path = synthetic.write_splits(tmp_path, 40, 20) / "train.xlsx"
    with pd.option_context("future.infer_string", True):  # pandas 3's default
        raw = pd.read_excel(path, dtype=str)
        assert not isinstance(raw["Reviews"].values, np.ndarray)  # what ktrain would refuse
        train = dataset.read_split(path)
        assert isinstance(train["Reviews"].values, np.ndarray) and train["Reviews"].dtype == object
        _, _, preproc = learning.preprocess(train, train, maxlen=16)
    assert preproc.get_classes() == ["neg", "pos"]


def test_english_model_even_when_language_guess_is_wrong():
    """langdetect calls these short reviews Catalan; ktrain would then pick the multilingual model."""
    from ktrain.text import textutils

    texts = ["Superb plot, brilliant cast.", "Dull plot, awful cast."] * 10
    frame = pd.DataFrame({"Reviews": texts, "Sentiment": ["pos", "neg"] * 10})
    assert textutils.detect_lang(texts) != "en"
    _, _, preproc = learning.preprocess(frame, frame, maxlen=16)
    assert preproc.model_name == "distilbert-base-uncased"
    assert preproc.lang == "en"


@pytest.mark.parametrize("package, version", [("transformers", "4.54.1"), ("pandas", "2.3.3")])
def test_pinned_versions_are_the_ones_installed(package, version):
    from importlib.metadata import version as installed

    assert installed(package) == version
    assert f"{package}=={version}" in (ROOT / "requirements.txt").read_text()


def test_cached_model_loads_without_network_and_without_offline_flag(synthetic_splits, tmp_path):
    """Without HF_HUB_OFFLINE, huggingface_hub retries the Hub for minutes and then fails; we go offline."""
    result = run_train("--data-dir", synthetic_splits, "--sample", 20, "--maxlen", 16, "--epochs", 1,
                       "--output", tmp_path / "out", env={"HF_HUB_OFFLINE": None}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Retrying" not in result.stderr


def test_offline_only_when_the_whole_model_is_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert not compat.offline_if_cached(learning.MODEL_NAME) and "HF_HUB_OFFLINE" not in os.environ
    snapshot = tiny_distilbert.install(tmp_path)
    (snapshot / "model.safetensors").unlink()  # an interrupted first download
    assert not compat.offline_if_cached(learning.MODEL_NAME) and "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HOME", str(HF_HOME))
    assert compat.offline_if_cached(learning.MODEL_NAME) and os.environ["HF_HUB_OFFLINE"] == "1"


def test_lr_suggestions_read_the_steepest_rate_at_the_right_step():
    """ktrain 0.41.4 reads the steepest-descent rate 32 steps early; compat adds the offset back."""
    from types import SimpleNamespace

    lrs = [1e-6 * 1.1**i for i in range(100)]
    losses = [1.0] * 50 + [1.0 - 0.1 * i for i in range(5)] + [0.5] * 10 + [0.5 + 0.2 * i for i in range(35)]
    finder = SimpleNamespace(lrs=lrs, losses=losses, ml=int(np.argmin(losses)),
                             estimate_lr=lambda: (lrs[20], lrs[55] / 10, lrs[52]))
    suggested = compat.lr_suggestions(finder)
    assert suggested["steepest"] == lrs[32 + int(np.argmin(np.gradient(losses[32:finder.ml])))]
    assert 50 <= lrs.index(suggested["steepest"]) <= 55  # where the loss falls fastest
    assert suggested["min_loss_div_10"] == lrs[55] / 10 and suggested["valley"] == lrs[52]


def test_a_second_model_in_one_python_gets_an_adam_of_its_own():
    """ktrain compiles every model with one Adam made at import: a notebook cell that builds and trains again
    would continue the first run's step count (and keep its moments). compat.fresh_optimizer gives each its own."""
    frame = synthetic.reviews(32)
    train, val, preproc = learning.preprocess(frame, frame, maxlen=16, padding="fixed")
    first = learning.build_learner(train, val, preproc, batch_size=16, precision="float32")
    learning.fit(first, 1e-3, 1)
    second = learning.build_learner(train, val, preproc, batch_size=16, precision="float32")
    assert second.model.optimizer is not first.model.optimizer
    assert int(second.model.optimizer.iterations.numpy()) == 0
    learning.fit(second, 1e-3, 1)
    assert int(second.model.optimizer.iterations.numpy()) == 2  # 32 reviews in batches of 16, this model's only
    assert int(first.model.optimizer.iterations.numpy()) == 2
