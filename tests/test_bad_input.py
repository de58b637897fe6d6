"""Every input mistake a user can make ends in one clear sentence and a non-zero exit, no traceback."""

import pandas as pd
import pytest
import synthetic
from conftest import assert_user_error, run_train

from imdb_distilbert.data import dataset
from imdb_distilbert.errors import UserError


def write(path, frame):
    frame.to_excel(path, index=False)
    return path


@pytest.fixture
def good(tmp_path):
    return synthetic.write_splits(tmp_path / "good", 40, 20)


def test_missing_file(good, tmp_path):
    result = run_train("--train", tmp_path / "nope.xlsx", "--test", good / "test.xlsx")
    assert_user_error(result, "nope.xlsx does not exist", "--data-dir")


def test_missing_data_dir_files(tmp_path):
    assert_user_error(run_train("--data-dir", tmp_path), "train.xlsx does not exist")


def test_unreadable_file(good, tmp_path):
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"this is not a spreadsheet")
    assert_user_error(run_train("--train", broken, "--test", good / "test.xlsx"), "could not read", "broken.xlsx")


def test_missing_columns(good, tmp_path):
    frame = synthetic.reviews(20).rename(columns={"Sentiment": "label"})
    result = run_train("--train", write(tmp_path / "cols.xlsx", frame), "--test", good / "test.xlsx")
    assert_user_error(result, "has no Sentiment column", "Reviews, label")


def test_labels_must_be_two_classes_or_more(good, tmp_path):
    """One class cannot be learnt (three or more can: tests/test_own_data.py)."""
    frame = pd.DataFrame({"Reviews": [f"review {i}" for i in range(30)], "Sentiment": ["pos"] * 30})
    result = run_train("--train", write(tmp_path / "labels.xlsx", frame), "--test", good / "test.xlsx")
    assert_user_error(result, "has one label value (pos) in its Sentiment column", "at least two classes")


def test_test_labels_must_match_train(good, tmp_path):
    frame = pd.DataFrame({"Reviews": ["a good one", "a bad one"], "Sentiment": ["positive", "negative"]})
    result = run_train("--train", good / "train.xlsx", "--test", write(tmp_path / "test.xlsx", frame))
    assert_user_error(result, "labels the training data does not (negative, positive)")


def test_missing_labels(good, tmp_path):
    frame = synthetic.reviews(20)
    frame.loc[5, "Sentiment"] = None
    result = run_train("--train", write(tmp_path / "nolabel.xlsx", frame), "--test", good / "test.xlsx")
    assert_user_error(result, "1 rows with no Sentiment label (first at spreadsheet row 7)")


def test_empty_reviews_are_dropped_and_reported(tmp_path, capsys):
    frame = synthetic.reviews(20)
    frame.loc[[2, 3], "Reviews"] = [None, "   "]
    path = write(tmp_path / "train.xlsx", frame)
    train, test = dataset.load_splits(path, path)
    assert len(train) == 18 and train.attrs["dropped_empty"] == 2
    assert "dropped 2 empty reviews from" in capsys.readouterr().out
    assert train["Reviews"].str.strip().ne("").all()


def test_all_reviews_empty(good, tmp_path):
    frame = pd.DataFrame({"Reviews": [None, " "], "Sentiment": ["pos", "neg"]})
    result = run_train("--train", write(tmp_path / "empty.xlsx", frame), "--test", good / "test.xlsx")
    assert_user_error(result, "has no non-empty reviews")


def test_sample_larger_than_data(good):
    assert_user_error(run_train("--data-dir", good, "--sample", 41), "--sample 41 is larger than", "40 usable")


@pytest.mark.parametrize("flags, fragment", [
    (["--sample", "1"], "--sample must be at least 2"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--maxlen", "600"], "at most 512"),
    (["--lr", "5"], "--lr must be between 0 and 1"),
    (["--val-split", "1.5"], "--val-split must be a fraction"),
    (["--truncation", "middle"], "invalid choice: 'middle'"),
    (["--top-losses", "-1"], "--top-losses must be 0 or more"),
    (["--lr-find-only", "--resume"], "do not go together"),
])
def test_bad_flags(good, flags, fragment):
    result = run_train("--data-dir", good, *flags)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr


def test_output_that_is_not_a_predictor_is_never_replaced(good, tmp_path):
    """Only a folder the project wrote (its marker) is replaced, not one that looks like a run: a project folder
    holding a metrics.json of its own, given as --output by mistake, keeps its files."""
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    (precious / "metrics.json").write_text('{"accuracy": 0.9}')
    assert_user_error(run_train("--data-dir", good, "--output", precious, "--maxlen", 16, "--sample", 20),
                      "holds files this project did not write")
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert_user_error(run_train("--data-dir", good, "--output", precious / "thesis.txt"), "is a file")


def test_model_not_in_cache_and_offline(good, tmp_path):
    result = run_train("--data-dir", good, "--output", tmp_path / "out", "--maxlen", 16,
                       env={"HF_HOME": str(tmp_path / "empty-cache")})
    assert_user_error(result, "could not load distilbert-base-uncased", "HF_HOME")
    assert not (tmp_path / "out").exists()


def test_val_split_that_leaves_nothing_to_validate(good):
    assert_user_error(run_train("--data-dir", good, "--sample", 10, "--val-split", 0.05), "--val-split 0.05")


def test_sample_helper_is_stratified_and_seeded():
    frame = synthetic.reviews(200, seed=3)
    frame.attrs = {"path": "x"}
    a, b = dataset.sample(frame, 50, seed=1), dataset.sample(frame, 50, seed=1)
    assert a.equals(b) and len(a) == 50 and (a["Sentiment"] == "pos").sum() == 25
    with pytest.raises(UserError):
        dataset.sample(frame, 201, seed=1)
