"""CSV as Excel and pandas save it (data/reading.py): UTF-8 with or without a BOM, UTF-16 with a BOM and tabs
(Excel's "Unicode Text"), Windows-1252 (Excel's "CSV" on Windows), read by predict.py and the training side
with every character back exactly; one line when the encoding is not UTF-8; one sentence when it is none."""

import codecs
import io
import json

import pandas as pd
import pytest
from conftest import assert_user_error, run_predict

from imdb_distilbert.data import dataset, reading
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import predict

# Accents, curly quotes and apostrophes, dashes, an ellipsis and the euro sign (all in Windows-1252), commas,
# semicolons, straight quotes and a line break inside a review.
REVIEWS = [
    "Amélie is a wonderful film: “charming”, naïve and brilliant – I loved it…",
    "An awful, boring mess; the “twist” was dull, and the café scene – the worst. Hated it",
    "Señor Müller’s acting was superb; the music excellent (10/10, à voir)",
    'A "dull" script,\nterrible acting — boring',
    "Le film était très mauvais: poor, weak, a waste of 12 €",
    "Great fun, l’été en famille; fantastic!",
]
LABELS = ["pos", "neg", "pos", "neg", "neg", "pos"]
# name: (Python codec, separator, suffix); who saves files that way.
KINDS = {
    "utf-8": ("utf-8", ",", ".csv"),  # pandas' to_csv
    "utf-8-bom": ("utf-8-sig", ",", ".csv"),  # Excel's "CSV UTF-8"
    "utf-16": ("utf-16", "\t", ".csv"),  # Excel's "Unicode Text", named .csv
    "utf-16-txt": ("utf-16", "\t", ".txt"),  # Excel's "Unicode Text", as Excel names it
    "windows-1252": ("cp1252", ",", ".csv"),  # Excel's "CSV" on Windows
    "windows-1252-semicolon": ("cp1252", ";", ".csv"),  # the same where the decimal mark is a comma (Germany, France)
}
NOT_UTF8 = {"utf-16": "UTF-16", "utf-16-txt": "UTF-16", "windows-1252": "Windows-1252",
            "windows-1252-semicolon": "Windows-1252"}


def write(folder, kind, frame=None):
    """`frame` (default: REVIEWS and LABELS) saved as `kind` says, with Excel's CRLF line ends. Returns the path."""
    codec, separator, suffix = KINDS[kind]
    frame = pd.DataFrame({"Reviews": REVIEWS, "Sentiment": LABELS}) if frame is None else frame
    text = io.StringIO()
    frame.to_csv(text, index=False, sep=separator, lineterminator="\r\n")
    path = folder / f"reviews-{kind}{suffix}"
    path.write_bytes(text.getvalue().encode(codec))
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reads_back_exactly(kind, tmp_path, capsys):
    path = write(tmp_path, kind)
    if kind == "windows-1252":
        assert "é".encode("cp1252") in path.read_bytes()  # byte 0xE9: not UTF-8
    if kind != "utf-16-txt":
        frame = reading.read_csv(path)
        assert list(frame["Reviews"]) == REVIEWS and list(frame["Sentiment"]) == LABELS
        split = dataset.read_split(path)  # the training side: train.py --train/--test and the notebook
        assert list(split["Reviews"]) == REVIEWS and list(split["Sentiment"]) == LABELS
    assert predict.read_texts(path) == REVIEWS
    said = capsys.readouterr().err.splitlines()
    if kind in NOT_UTF8:
        separator = {"\t": "tab", ",": "comma", ";": "semicolon"}[KINDS[kind][1]]
        assert set(said) == {f"note: reading {path} as {NOT_UTF8[kind]}, {separator}-separated ("
                             + reading.WHY[NOT_UTF8[kind]] + ")"}
    else:
        assert said == []


def test_txt_lines_in_windows_1252(tmp_path, capsys):
    """A .txt of one review per line, saved by Notepad in Windows-1252 ("ANSI")."""
    one_line = [r.replace("\n", " ") for r in REVIEWS]
    path = tmp_path / "reviews.txt"
    path.write_bytes("\r\n".join(one_line).encode("cp1252"))
    assert predict.read_texts(path) == one_line
    assert capsys.readouterr().err.startswith(f"note: reading {path} as Windows-1252, one review per line (")


def test_values_like_na_stay_text(tmp_path):
    """pandas would turn a review that reads "NA" or "None" into a missing value, and the review would be skipped."""
    path = write(tmp_path, "windows-1252", pd.DataFrame({"Reviews": ["NA", "None", "", "n/a"]}))
    assert predict.read_texts(path) == ["NA", "None", "n/a"]


@pytest.fixture(scope="module")
def predicted(exported, tmp_path_factory):
    """predict.py --backend onnx --json on the reviews saved as UTF-8, UTF-16 and Windows-1252:
    {kind: (rows, stderr)}."""
    folder = tmp_path_factory.mktemp("encodings")
    found = {}
    for kind in ("utf-8", "utf-16", "windows-1252"):
        result = run_predict("--model", exported[0], "--backend", "onnx", "--json", "--file", write(folder, kind))
        assert result.returncode == 0, result.stderr[-3000:]
        found[kind] = [json.loads(line) for line in result.stdout.splitlines()], result.stderr
    return found


@pytest.mark.parametrize("kind", ["utf-16", "windows-1252"])
def test_predict_py_gives_the_utf8_answers(predicted, kind):
    rows, stderr = predicted[kind]
    assert [r["text"] for r in rows] == REVIEWS
    assert rows == predicted["utf-8"][0]  # the same texts, so the same labels and probabilities
    assert stderr.count("note: reading ") == 1 and f"as {NOT_UTF8[kind]}" in stderr
    assert predicted["utf-8"][1].count("note:") == 0


@pytest.mark.parametrize("content, fragment", [
    (b"Reviews\r\nsuperb\x81 and \x90great\r\n",
     "is not text in UTF-8, UTF-16 or Windows-1252 (byte 0x81 at offset 15"),
    ("Reviews\r\ngreat\r\n".encode("utf-16-le"), "holds NUL bytes"),  # UTF-16 without its byte-order mark
    (codecs.BOM_UTF32_LE + "Reviews\ngreat\n".encode("utf-32-le"), "is not text in UTF-8, UTF-16 or Windows-1252"),
    (b"PK\x03\x04\x14\x00\x06\x00", "is a zip file, such as an Excel workbook"),
])
def test_none_of_these_is_one_sentence(content, fragment, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(content)
    for read in (reading.read_csv, predict.read_texts, dataset.read_split):
        with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
            read(path)


def test_predict_py_none_of_these(exported, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"Reviews\r\nsuperb\x81\r\n")
    error = assert_user_error(run_predict("--model", exported[0], "--backend", "onnx", "--file", path),
                              "is not text in UTF-8, UTF-16 or Windows-1252", 'save it from Excel as "CSV UTF-8"')
    assert error.endswith(".")


@pytest.mark.parametrize("codec, bom", [("utf-8", b""), ("cp1252", b""), ("utf-16-le", codecs.BOM_UTF16_LE)])
def test_a_review_with_an_unquoted_comma_is_refused_with_its_line(codec, bom, tmp_path):
    """A hand-made one-column CSV whose review holds a comma out of quotes: pandas read it as one review,
    "truly moving" (the first field taken as the row's index, the next line lost). Now: refused, naming the line."""
    path = tmp_path / "mine.csv"
    path.write_bytes(bom + "Reviews\r\nthe café, a fine film, truly moving\r\nboring and long\r\n".encode(codec))
    for read in (predict.read_texts, dataset.read_split):
        with pytest.raises(UserError, match=r"line 2 has 3 fields but its header has 1 \(a comma inside a review"):
            read(path)
    # Quoted, as Excel and pandas save it: every review whole.
    path.write_bytes(bom + 'Reviews\r\n"the café, a fine film, truly moving"\r\nboring and long\r\n'.encode(codec))
    assert predict.read_texts(path) == ["the café, a fine film, truly moving", "boring and long"]


@pytest.mark.parametrize("codec, bom", [("utf-8", b""), ("cp1252", b""), ("utf-16-le", codecs.BOM_UTF16_LE)])
def test_predict_py_refuses_a_ragged_csv(exported, tmp_path, codec, bom):
    """An unquoted comma in a one-column file, saved as UTF-8, Windows-1252 (a curly quote: not UTF-8) and UTF-16:
    refused with the line in each, before any model loads; nothing scored, nothing shifted or lost."""
    path = tmp_path / "reviews.csv"
    path.write_bytes(bom + "Reviews\na fine film, truly “moving”\nboring and long\n".encode(codec))
    out = tmp_path / "out.csv"
    assert_user_error(run_predict("--model", exported[0], "--backend", "onnx", "--file", path, "--out", out),
                      "reviews.csv line 2 has 2 fields but its header has 1")
    assert not out.exists()
