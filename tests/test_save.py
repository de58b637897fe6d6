"""A predictor folder is written completely or not at all."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import synthetic
from conftest import ROOT

from imdb_distilbert.training import learning


@pytest.fixture(scope="module")
def learner_and_preproc():
    frame = synthetic.reviews(32)
    train, val, preproc = learning.preprocess(frame, frame, maxlen=16)
    learner = learning.build_learner(train, val, preproc, batch_size=16)
    learning.tf.keras.mixed_precision.set_global_policy("float32")  # build_learner sets it; later tests need float32
    return learner, preproc


def hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt  # as if Ctrl-C arrived between saving the model and the preprocessor


def test_save_writes_a_loadable_predictor(learner_and_preproc, tmp_path):
    import ktrain

    learner, preproc = learner_and_preproc
    out = learning.save_predictor(learner, preproc, tmp_path / "p", {"metrics.json": "{}"})
    assert ktrain.load_predictor(str(out)).get_classes() == ["neg", "pos"]
    assert (out / "metrics.json").read_text() == "{}" and hidden(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())


def test_interrupted_save_leaves_no_folder(learner_and_preproc, tmp_path, monkeypatch):
    from ktrain.predictor import Predictor

    monkeypatch.setattr(Predictor, "_save_preproc", interrupt)
    with pytest.raises(KeyboardInterrupt):
        learning.save_predictor(*learner_and_preproc, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_predictor(learner_and_preproc, tmp_path, monkeypatch):
    from ktrain.predictor import Predictor

    out = learning.save_predictor(*learner_and_preproc, tmp_path / "p", {"metrics.json": json.dumps({"run": 1})})
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(Predictor, "_save_preproc", interrupt)
    with pytest.raises(KeyboardInterrupt):
        learning.save_predictor(*learner_and_preproc, out, {"metrics.json": json.dumps({"run": 2})})
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "metrics.json").read_text()) == {"run": 1}
    assert hidden(tmp_path) == []


def test_a_killed_runs_leftovers_are_cleaned_up(learner_and_preproc, tmp_path):
    leftover = tmp_path / ".p.partial-abc123"
    leftover.mkdir()
    (leftover / "tf_model.h5").write_text("half a model")
    learning.save_predictor(*learner_and_preproc, tmp_path / "p")
    assert hidden(tmp_path) == []


def test_ctrl_c_during_training_saves_nothing(synthetic_splits, tmp_path):
    """A user presses Ctrl-C while train.py is training: one line, exit 130, no output folder."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "src" / "train.py"), "--data-dir", str(synthetic_splits),
               "--maxlen", "16", "--epochs", "200", "--output", str(tmp_path / "out")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if "begin training" in line:
            break
    time.sleep(0.5)  # in the first epoch, before its checkpoint (tests/test_report.py interrupts later)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output[-2000:]
    assert "interrupted: nothing was saved" in output and "Traceback" not in output
    assert list(tmp_path.iterdir()) == []


def current_umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
