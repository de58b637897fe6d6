"""train.py --strategy mirrored with two replicas, on the CPU split into two logical devices (tests/two_cpu_devices.py).

One run, interrupted after its first epoch and resumed, against the single-device `trained` run: same
data, seed, learning rate and global batch (2 replicas x 4 = 8 reviews per step, as TINY's 8).
"""

import json
import sys

import pandas as pd
import pytest
from conftest import ROOT, TINY, at_least, interrupt_after_first_epoch, run_train

from imdb_distilbert.training import evaluation

LAUNCHER = ROOT / "tests" / "two_cpu_devices.py"
FLAGS = dict(zip(TINY[::2], TINY[1::2], strict=True))
MIRRORED = [*TINY, "--batch-size", FLAGS["--batch-size"] // 2, "--strategy", "mirrored"]  # the last --batch-size counts


@pytest.fixture(scope="module")
def mirrored(synthetic_splits, tmp_path_factory):
    """The 2-replica run, Ctrl-C after epoch 1 of 3, then --resume: (predictor folder, the two outputs)."""
    output = tmp_path_factory.mktemp("mirrored") / "predictor"
    command = [sys.executable, str(LAUNCHER), "--data-dir", str(synthetic_splits), "--output", str(output),
               *map(str, MIRRORED)]
    returncode, interrupted = interrupt_after_first_epoch(command)
    assert returncode == 130, interrupted[-3000:]
    assert "run the same command with --resume" in interrupted
    resumed = run_train(*command[2:], "--resume", script=LAUNCHER)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return output, interrupted, resumed.stdout


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_two_replicas_train_resume_and_learn(mirrored, trained):
    output, interrupted, resumed = mirrored
    done = int(resumed.split("resuming from the checkpoint of epoch ")[1].split()[0])
    assert 1 <= done < 3
    metrics, single = metrics_of(output), metrics_of(trained[0])
    assert metrics["distribution"] == {
        "strategy": "mirrored", "replicas": 2, "global_batch_size": 8, "lr": FLAGS["--lr"],
        "devices": ["/job:localhost/replica:0/task:0/device:CPU:0", "/job:localhost/replica:0/task:0/device:CPU:1"]}
    assert single["distribution"] == {"strategy": "default", "replicas": 1, "devices": [], "global_batch_size": 8,
                                      "lr": FLAGS["--lr"]}
    assert len(metrics["history"]["loss"]) == 3 and metrics["history"]["lr"] == pytest.approx(single["history"]["lr"])
    print(f"test accuracy: 2 replicas {metrics['accuracy']:.3f}, 1 replica {single['accuracy']:.3f}")
    at_least("mirrored: 2-replica test accuracy", metrics["accuracy"], 0.9)
    assert metrics["padding"] == single["padding"] and metrics["padding"]["padding"] == "grouped"  # split per replica
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in trained[0].iterdir())  # checkpoints gone


def test_predictor_loads_on_one_device_and_predicts_as_before_saving(mirrored, synthetic_splits):
    """This process has one CPU device. The loaded predictor scores the test split as the 2-replica model
    did before it was saved (in length-grouped batches): the same accuracy, test loss and most confidently wrong
    reviews."""
    import ktrain
    import tensorflow as tf

    output = mirrored[0]
    assert len(tf.config.list_logical_devices("CPU")) == 1
    predictor = ktrain.load_predictor(str(output))
    test = pd.read_excel(synthetic_splits / "test.xlsx", dtype=str)
    proba = predictor.predict(list(test["Reviews"]), return_proba=True)
    now, before = evaluation.score(test["Sentiment"], proba, predictor.get_classes()), metrics_of(output)
    assert now["accuracy"] == before["accuracy"] and now["confusion_matrix"] == before["confusion_matrix"]
    assert now["loss"] == pytest.approx(before["loss"], abs=1e-5) and now["roc_auc"] == pytest.approx(before["roc_auc"])
    worst = pd.read_csv(output / "top_losses.csv")  # the most confidently wrong test reviews, if any
    classes = predictor.get_classes()
    for _, row in worst.iterrows():
        i = test.index[test["Reviews"] == row["review"]][0]
        assert row["predicted_label"] != row["true_label"] == test["Sentiment"][i]
        assert proba[i][classes.index(row["predicted_label"])] == pytest.approx(row["probability"], abs=1e-5)
