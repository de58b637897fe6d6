"""Files of reviews (.xlsx, .csv, .txt); CSV as Excel and pandas save it, its encoding and separator found in the file.

Excel saves three kinds our users have: "CSV UTF-8" (UTF-8 starting with a byte-order mark, BOM),
"CSV" (on Windows, the Windows code page: Windows-1252 in the Americas and Western Europe, separated by
commas, or by semicolons where the decimal mark is a comma) and "Unicode Text" (UTF-16 with a BOM,
separated by tabs). pandas writes UTF-8 without a BOM. The encoding is read from the bytes: a BOM says
UTF-8 or UTF-16; otherwise UTF-8 if the bytes are valid UTF-8 (text in another encoding almost never
is), else Windows-1252. The separator is the one the header line uses most: tab, semicolon or comma.
When the encoding is not UTF-8, one line on standard error says which was assumed.

Every file of reviews is read here: read_table reads the training splits (data/dataset.py) and, through
read_texts, the reviews to classify (predict.py --file, and the reviews the exports check themselves on);
spark/score_spark.py finds its CSV input's encoding and separator here, and reads it with Spark's own reader.
"""

import codecs
import csv
import io
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imdb_distilbert.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon"}
TEXT_COLUMN = "Reviews"  # the column of the review text, in the IMDB splits and in files of reviews to classify
# Excel's "CSV UTF-8" starts with this byte-order mark, and Excel reads a CSV without it in the Windows code page
# (accents and curly quotes garbled): the CSV files written for people start with it too. pandas, Python's
# "utf-8-sig" codec and this module read it as no text.
BOM = "\ufeff"
WHY = {"UTF-16": "it starts with a UTF-16 byte-order mark, as Excel's \"Unicode Text\" does",
       "Windows-1252": "it is not valid UTF-8; Excel's \"CSV\" on Windows is Windows-1252"}


def encoding_of(data: bytes, path: str | os.PathLike, complete: bool = True) -> tuple[str, str]:
    """(Python codec, name for people) of the bytes `data` of the file `path`, or UserError if it is not
    text in UTF-8, UTF-16 with a BOM or Windows-1252. `complete`: `data` is the whole file, not its start."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "UTF-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16"
    fix = "save it from Excel as \"CSV UTF-8\" or \"Unicode Text\", or from pandas with to_csv()"
    if data.startswith(b"PK\x03\x04"):
        raise UserError(f"{path} is a zip file, such as an Excel workbook, not CSV text; "
                        f"give it its .xlsx name, or {fix}.")
    if b"\x00" in data:
        raise UserError(f"{path} is not CSV text: it holds NUL bytes "
                        f"(a binary file, or UTF-16 without a byte-order mark); {fix}.")
    try:
        data.decode("utf-8")
        return "utf-8", "UTF-8"
    except UnicodeDecodeError as error:
        if not complete and error.reason == "unexpected end of data":  # a character cut at the end of the sample
            return "utf-8", "UTF-8"
    try:
        data.decode("cp1252")
        return "cp1252", "Windows-1252"
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not text in UTF-8, UTF-16 or Windows-1252 "
                        f"(byte 0x{data[error.start]:02x} at offset {error.start} is none of them); {fix}.") from None


def separator_of(text: str) -> str:
    """The separator of CSV `text`: the one of tab, semicolon and comma its first line holds most (comma if none)."""
    header = text.split("\n", 1)[0]
    return max(SEPARATORS, key=header.count)  # ties, and none at all, go to the comma (first)


def say(path: str | os.PathLike, encoding: str, how: str) -> None:
    """Print the line that says how a file is read (`how`: "tab-separated", "one review per line"),
    unless it is UTF-8."""
    if encoding != "UTF-8":
        print(f"note: reading {path} as {encoding}, {how} ({WHY[encoding]})", file=sys.stderr, flush=True)


def decode(path: str | os.PathLike) -> tuple[str, str]:
    """The text of the file `path`, found as the module's docstring says, and its encoding's name."""
    data = Path(path).read_bytes()
    codec, name = encoding_of(data, path)
    text = data.decode(codec)
    if "\x00" in text:  # UTF-32 starts like UTF-16 little-endian, and decodes to NULs
        raise UserError(f"{path} is not text in UTF-8, UTF-16 or Windows-1252; save it from Excel as \"CSV UTF-8\".")
    return text, name


def read_csv(path: str | os.PathLike, blank_lines: bool = False) -> "pd.DataFrame":
    """The CSV file `path` as a DataFrame of strings (empty cells are NaN; "NA", "null" and the like stay text).
    `blank_lines`: a blank line is a row of empty cells (Excel saves an empty cell of a one-column sheet so), not
    skipped as pandas skips it."""
    return parse(path, *decode(path), blank_lines=blank_lines)


def parse(path: str | os.PathLike, text: str, encoding: str, blank_lines: bool = False) -> "pd.DataFrame":
    """The CSV `text` (decoded from the file `path`, whose encoding's name is `encoding`) as read_csv returns it."""
    import pandas as pd

    separator = separator_of(text)
    say(path, encoding, f"{SEPARATORS[separator]}-separated")
    # index_col=False: never take a first field as the row's index, as pandas does to a first row with a field too
    # many; it warns instead (and fails on such a later row), and check_fields then names the line.
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, na_values=[""],
                               index_col=False, skip_blank_lines=not blank_lines)
        except (pd.errors.ParserWarning, pd.errors.ParserError):
            check_fields(path, text, separator)
            raise


def check_fields(path: str | os.PathLike, text: str | Iterable[str], separator: str) -> None:
    """A UserError naming the first line of the CSV `text` (a str, or its lines, such as a file opened with
    newline="") with more fields than its header: an unquoted separator in a review, which would otherwise shift or
    drop text silently. (Fewer fields are empty cells, as pandas reads them.)"""
    rows = csv.reader(io.StringIO(text) if isinstance(text, str) else text, delimiter=separator)
    header = next(rows, [])
    for row in rows:
        if len(row) > len(header):
            raise UserError(f"{path} line {rows.line_num} has {len(row)} fields but its header has {len(header)} "
                            f"(a {SEPARATORS[separator]} inside a review that is not in double quotes?); quote such "
                            "reviews, as "
                            "Excel and pandas do when they save a CSV.")


def first_blank_line(text: str, separator: str) -> int | None:
    """The number of the first blank line of the CSV `text` that has rows after it (Excel saves an empty cell of a
    one-column sheet so; Spark's reader skips it), or None."""
    rows = csv.reader(io.StringIO(text), delimiter=separator)
    blank = None
    for row in rows:
        if not row and blank is None:
            blank = rows.line_num
        elif row and blank is not None:
            return blank
    return None


def read_table(path: str | os.PathLike, text_column: str | None = None, blank_lines: bool = False) -> "pd.DataFrame":
    """The file of reviews `path` as a DataFrame of strings (empty cells are NaN): CSV (a name ending in .csv) as
    read_csv reads it (`blank_lines` as there), anything else as an Excel workbook; with `text_column`, a .txt file
    as read_text reads it. Errors are those of the readers: each caller says in its own words what went wrong."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_csv(path, blank_lines)  # UTF-8, UTF-16 or Windows-1252, as Excel saves it
    if suffix == ".txt" and text_column is not None:
        return read_text(path, text_column, blank_lines)
    return pd.read_excel(path, dtype=str)


def read_text(path: str | os.PathLike, column: str, blank_lines: bool = False) -> "pd.DataFrame":
    """The .txt file `path`, decoded as read_csv does: one review per line, as a DataFrame of the one `column`;
    or, if its first line is a tab-separated header naming `column` (Excel's "Unicode Text" save), the table."""
    import pandas as pd

    text, encoding = decode(path)
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    if len(header) > 1 and column in header:  # Excel's "Unicode Text" save: a table with a header line
        return parse(path, text, encoding, blank_lines)
    say(path, encoding, "one review per line")
    return pd.DataFrame({column: text.splitlines()}, dtype=object)


def read_texts(path: str | os.PathLike, column: str | Sequence[str] = TEXT_COLUMN,
               keep_empty: bool = False) -> list[str]:
    """The non-empty reviews in an .xlsx/.csv file's `column`, or in a .txt file's lines, as a list of str
    (read by read_table), stripped; a UserError in one sentence if there are none, or the file cannot be read.
    `column` may be a list of names: the first of them that the file has (cli.text_columns).
    `keep_empty`: one text per row, "" for an empty review (blank lines included), so that answers line up with the
    rows; blank rows after the last one with anything in it are not rows."""
    import pandas as pd

    columns = [column] if isinstance(column, str) else list(column)
    column = columns[0]

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give an .xlsx, .csv or .txt file of reviews.")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".xlsx", ".xls"):
        raise UserError(f"{path} is not an .xlsx, .csv or .txt file; save the reviews in one of those formats.")
    try:
        frame = read_table(path, text_column=column, blank_lines=keep_empty)
        column = next((c for c in columns if c in frame.columns), column)
        texts = column_of(without_trailing_blank_rows(frame), column, path)
    except UserError:
        raise
    except pd.errors.EmptyDataError:
        texts = []
    except Exception as error:  # openpyxl, zipfile, pandas and the codecs each raise their own kinds
        raise UserError(f"could not read {path} ({error}); give an .xlsx, .csv or .txt file of reviews.") from None
    if not non_empty(texts):
        raise UserError(f"{path} has no reviews to classify"
                        + (f" in its {column} column." if suffix != ".txt" else "."))
    return [t.strip() for t in texts] if keep_empty else non_empty(texts)


def without_trailing_blank_rows(frame: "pd.DataFrame") -> "pd.DataFrame":
    """`frame` up to its last row with a cell that is not empty or blank (a file's trailing blank lines)."""
    filled = frame.fillna("").astype(str).apply(lambda column: column.str.strip() != "").any(axis=1)
    return frame[filled[::-1].cummax()[::-1]]


def column_of(frame: "pd.DataFrame", column: str, path: str | os.PathLike) -> list:
    """The texts of `frame`'s `column` (empty cells as ""), or UserError naming the columns it has."""
    if column not in frame.columns:
        raise UserError(f"{path} has no {column} column (it has: {', '.join(map(str, frame.columns)) or 'none'}); "
                        "name the text column with --column.")
    return frame[column].fillna("").tolist()


def non_empty(texts: Iterable[str]) -> list[str]:
    """`texts` stripped, without the empty ones."""
    return [t.strip() for t in texts if t and t.strip()]
