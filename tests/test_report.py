"""What a run writes besides the predictor: metrics, report, plots, worst mistakes; and the options
that change how it trains: --lr-find, --val-split, checkpoints and --resume (--truncation: test_truncation.py)."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import (
    ROOT,
    TINY,
    assert_scored_as_its_predictor,
    assert_user_error,
    at_least,
    at_most,
    interrupt_after_first_epoch,
    run_train,
)

PLOTS = ["confusion_matrix.png", "training_curves.png", "roc_curve.png"]


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def assert_png(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100, path
    assert image.std() > 0.01, f"{path} is blank"


MISLABELLED = range(0, 200, 20)  # test reviews given the wrong label: 10 mistakes a model that learnt must make


@pytest.fixture(scope="module")
def mislabelled_splits(synthetic_splits, tmp_path_factory):
    """The synthetic splits, with the labels of the MISLABELLED test reviews swapped: every run has mistakes."""
    folder = tmp_path_factory.mktemp("mislabelled")
    (folder / "train.xlsx").write_bytes((synthetic_splits / "train.xlsx").read_bytes())
    test = pd.read_excel(synthetic_splits / "test.xlsx", dtype=str)
    rows = list(MISLABELLED)
    test.loc[rows, "Sentiment"] = test.loc[rows, "Sentiment"].map({"pos": "neg", "neg": "pos"})
    test.to_excel(folder / "test.xlsx", index=False)
    return folder


@pytest.fixture(scope="module")
def options_run(mislabelled_splits, tmp_path_factory):
    """A run with the learning-rate finder and a validation split taken from train, scored on a test split with
    some reviews mislabelled."""
    output = tmp_path_factory.mktemp("options") / "predictor"
    result = run_train("--data-dir", mislabelled_splits, "--output", output, *TINY,
                       "--lr-find", "--val-split", 0.2, "--top-losses", 5)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result


def test_every_report_file_is_written_and_valid(trained):
    output = trained[0]
    for name in PLOTS:
        assert_png(output / name)
    metrics = metrics_of(output)
    report = (output / "report.txt").read_text()
    assert f"accuracy {metrics['accuracy']:.4f}" in report and "macro avg" in report
    assert not (output / "checkpoints").exists(), "checkpoints are removed once the predictor is saved"
    assert not (output / "lr_find.png").exists()


def test_metrics_json_keys_and_ranges(trained):
    m = metrics_of(trained[0])
    for key in ("accuracy", "f1", "precision", "recall", "roc_auc"):
        assert 0 <= m[key] <= 1, key
    assert m["loss"] > 0 and m["n_test"] == 200 and m["classes"] == ["neg", "pos"]
    assert sum(map(sum, m["confusion_matrix"])) == m["n_test"]
    assert [row[i] for i, row in enumerate(m["confusion_matrix"])] == [
        round(m["per_class"][c]["recall"] * m["per_class"][c]["support"]) for c in m["classes"]]
    assert sum(c["support"] for c in m["per_class"].values()) == m["n_test"]
    assert m["f1"] == pytest.approx(sum(c["f1"] for c in m["per_class"].values()) / 2)
    history = m["history"]
    assert len(history["loss"]) == len(history["val_accuracy"]) == 3  # --epochs 3
    assert len(history["lr"]) == 3 * 50  # 400 reviews / batch 8 = 50 steps per epoch
    assert max(history["lr"]) == pytest.approx(2e-3, rel=0.05)  # the one-cycle peak is --lr
    assert history["loss"][-1] < history["loss"][0]
    assert m["validation"] == "test split" and m["n_val"] == 200
    assert set(m["seconds"]) == {"preprocess", "train", "evaluate", "self_check", "total"}  # no calibrate: too few
    assert 0 < m["peak_memory_mb"]["after_training"] <= m["peak_memory_mb"]["after_evaluation"]


def test_top_losses_are_the_most_confident_mistakes(options_run, mislabelled_splits):
    """Each row is a test review the saved predictor gets wrong, with the probability it gives its wrong label:
    5 of at least the 10 mistakes the mislabelled reviews make; and the page explains each of them."""
    import ktrain

    output = options_run[0]
    worst = pd.read_csv(output / "top_losses.csv")
    assert list(worst.columns) == ["review", "true_label", "predicted_label", "probability", "loss"]
    assert len(worst) == 5 and worst["loss"].is_monotonic_decreasing
    test = pd.read_excel(mislabelled_splits / "test.xlsx", dtype=str)
    truth = dict(zip(test["Reviews"], test["Sentiment"], strict=True))
    assert [truth[r] for r in worst["review"]] == list(worst["true_label"])  # the reviews as written, not cut
    m = metrics_of(output)
    assert m["n_test"] - sum(m["confusion_matrix"][i][i] for i in range(2)) >= len(MISLABELLED)
    predictor = ktrain.load_predictor(str(output))
    proba = predictor.predict(list(worst["review"]), return_proba=True)
    predicted = np.array(predictor.get_classes())[proba.argmax(1)]
    assert list(predicted) == list(worst["predicted_label"]) and (worst["true_label"] != predicted).all()
    assert proba.max(1) == pytest.approx(list(worst["probability"]), abs=1e-5)
    assert proba.min(1) == pytest.approx(np.exp(-worst["loss"]), abs=1e-5)  # the loss is the true class's
    page = (output / "top_losses.html").read_text()
    assert "got every test review right" not in page and page.count("data-score=") >= 5


def test_an_empty_top_losses_list_says_why(tmp_path):
    """--top-losses 0 lists no mistakes: the page and the notebook's cell say the run kept none (and how many
    there were), not that the model got every review right; that is said only when it did."""
    from imdb_distilbert.inference import explain

    empty = pd.DataFrame(columns=["review", "true_label", "predicted_label", "probability", "loss"])
    assert "got every test review right" in explain.top_losses_page(None, empty, mistakes=0)
    page = explain.top_losses_page(None, empty, mistakes=12)
    assert "got every test review right" not in page and "12 test reviews wrong" in page and "--top-losses" in page
    for matrix, said in (([[100, 0], [0, 100]], "got every test review right"),
                         ([[95, 3], [4, 98]], "7 test reviews wrong")):
        folder = tmp_path / str(matrix[0][1])
        folder.mkdir()
        empty.to_csv(folder / "top_losses.csv", index=False)
        (folder / "metrics.json").write_text(json.dumps({"confusion_matrix": matrix}))
        shown = explain.show_top_losses(None, folder).data
        assert said in shown and ("got every" in said or "got every" not in shown), shown


def valley_of(losses):
    """The index of ktrain's (fastai's) "valley" rate: the longest run of falling losses (a decreasing subsequence,
    the first of the longest) is cut in thirds, and the rate lies half way into the middle third."""
    run = []  # run[i]: the length of the longest decreasing subsequence that ends at step i
    for i, loss in enumerate(losses):
        run.append(1 + max((run[j] for j in range(i) if losses[j] > loss), default=0))
    end = int(np.argmax(run))
    start = end - run[end]
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


def test_lr_find_and_val_split(options_run, mislabelled_splits):
    """The suggested rates are ktrain's three, read off the curve the finder recorded (and plotted); the finder, the
    training and the validation split went through length-grouped batches, and the test metrics are the predictor's."""
    output, result = options_run
    assert_png(output / "lr_find.png")
    m = metrics_of(output)
    lrs, losses = (np.array(m["lr_find_curve"][k]) for k in ("lrs", "losses"))
    assert len(lrs) == len(losses) > 40 and (np.diff(lrs) > 0).all() and lrs[0] < 1e-6  # a rising sweep from 1e-7
    lowest = int(np.argmin(losses))
    suggested = m["lr_find"]
    assert suggested["min_loss_div_10"] == pytest.approx(lrs[lowest] / 10)
    if lowest > 33:  # ktrain looks for the steepest descent after the first 32 steps, before the lowest loss
        assert suggested["steepest"] == pytest.approx(lrs[32 + int(np.argmin(np.gradient(losses[32:lowest])))])
    assert suggested["valley"] == pytest.approx(lrs[valley_of(losses)])
    assert "suggested learning rates" in result.stdout
    assert m["n_train"] == 320 and m["n_val"] == 80 and m["validation"] == "0.2 of train" and m["n_test"] == 200
    # Still learns with a fifth held out (at most 0.95 here: 10 of the 200 test reviews are mislabelled).
    at_least("report: test accuracy, trained on 0.8 of train", m["accuracy"], 0.8)
    assert m["padding"]["padding"] == "grouped"
    assert_scored_as_its_predictor(output, mislabelled_splits / "test.xlsx")


def test_lr_find_only_writes_the_plot_and_stops(synthetic_splits, trained, tmp_path):
    result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / "lr", *TINY, "--lr-find-only")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == [".imdb-distilbert", "lr_find.png", "metrics.json"]
    assert_png(tmp_path / "lr" / "lr_find.png")
    assert set(metrics_of(tmp_path / "lr")["lr_find"]) == {"steepest", "min_loss_div_10", "valley"}
    refused = run_train("--data-dir", synthetic_splits, "--output", trained[0], "--lr-find-only")
    assert_user_error(refused, "holds a trained predictor")


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(synthetic_splits, trained, tmp_path):
    """Ctrl-C after epoch 1 of 3, then --resume: the checkpoint holds that epoch's model and Adam's state, the
    resumed run trains the epochs after it to where the uninterrupted run got, and the predictor is the same kind.

    Resuming restores the weights, Adam's state and the one-cycle schedule exactly, and the length-grouped batches
    of the epochs after it are the uninterrupted run's; what differs is dropout's random masks (drawn anew by the
    new process), so the numbers match closely, not bit for bit.
    """
    output = tmp_path / "predictor"
    command = [sys.executable, str(ROOT / "src" / "train.py"), "--data-dir", str(synthetic_splits),
               "--output", str(output), *map(str, TINY)]
    returncode, printed = interrupt_after_first_epoch(command, timeout=120)
    assert returncode == 130, printed[-2000:]
    assert "run the same command with --resume" in printed and "Traceback" not in printed
    assert sorted(p.name for p in output.iterdir()) == [".imdb-distilbert", "checkpoints"], "no predictor yet"

    assert_checkpoint_holds_the_epoch(synthetic_splits, output / "checkpoints")

    again = run_train(*command[2:])  # without --resume: refused, so the checkpoint is not lost
    assert_user_error(again, "add --resume")
    changed = run_train(*command[2:], "--resume", "--lr", 1e-3)
    assert_user_error(changed, "lr=0.002")

    resumed = run_train(*command[2:], "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    done = int(resumed.stdout.split("resuming from the checkpoint of epoch ")[1].split()[0])
    assert 1 <= done < 3
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in trained[0].iterdir())
    a, b = metrics_of(trained[0]), metrics_of(output)
    assert len(b["history"]["loss"]) == 3 and b["history"]["lr"] == pytest.approx(a["history"]["lr"])
    assert b["history"]["loss"][:done] == pytest.approx(a["history"]["loss"][:done], abs=1e-6)  # same seed
    # The epochs after the resume: trained from the checkpoint's weights and Adam's state on the same batches as the
    # uninterrupted run's, they end where it did, but for dropout's random masks (a new process draws them anew). Their
    # training loss, an average over an epoch in which the tiny model goes from chance to sure, moves with those masks
    # (0.27 against 0.21 on seed 7); the validation after each is compared. (What the resume loaded is checked above.)
    after = slice(done, None)
    assert b["history"]["val_accuracy"][after] == pytest.approx(a["history"]["val_accuracy"][after], abs=0.02)
    at_most("report: |val_loss resumed - uninterrupted| in the epochs after the resume",
            max(abs(x - y)
                for x, y in zip(b["history"]["val_loss"][after], a["history"]["val_loss"][after], strict=True)),
            0.05)
    at_most("report: |accuracy resumed - uninterrupted|", abs(b["accuracy"] - a["accuracy"]), 0.03)
    at_most("report: |test loss resumed - uninterrupted|", abs(b["loss"] - a["loss"]), 0.1)
    assert b["padding"] == a["padding"] and b["padding"]["padding"] == "grouped"
    assert_scored_as_its_predictor(output, synthetic_splits / "test.xlsx")


def assert_checkpoint_holds_the_epoch(splits, folder):
    """What --resume loads (learning.Checkpoints.resume, into a learner built as train.py builds it; read by
    tests/checkpoint_state.py in a process of its own) is the model at the end of the last finished epoch: its
    validation loss is the one the interrupted run recorded for that epoch; and Adam's state: the step count of the
    epochs done, and the moments the checkpoint file holds."""
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "checkpoint_state.py"), str(splits), str(folder)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["val_loss"] == pytest.approx(found["recorded_val_loss"], abs=1e-4)
    assert found["iterations"] == found["steps"] > 0
    assert len(found["saved_slots"]) == 2 * found["weights"] and found["loaded_slots"] == found["saved_slots"]
    assert all(total != 0 for slot, _, total in found["loaded_slots"] if slot == "v")  # trained moments, not zeros


def test_resume_without_a_checkpoint_is_refused(synthetic_splits, tmp_path):
    result = run_train("--data-dir", synthetic_splits, "--output", tmp_path / "p", "--resume")
    assert_user_error(result, "found no checkpoint")


def test_csv_splits_and_checkpoint_dir(tmp_path):
    """Splits given as .csv files, checkpoints kept in a --checkpoint-dir of their own: interrupted after epoch 1,
    resumed from there, and the folder emptied once the predictor is saved."""
    import synthetic

    splits = synthetic.write_splits(tmp_path / "csv", 200, 100, suffix=".csv")
    output, checkpoints = tmp_path / "predictor", tmp_path / "elsewhere" / "checkpoints"
    command = [sys.executable, str(ROOT / "src" / "train.py"), "--train", str(splits / "train.csv"),
               "--test", str(splits / "test.csv"), "--output", str(output), "--checkpoint-dir", str(checkpoints),
               *map(str, TINY)]
    returncode, printed = interrupt_after_first_epoch(command, timeout=120)
    assert returncode == 130, printed[-2000:]
    assert f"epoch 1 of 3 is saved in {checkpoints};" in printed and (checkpoints / "state.json").is_file()
    assert not output.exists()
    resumed = run_train(*command[2:], "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming from the checkpoint of epoch 1 of 3 in {checkpoints}" in resumed.stdout
    assert not checkpoints.exists() and (output / "tf_model.preproc").is_file()
    m = metrics_of(output)
    assert m["n_train"] == 200 and m["n_test"] == 100 and m["args"]["train"].endswith("train.csv")
    at_least("report: test accuracy, trained from .csv splits and resumed", m["accuracy"], 0.8)
