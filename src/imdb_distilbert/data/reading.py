"""CSV files of reviews, read as Excel and pandas save them: the encoding and the separator found from the file.

Excel saves three kinds our users have: "CSV UTF-8" (UTF-8 starting with a byte-order mark, BOM),
"CSV" (on Windows, the Windows code page: Windows-1252 in the Americas and Western Europe, separated by
commas, or by semicolons where the decimal mark is a comma) and "Unicode Text" (UTF-16 with a BOM,
separated by tabs). pandas writes UTF-8 without a BOM. The encoding is read from the bytes: a BOM says
UTF-8 or UTF-16; otherwise UTF-8 if the bytes are valid UTF-8 (text in another encoding almost never
is), else Windows-1252. The separator is the one the header line uses most: tab, semicolon or comma.
When the encoding is not UTF-8, one line on standard error says which was assumed.

src/predict.py (--file), src/dataset.py (CSV splits) and src/score_spark.py (CSV input, through Spark's
own reader) all read CSV through here.
"""

import codecs
import io
import sys
from pathlib import Path

from imdb_distilbert.errors import UserError

SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon"}
WHY = {"UTF-16": "it starts with a UTF-16 byte-order mark, as Excel's \"Unicode Text\" does",
       "Windows-1252": "it is not valid UTF-8; Excel's \"CSV\" on Windows is Windows-1252"}


def encoding_of(data, path, complete=True):
    """(Python codec, name for people) of the bytes `data` of the file `path`, or UserError if it is not
    text in UTF-8, UTF-16 with a BOM or Windows-1252. `complete`: `data` is the whole file, not its start."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "UTF-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16"
    fix = "save it from Excel as \"CSV UTF-8\" or \"Unicode Text\", or from pandas with to_csv()"
    if data.startswith(b"PK\x03\x04"):
        raise UserError(f"{path} is a zip file, such as an Excel workbook, not CSV text; give it its .xlsx name, or {fix}.")
    if b"\x00" in data:
        raise UserError(f"{path} is not CSV text: it holds NUL bytes (a binary file, or UTF-16 without a byte-order mark); {fix}.")
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
        raise UserError(f"{path} is not text in UTF-8, UTF-16 or Windows-1252 (byte 0x{data[error.start]:02x} at offset "
                        f"{error.start} is none of them); {fix}.") from None


def separator_of(text):
    """The separator of CSV `text`: the one of tab, semicolon and comma its first line holds most (comma if none)."""
    header = text.split("\n", 1)[0]
    return max(SEPARATORS, key=header.count)  # ties, and none at all, go to the comma (first)


def say(path, encoding, how):
    """Print the line that says how a file is read (`how`: "tab-separated", "one review per line"), unless it is UTF-8."""
    if encoding != "UTF-8":
        print(f"note: reading {path} as {encoding}, {how} ({WHY[encoding]})", file=sys.stderr, flush=True)


def decode(path):
    """The text of the file `path`, found as the module's docstring says, and its encoding's name."""
    data = Path(path).read_bytes()
    codec, name = encoding_of(data, path)
    text = data.decode(codec)
    if "\x00" in text:  # UTF-32 starts like UTF-16 little-endian, and decodes to NULs
        raise UserError(f"{path} is not text in UTF-8, UTF-16 or Windows-1252; save it from Excel as \"CSV UTF-8\".")
    return text, name


def read_csv(path):
    """The CSV file `path` as a DataFrame of strings (empty cells are NaN; "NA", "null" and the like stay text)."""
    return parse(path, *decode(path))


def parse(path, text, encoding):
    """The CSV `text` (decoded from the file `path`, whose encoding's name is `encoding`) as read_csv returns it."""
    import pandas as pd

    separator = separator_of(text)
    say(path, encoding, f"{SEPARATORS[separator]}-separated")
    return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, na_values=[""])
