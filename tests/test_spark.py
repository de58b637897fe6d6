"""src/score_spark.py on Spark local[2]: real reviews in, the same scores as predict.py out, and bad input.

One SparkSession for the module. Its Python workers (Spark's executors) cannot import TensorFlow,
ktrain or torch, as on a cluster with only requirements-onnx.txt installed.
"""

import codecs
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic
from conftest import ROOT, assert_user_error, at_least, run_predict, run_train, unavailable
from test_export import blocking
from test_uncertain import threshold_between

from imdb_distilbert.data import windows
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import backends
from imdb_distilbert.spark import score_spark

REAL_REVIEWS = ROOT.parent / "shared" / "data" / "imdb" / "test.xlsx"  # CI clones the project with shared/ beside it
N = 2000
EMPTY = {17: None, 50: "", 93: "   \n "}  # rows with no text: kept, with null scores


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """local[2], whose Python workers (and only they) cannot import TensorFlow, ktrain, transformers or torch."""
    import shutil

    from pyspark.sql import SparkSession

    assert os.environ.get("JAVA_HOME") or shutil.which("java"), (
        "the Spark tests need Java 17: `apt-get install openjdk-17-jre-headless` "
        "(tests/system-packages.sh does it as root)")
    env = blocking(tmp_path_factory.mktemp("spark-blocker"), "tensorflow", "tf_keras", "keras", "ktrain", "compat",
                   "transformers", "torch")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # as score_spark.session() does: workers run this Python
    builder = SparkSession.builder.master("local[2]")
    for name, value in env.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    session = builder.getOrCreate()
    assert score_spark.session() is session  # score_spark uses the active session
    yield session
    session.stop()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """2,000 random real test reviews with their row number in test.xlsx as `id` (so not sorted), 3 of them emptied.

    Written as Parquet for Spark, and as CSV without the empty rows for predict.py.
    """
    folder = tmp_path_factory.mktemp("reviews")
    if not REAL_REVIEWS.is_file():
        unavailable(f"{REAL_REVIEWS} (the real IMDB test split, whose {N} reviews these tests score) is not here")
    frame = pd.read_excel(REAL_REVIEWS, dtype=str)
    frame = frame.sample(n=N, random_state=1)
    frame.insert(0, "id", frame.index)
    frame = frame.reset_index(drop=True)
    for row, text in EMPTY.items():
        frame.loc[row, "Reviews"] = text
    frame.to_parquet(folder / "reviews.parquet", index=False)
    frame.drop(index=list(EMPTY)).to_csv(folder / "for-predict.csv", index=False)
    return frame, folder


@pytest.fixture(scope="module")
def predict_py(exported, reviews):
    """predict.py --backend onnx-int8 on the same reviews: its CSV, one row per non-empty review."""
    out = reviews[1] / "predict.csv"
    result = run_predict("--model", exported[0], "--backend", "onnx-int8", "--file", reviews[1] / "for-predict.csv",
                         "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(out)


def test_executors_cannot_import_tensorflow(spark):
    def try_import(_):
        try:
            import tensorflow  # noqa: F401
        except ImportError as error:
            return str(error)
        return "imported"

    assert "blocked by the test" in spark.sparkContext.parallelize([0], 1).map(try_import).collect()[0]


@pytest.mark.parametrize("batch_size", [32, 8])
def test_spark_gives_predict_py_scores_in_input_order(spark, exported, reviews, predict_py, tmp_path, capsys,
                                                      batch_size):
    """Each task scores its own rows in its own batches (predict.py's run used batches of 32 over all rows): a
    review's scores do not depend on its batch, so they are predict.py's whatever --batch-size and partitions."""
    frame, folder = reviews
    output = tmp_path / "scored"
    score_spark.main(["--model", str(exported[0]), "--input", str(folder / "reviews.parquet"), "--output", str(output),
                      "--batch-size", str(batch_size)])
    printed = capsys.readouterr().out
    counts = ", ".join(f"{label} {n}" for label, n in sorted(predict_py["label"].value_counts().items()))
    assert f"wrote {len(frame)} rows ({counts}) to {output}; 3 rows had no text" in printed
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"

    scored = pd.read_parquet(output)
    assert list(scored.columns) == ["id", "Reviews", "Sentiment", "label", "prob_neg", "prob_pos"]
    # Every input row and column, in the input order.
    assert list(scored["id"]) == list(frame["id"])
    assert scored["Sentiment"].equals(frame["Sentiment"])
    has_text = ~frame.index.isin(list(EMPTY))
    assert list(scored["Reviews"][has_text]) == list(frame["Reviews"][has_text])
    # Rows without text: null scores. The rest: predict.py's labels and probabilities (it writes 6 decimals).
    assert scored.loc[~has_text, ["label", "prob_neg", "prob_pos"]].isna().all().all()
    assert list(scored["label"][has_text]) == list(predict_py["label"])
    assert np.abs(scored.loc[has_text, ["prob_neg", "prob_pos"]].to_numpy()
                  - predict_py[["prob_neg", "prob_pos"]].to_numpy()).max() <= 1e-6


# Bad input: one sentence, and no output folder.

def run_spark_cli(*args):
    return run_train(*args, script=ROOT / "src" / "score_spark.py")


def test_missing_model_folder_is_reported_before_spark_starts(tmp_path):
    result = run_spark_cli("--model", tmp_path / "nope", "--input", tmp_path / "in.parquet",
                           "--output", tmp_path / "out")
    assert_user_error(result, "nope does not exist")
    assert "Spark" not in result.stderr and not (tmp_path / "out").exists()


def test_model_without_onnx_export(trained, tmp_path):
    result = run_spark_cli("--model", trained[0], "--input", tmp_path / "in.parquet", "--output", tmp_path / "out")
    assert_user_error(result, "has no ONNX export yet", "src/export.py")


def test_bad_reading_options_are_one_sentence_before_spark_starts(exported, tmp_path):
    for flag, value, said in (("--window-overlap", 15, "--window-overlap must be from 0 to 14 word pieces"),
                              ("--max-windows", 0, "--max-windows must be at least 1")):
        result = run_spark_cli("--model", exported[0], "--input", tmp_path / "in.parquet", "--output",
                               tmp_path / "out", flag, value)
        assert_user_error(result, said)
        assert "Spark" not in result.stderr and not (tmp_path / "out").exists()


def score(*args):
    return score_spark.score(score_spark.session(), score_spark.parse_args(list(map(str, args))))


def test_missing_input(spark, exported, tmp_path):
    with pytest.raises(UserError, match="--input .*nothing-here.parquet does not exist"):
        score("--model", exported[0], "--input", tmp_path / "nothing-here.parquet", "--output", tmp_path / "out")
    (tmp_path / "notes.parquet").write_text("not a Parquet file")
    with pytest.raises(UserError, match="could not read --input .*notes.parquet as Parquet"):
        score("--model", exported[0], "--input", tmp_path / "notes.parquet", "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_or_wrong_text_column(spark, exported, reviews, tmp_path):
    folder = reviews[1]
    with pytest.raises(UserError, match=r"has no Text column \(it has: id, Reviews, Sentiment\); .*--text-column"):
        score("--model", exported[0], "--input", folder / "reviews.parquet", "--output", tmp_path / "out",
              "--text-column", "Text")
    pd.DataFrame({"Reviews": [1, 2]}).to_parquet(tmp_path / "numbers.parquet")
    with pytest.raises(UserError, match="holds bigint, not text"):
        score("--model", exported[0], "--input", tmp_path / "numbers.parquet", "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_input_and_an_existing_output(spark, exported, tmp_path):
    """CSV as pandas and spreadsheets write it (quotes, commas, line breaks in a review); --output is
    refused while it exists, and replaced with --overwrite. The scores are predict.py's on the same file."""
    texts = ['a wonderful film, "superb" acting', "an awful boring mess,\nthe worst", "the movie was great"]
    pd.DataFrame({"Reviews": texts, "stars": ["9", "2", "8"]}).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists; .*--overwrite"):
        score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    with pytest.raises(UserError, match="holds files score_spark.py did not write"):  # a user's folder, mistyped
        score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out", "--overwrite")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "scored")
    counts = score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "scored",
                   "--overwrite")  # replaces the output it wrote, in one rename once complete
    scored = pd.read_parquet(tmp_path / "scored")
    assert list(scored["Reviews"]) == texts and list(scored["stars"]) == ["9", "2", "8"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left
    result = run_predict("--model", exported[0], "--backend", "onnx-int8", "--file", tmp_path / "in.csv",
                         "--out", tmp_path / "predict.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    want = pd.read_csv(tmp_path / "predict.csv")
    assert list(scored["label"]) == list(want["label"]) and counts == want["label"].value_counts().to_dict()
    assert np.abs(scored["prob_pos"].to_numpy() - want["prob_pos"].to_numpy()).max() <= 1e-6


class FailingRename:
    """A Hadoop FileSystem whose rename of a finished staging folder into place fails (a full quota, say)."""

    def __init__(self, fs):
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def rename(self, source, target):
        return False if ".partial-" in source.getName() else self.fs.rename(source, target)


def test_a_failed_overwrite_keeps_the_earlier_output(spark, exported, tmp_path, monkeypatch):
    """--overwrite deleted the earlier output before renaming the new one in: when the rename failed, both
    were gone. Now the earlier output is renamed aside, and put back."""
    pd.DataFrame({"Reviews": ["a great film", "dull"]}).to_csv(tmp_path / "in.csv", index=False)
    score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    before = pd.read_parquet(tmp_path / "out")
    real = score_spark.hadoop_fs
    monkeypatch.setattr(score_spark, "hadoop_fs", lambda *a: (FailingRename(real(*a)[0]), real(*a)[1]))
    with pytest.raises(OSError, match="could not rename"):
        score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out", "--overwrite")
    assert pd.read_parquet(tmp_path / "out").equals(before)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fp32_backend_and_partitions(spark, exported, tmp_path, capsys):
    """--backend onnx scores in fp32 (predict.py --backend onnx's numbers) in the --partitions asked for;
    synthetic reviews, which the tiny model learnt, get their labels right."""
    frame = synthetic.reviews(60, seed=17)
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    score("--model", exported[0], "--input", tmp_path / "reviews.csv", "--output", tmp_path / "out",
          "--backend", "onnx", "--partitions", 3)
    assert "in 3 tasks on local[2] with onnx..." in capsys.readouterr().err
    scored = pd.read_parquet(tmp_path / "out")
    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", tmp_path / "reviews.csv",
                         "--out", tmp_path / "predict.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    want = pd.read_csv(tmp_path / "predict.csv")
    assert list(scored["Reviews"]) == list(frame["Reviews"]) and list(scored["label"]) == list(want["label"])
    assert np.abs(scored[["prob_neg", "prob_pos"]].to_numpy() - want[["prob_neg", "prob_pos"]].to_numpy()).max() <= 1e-6
    at_least("spark: accuracy on 60 synthetic reviews (fp32)", np.mean(scored["label"] == frame["Sentiment"]), 0.9)


@pytest.mark.parametrize("kind", ["three", "ratings"])
def test_a_model_of_more_classes_on_its_own_text_column(kind, spark, own_data_run, tmp_path):
    """A model trained on a user's own data (tests/test_own_data.py): one probability column per class, in the
    model's order (ratings 2, 4, 6, 8, 10, not as text sorts them), from the text column the run was trained on
    (no --text-column), with predict.py's numbers."""
    from conftest import OWN_DATA

    folder, _ = own_data_run(kind)
    spec = OWN_DATA[kind]
    frame = synthetic.class_reviews(40, spec["words"], seed=23, text=spec["text"], label="truth")
    frame.to_csv(tmp_path / "in.csv", index=False)
    score("--model", folder, "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    scored = pd.read_parquet(tmp_path / "out")
    classes = json.loads((folder / "onnx.json").read_text())["classes"]
    assert list(scored.columns) == [spec["text"], "truth", "label", *(f"prob_{c}" for c in classes)]
    assert len(classes) == {"three": 3, "ratings": 5}[kind]
    result = run_predict("--model", folder, "--backend", "onnx-int8", "--file", tmp_path / "in.csv",
                         "--out", tmp_path / "predict.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    want = pd.read_csv(tmp_path / "predict.csv", dtype={"label": str})
    probs = [f"prob_{c}" for c in classes]
    assert list(scored["label"]) == list(want["label"])
    assert np.abs(scored[probs].to_numpy() - want[probs].to_numpy()).max() <= 1e-6
    at_least(f"spark: accuracy of the {kind} model on 40 synthetic reviews", np.mean(scored["label"] == frame["truth"]),
             0.9)


def test_input_with_a_label_column_is_refused(spark, exported, tmp_path):
    pd.DataFrame({"Reviews": ["a fine film"], "label": ["pos"]}).to_parquet(tmp_path / "labelled.parquet")
    with pytest.raises(UserError,
                       match="already has a label column, which the scores would replace; rename or drop it"):
        score("--model", exported[0], "--input", tmp_path / "labelled.parquet", "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_java_is_one_sentence(exported, tmp_path):
    """A machine without Java (none on PATH, no JAVA_HOME): said before Spark tries to start."""
    env = {"PATH": str(Path(sys.executable).parent), "JAVA_HOME": None}
    result = run_train("--model", exported[0], "--input", tmp_path / "in.parquet", "--output", tmp_path / "out",
                       script=ROOT / "src" / "score_spark.py", env=env)
    assert_user_error(result, "Spark needs Java 17 or later, and none was found", "openjdk-17-jre-headless")


# CSV as Excel saves it (data/reading.py): found from the file's bytes, and every character back exactly.

@pytest.fixture(scope="module")
def excel_labels(exported, tmp_path_factory):
    """predict.py --backend onnx-int8's labels for test_encodings.REVIEWS, saved as UTF-8."""
    from test_encodings import REVIEWS

    folder = tmp_path_factory.mktemp("excel")
    pd.DataFrame({"Reviews": REVIEWS}).to_csv(folder / "utf-8.csv", index=False)
    want = run_predict("--model", exported[0], "--backend", "onnx-int8", "--file", folder / "utf-8.csv",
                       "--out", folder / "predicted.csv")
    assert want.returncode == 0, want.stderr[-3000:]
    return list(pd.read_csv(folder / "predicted.csv")["label"])


@pytest.mark.parametrize("kind", ["utf-8-bom", "utf-16", "windows-1252-semicolon"])
def test_csv_as_excel_saves_it(kind, spark, exported, excel_labels, tmp_path, capsys):
    from test_encodings import LABELS, NOT_UTF8, REVIEWS, write

    counts = score("--model", exported[0], "--input", write(tmp_path, kind), "--output", tmp_path / "out")
    scored = pd.read_parquet(tmp_path / "out")
    assert list(scored["Reviews"]) == REVIEWS and list(scored["Sentiment"]) == LABELS
    assert list(scored["label"]) == excel_labels and sum(counts.values()) == 6
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    if kind in NOT_UTF8:
        assert len(said) == 1 and said[0].startswith(
            f"note: reading {tmp_path / f'reviews-{kind}.csv'} as {NOT_UTF8[kind]}, ")
    else:
        assert said == []


def test_csv_in_no_known_encoding(spark, exported, tmp_path):
    (tmp_path / "in.csv").write_bytes(b"Reviews\r\nsuperb\x81\r\n")
    with pytest.raises(UserError, match=r"is not text in UTF-8, UTF-16 or Windows-1252 \(byte 0x81"):
        score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# A CSV row with more fields than its header (a comma in a review, out of quotes): Spark's reader kept the first
# field and dropped the rest silently ("a fine film" scored, "truly moving" lost). Now refused, naming the line.

@pytest.mark.parametrize("codec, bom", [("utf-8", b""), ("cp1252", b""), ("utf-16-le", codecs.BOM_UTF16_LE)])
def test_a_ragged_csv_row_is_refused_with_its_line(codec, bom, spark, exported, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(bom + "Reviews\na fine film, truly “moving”\nboring and long\n".encode(codec))
    if codec == "cp1252":
        assert b"\x93" in path.read_bytes()  # a curly quote: not UTF-8
    with pytest.raises(UserError, match=r"in.csv line 2 has 2 fields but its header has 1 \(a comma inside a review"):
        score("--model", exported[0], "--input", path, "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ragged_rows_after_a_review_of_several_lines(spark, exported, tmp_path):
    """The line named is the file's, quoted line breaks counted; a row with fewer fields is read whole, with an empty
    cell, as pandas reads it, and is not refused."""
    path = tmp_path / "in.csv"
    path.write_text('Reviews,stars\n"a wonderful film,\nsuperb acting",9\nboring\nawful, the worst,2\n')
    with pytest.raises(UserError, match=r"line 5 has 3 fields but its header has 2"):
        score("--model", exported[0], "--input", path, "--output", tmp_path / "out")
    path.write_text('Reviews,stars\n"a wonderful film,\nsuperb acting",9\nboring\n"awful, the worst",2\n')
    score("--model", exported[0], "--input", path, "--output", tmp_path / "out")
    scored = pd.read_parquet(tmp_path / "out")
    assert list(scored["Reviews"]) == ["a wonderful film,\nsuperb acting", "boring", "awful, the worst"]
    assert list(scored["stars"]) == ["9", None, "2"]


def test_empty_reviews_in_a_csv_keep_their_rows_or_are_said(spark, exported, tmp_path, capsys):
    """Empty and blank texts keep their rows, with null scores; a blank line (an empty cell of a one-column sheet,
    as Excel saves it), which Spark's CSV reader skips, is said, with its line."""
    pd.DataFrame({"id": ["1", "2", "3"], "Reviews": ["a wonderful film", "", "   "]}).to_csv(tmp_path / "in.csv",
                                                                                         index=False)
    score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    scored = pd.read_parquet(tmp_path / "out")
    assert list(scored["id"]) == ["1", "2", "3"] and list(scored["label"].isna()) == [False, True, True]
    assert "note:" not in capsys.readouterr().err

    (tmp_path / "one.csv").write_text("Reviews\na wonderful film\n\nan awful film\n")
    score("--model", exported[0], "--input", tmp_path / "one.csv", "--output", tmp_path / "one")
    assert len(pd.read_parquet(tmp_path / "one")) == 2
    assert "one.csv line 3 is blank, and Spark's CSV reader skips blank lines" in capsys.readouterr().err


def test_min_confidence_marks_the_same_reviews_as_predict_py(spark, exported, tmp_path):
    frame = synthetic.reviews(40, seed=21, mixed=True)
    frame.to_csv(tmp_path / "in.csv", index=False)

    def labels(*flags):
        result = run_predict("--model", exported[0], "--backend", "onnx-int8", "--file", tmp_path / "in.csv",
                             "--json", *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        return [json.loads(line) for line in result.stdout.splitlines()]

    threshold = threshold_between([max(r["prob_neg"], r["prob_pos"]) for r in labels()])  # about half uncertain
    want = [r["label"] for r in labels("--min-confidence", threshold)]
    counts = score("--model", exported[0], "--input", tmp_path / "in.csv", "--output", tmp_path / "out",
                   "--min-confidence", threshold)
    assert list(pd.read_parquet(tmp_path / "out")["label"]) == want and "uncertain" in want
    assert counts["uncertain"] == want.count("uncertain")


# Reviews longer than maxlen (data/windows.py): the executors read them as --long-reviews says, as the ONNX backend
# does; the reviews the windows' cap cut are counted on the executors and said once, on the driver.

@pytest.mark.parametrize("flags, reading", [
    (["--long-reviews", "windows"], {"long_reviews": "windows"}),
    (["--long-reviews", "cut"], {"long_reviews": "cut"}),
    (["--window-overlap", 14, "--max-windows", 4], {"overlap": 14, "max_windows": 4}),
], ids=["windows", "cut", "windows-overlap-14-cap-4"])
def test_long_reviews_are_read_as_asked(spark, exported, tmp_path, capsys, flags, reading):
    """16 reviews with their verdict in the middle of 70-80 words (more than twice maxlen 32) and 4 short ones, in 3
    tasks: each gets what backends.load(..., "onnx-int8", **reading) gives (1e-5), and the cap's note is the one that
    model says for them all (with an overlap of 14 the long reviews are 4 or 5 windows of 30: a cap of 4 cuts some)."""
    frame = pd.concat([synthetic.reviews(16, seed=50, long=True, at="middle"), synthetic.reviews(4, seed=51)],
                      ignore_index=True)
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    model = backends.load(exported[0], "onnx-int8", **reading)
    said = []
    model.say = said.append
    want = model.predict_proba(list(frame["Reviews"]))
    assert bool(said) == ("max_windows" in reading)
    other = "cut" if model.reading.long_reviews == "windows" else "windows"
    elsewise = backends.load(exported[0], "onnx-int8", long_reviews=other).predict_proba(list(frame["Reviews"]))
    assert np.abs(want - elsewise).max() > 0.01  # the reading changes the answers
    capsys.readouterr()
    score("--model", exported[0], "--input", tmp_path / "in.parquet", "--output", tmp_path / "out",
          "--partitions", 3, *flags)
    scored = pd.read_parquet(tmp_path / "out")
    assert list(scored["Reviews"]) == list(frame["Reviews"])
    assert list(scored["label"]) == [model.classes[i] for i in want.argmax(1)]
    assert np.abs(scored[["prob_neg", "prob_pos"]].to_numpy() - want).max() <= 1e-5
    notes = [line for line in capsys.readouterr().err.splitlines() if "windows (about" in line]
    assert notes == said, notes  # one line for the 3 tasks, as the model said it scoring all the reviews at once


def test_the_driver_counts_the_reviews_the_executors_notes_say():
    """The executors' notes of the windows' cap (windows.cap_note) are added up in an accumulator."""

    class Accumulator:
        value = 0

        def add(self, n):
            self.value += n

    added = Accumulator()
    for n in (1, 7):
        score_spark.count_capped(added, windows.cap_note(n, windows.Reading(32, long_reviews="windows", max_windows=3)))
    assert added.value == 8
