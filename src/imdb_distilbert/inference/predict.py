"""Classify movie reviews with a saved predictor: texts on the command line, a file, or standard input.

    python src/predict.py --model models/distilbert-imdb "great film" "awful"
    python src/predict.py --model models/distilbert-imdb --file reviews.xlsx --out predictions.csv
    cat reviews.txt | python src/predict.py --model models/distilbert-imdb - --json
    python src/predict.py --model models/distilbert-imdb --backend onnx-int8 --file reviews.csv   # after src/export.py
    python src/predict.py --model models/distilbert-imdb --explain "great film, awful ending"     # and the top words

Every backend prints and writes the same thing: the text, the predicted label and one probability per
class (columns text, label, prob_neg, prob_pos for IMDB; prob_<class> for each class of a model trained on other
data), one row per review given, in order: an empty review gets a row with no label and no probabilities. With
--min-confidence P, a review whose top probability is below P is labelled "uncertain" instead of forced into a
class. The onnx backends need `python src/export.py` once, and then neither TensorFlow nor ktrain. --explain adds
top_words: the words that pushed the prediction most, each with its score (positive: towards the predicted label;
see inference/explain.py and docs/explain.md).

--check answers, in one line, whether this environment reproduces the saved model: it scores the few reviews the
folder stores with their answers (self_check.json, written when the predictor was saved; src/export.py adds the
ONNX models' answers) with --backend, and exits 0 when every probability is within 1e-4 of the stored one (1e-3 for
onnx-int8, against the int8 model's own answers at export), else 1, naming the packages whose versions differ
from those the answers were stored with. A folder saved before self-checks has no answers to compare with: it says
so and exits 1; it still predicts as before.

Load only predictors you trust: the ktrain backend unpickles the folder's tf_model.preproc, and a pickle
can run code. The onnx backends unpickle nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from imdb_distilbert import cli, compat, files
from imdb_distilbert.data import reading, truncation
from imdb_distilbert.data.reading import read_texts
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import backends
from imdb_distilbert.inference.backends import rows

TEXT_COLUMN = reading.TEXT_COLUMN


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", metavar="TEXT",
                   help="reviews to classify; - reads standard input, one review per line")
    cli.add_model_option(p)
    p.add_argument("--file", type=Path, metavar="PATH", help="reviews to classify: .xlsx or .csv (one review per row "
                   "in --column; CSV in UTF-8, UTF-16 or Windows-1252, as Excel saves it) "
                   "or .txt (one review per line)")
    p.add_argument("--column", metavar="NAME", help="the text column of an .xlsx or .csv --file (default: the text "
                   f"column the predictor was trained on, train.py --text-column, else {TEXT_COLUMN})")
    p.add_argument("--out", type=Path, metavar="PATH", help="write the predictions to this file instead of printing "
                   "them: an Excel workbook if it ends in .xlsx, else CSV, starting with a UTF-8 byte-order mark so "
                   "that Excel reads it as UTF-8 (or JSON lines with --json)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: one object per review with text, label and probabilities")
    p.add_argument("--keep-formulas", action="store_true",
                   help="CSV for programs: texts that start with = + - @ as they are, and no byte-order mark; by "
                   "default such a cell gets a leading apostrophe, so a spreadsheet shows it as text instead of "
                   "running it as a formula")
    p.add_argument("--check", action="store_true", help="instead of classifying: say in one line whether this "
                   "environment reproduces the saved model (the answers stored in the folder's self_check.json, "
                   "within 1e-4; 1e-3 for onnx-int8), naming the packages that differ when it does not; exit 0 "
                   "when it does, 1 when not or when the folder stores no answers")
    p.add_argument("--backend", choices=backends.BACKENDS, default="ktrain",
                   help="ktrain (TensorFlow, the default), or onnx / onnx-int8 (ONNX Runtime; run src/export.py first)")
    p.add_argument("--batch-size", type=int, metavar="N", default=32, help="reviews per model call (default: 32)")
    cli.add_reading_options(p)
    p.add_argument("--min-confidence", type=float, metavar="P", help=f"label a review '{backends.UNCERTAIN}' "
                   "instead of a class when its top probability is below P (its probabilities are still given); "
                   "the training report's accuracy-against-coverage table says which P keeps how many reviews")
    p.add_argument("--explain", action="store_true", help="add each review's top words (integrated gradients, "
                   "inference/explain.py; about 7x the time of scoring alone; ktrain backend only)")
    p.add_argument("--explain-class", metavar="CLASS", help="with --explain: the words for and against this class "
                   "(one of the model's), not the predicted one")
    p.add_argument("--top-words", type=int, metavar="N", default=5,
                   help="how many words --explain lists per review (default: 5)")
    args = p.parse_args(argv)
    if args.check and (args.texts or args.file or args.out or args.explain):
        p.error("--check scores the folder's own stored reviews: give it no reviews, --file, --out or --explain")
    if args.check:
        return args
    if not args.texts and not args.file:
        p.error("give reviews to classify: texts, - for standard input, or --file PATH")
    if args.texts and args.file:
        p.error("give either texts (or -) or --file, not both")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.explain and args.backend != "ktrain":
        p.error("--explain needs the ktrain backend (it takes gradients through the TensorFlow model)")
    if args.explain_class and not args.explain:
        p.error("--explain-class goes with --explain")
    if args.top_words < 1:
        p.error("--top-words must be at least 1")
    return args


def gather_texts(args: argparse.Namespace) -> list[str]:
    """Every review given, stripped, in order: "" for an empty one, which gets a row of its own in the output (blank
    lines at the end of standard input or a file are not reviews)."""
    if args.file:
        return read_texts(args.file, cli.text_columns(args.model, args.column), keep_empty=True)
    texts = []
    for text in args.texts:
        texts += stdin_lines() if text == "-" else [text.strip()]
    if not any(texts):
        raise UserError("there are no reviews to classify (the texts given were empty); "
                        "give at least one non-empty text.")
    return texts


def stdin_lines() -> list[str]:
    """The lines of standard input, stripped, up to the last one with text."""
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def with_empty_rows(texts: Sequence[str], predictions: Iterable[dict], classes: Sequence[str],
                    explained: bool = False) -> list[dict]:
    """One row per text: the next of `predictions` (made for the non-empty texts, in order) for a text; for an empty
    one a row of the same fields with no label and no probabilities (None: empty in CSV, null in JSON)."""
    empty = {"text": "", "label": None, **{f"prob_{c}": None for c in classes}}
    empty |= {"top_words": []} if explained else {}
    predictions = iter(predictions)
    return [next(predictions) if text else empty for text in texts]


def with_top_words(rows: Iterable[dict], explanations: Iterable[dict], n: int) -> Iterator[dict]:
    """`rows` with top_words added: the `n` words with the largest scores towards (or, negative, away
    from) the predicted label (or the --explain-class), as [word, score] pairs."""
    from imdb_distilbert.inference import explain

    for row, found in zip(rows, explanations, strict=True):
        yield {**row, "top_words": [list(pair) for pair in explain.top_words(found, n)]}


def words_text(pairs: Iterable[Sequence[str | float]]) -> str:
    """top_words as one CSV cell or terminal column: 'great +1.23; awful -0.41'."""
    return "; ".join(f"{word} {score:+.2f}" for word, score in pairs)


def format_rows(rows: Iterable[dict], as_json: bool, for_terminal: bool = False, formulas: bool = False) -> str:
    """The predictions as JSON lines, CSV, or (for_terminal) aligned columns with shortened texts. In CSV, texts that
    start like a formula are made safe to open in a spreadsheet (files.spreadsheet_safe) unless `formulas`."""
    rows = list(rows)
    if as_json:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    rows = [{**r, "top_words": words_text(r["top_words"])} if "top_words" in r else r for r in rows]
    if not for_terminal and not formulas:
        rows = [{**r, **{c: files.spreadsheet_safe(r[c]) for c in ("text", "top_words") if c in r}} for r in rows]
    if for_terminal:  # label and probabilities first, so the columns line up; long texts shortened
        columns = [c for c in rows[0] if c not in ("text", "top_words")]
        extra = ["top_words"] if "top_words" in rows[0] else []
        lines = ["\t".join(columns + extra + ["text"])]
        for r in rows:
            text = " ".join(r["text"].split()) or "(empty: not scored)"  # one line per review
            text = text if len(text) <= 80 else text[:77] + "..."
            scores = [f"{r[c]:.4f}" if r[c] is not None else "-" for c in columns[1:]]
            lines.append("\t".join([r["label"] or "-"] + scores + [r[c] for c in extra] + [text]))
        return "\n".join(lines) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def workbook(rows: Iterable[dict], formulas: bool = False) -> bytes:
    """The predictions as an Excel workbook (.xlsx bytes): the CSV's columns and cells, one sheet."""
    import pandas as pd
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # control characters a workbook cannot hold

    table = pd.read_csv(io.StringIO(format_rows(rows, as_json=False, formulas=formulas)), dtype={"label": str},
                        keep_default_na=False, na_values=[""])  # an empty cell stays empty; "NA" stays text
    for column in ("text", "top_words"):
        if column in table:
            table[column] = table[column].str.replace(ILLEGAL_CHARACTERS_RE, "", regex=True)
    out = io.BytesIO()
    table.to_excel(out, index=False, sheet_name="predictions")
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.backend == "ktrain" and argv is None:  # a command (src/predict.py), not a call from Python
        compat.use_fast_malloc()  # re-runs this command with tcmalloc preloaded, before standard input is read
    backends.check_predictor_folder(args.model)
    if args.check:
        return check(args)
    if args.out and args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file path such as predictions.csv.")
    if args.out and args.file and args.out.resolve() == args.file.resolve():
        raise UserError(f"--out {args.out} is the --file being read, which the predictions would replace; "
                        "write them to another file.")
    texts = gather_texts(args)  # bad input is reported before any model loads
    model = backends.load(args.model, args.backend, args.batch_size, **cli.reading_of(args))
    backends.check_min_confidence(args.min_confidence, model.classes)
    if args.explain_class and args.explain_class not in model.classes:
        raise UserError(f"--explain-class {args.explain_class} is not one of the model's classes; "
                        f"name one of: {', '.join(model.classes)}.")

    from tqdm.auto import tqdm

    reviews = [t for t in texts if t]  # the empty ones get their rows back below, unscored
    with tqdm(total=len(reviews), unit="review", desc=f"scoring ({args.backend})", file=sys.stderr,
              disable=len(reviews) <= args.batch_size) as bar:
        proba = model.predict_proba(reviews, done=bar.update)
    predictions = list(rows(reviews, proba, model.classes, args.min_confidence))
    if args.explain:
        from imdb_distilbert.inference import explain

        with tqdm(total=len(reviews), unit="review", desc="explaining", file=sys.stderr) as bar:
            found = explain.explain(model.predictor, reviews, cut=truncation.saved_settings(args.model)[1],
                                    done=bar.update, label=args.explain_class)
        predictions = list(with_top_words(predictions, found, args.top_words))
    predictions = with_empty_rows(texts, predictions, model.classes, explained=args.explain)
    empty = len(texts) - len(reviews)
    no_text = f"{empty} {'row' if empty == 1 else 'rows'} with no text (no label, no probabilities)"
    if args.out:
        if args.out.suffix.lower() == ".xlsx" and not args.json:
            files.atomic_file(args.out, workbook(predictions, formulas=args.keep_formulas))
        else:
            content = format_rows(predictions, args.json, formulas=args.keep_formulas)
            for_people = not args.json and not args.keep_formulas  # --keep-formulas and JSON are for programs
            files.atomic_file(args.out, reading.BOM + content if for_people else content)
        shown = [*model.classes, *([backends.UNCERTAIN] if args.min_confidence else [])]
        counts = ", ".join(f"{c} {sum(r['label'] == c for r in predictions)}" for c in shown)
        print(f"wrote {len(reviews)} predictions ({counts})" + (f" and {no_text}" if empty else "")
              + f" to {args.out}")
    else:
        sys.stdout.write(format_rows(predictions, args.json, for_terminal=True))
        if empty:
            print(f"note: {no_text}", file=sys.stderr)


def check(args: argparse.Namespace) -> None:
    """--check: the one line of inference/selfcheck.py; exit 1 unless this environment reproduces the stored answers."""
    from imdb_distilbert.inference import selfcheck

    if args.backend != "ktrain":
        backends.check_onnx_export(args.model, args.backend)  # one sentence, before anything loads
    result = selfcheck.check(args.model, args.backend, batch_size=args.batch_size)
    print(result.line)
    if not result.reproduced:
        sys.exit(1)
