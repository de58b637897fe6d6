"""The training and test splits: read, check, sample, and download IMDB's when they are missing.

A split is an Excel (or CSV) file with a text column and a label column: IMDB's are `Reviews` and `Sentiment`
(`pos`/`neg`); a user's own may be called anything (--text-column, --label-column) and hold two or more classes.
Everything here is pandas only, so bad input is reported before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imdb_distilbert import network
from imdb_distilbert.compat import plain_strings
from imdb_distilbert.data import reading
from imdb_distilbert.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

TEXT, LABEL = "Reviews", "Sentiment"
SPLITS = ("train.xlsx", "test.xlsx")
ROWS_PER_SPLIT = 25_000  # what a complete download of each split holds
# The tutorials' copy of the splits on GitHub; IMDB_DATA_URL points elsewhere (a mirror, or the tests' server).
DATA_URL = os.environ.get(
    "IMDB_DATA_URL", "https://raw.githubusercontent.com/laxmimerit/IMDB-Movie-Reviews-Large-Dataset-50k/master/"
)
# What the IMDB splits hold: SHA-256 digests of their content (fingerprint: every row's review and label, in any
# order), measured on the Large Movie Review Dataset v1.0 in this layout (25,000 rows each). A download must match,
# so poisoned, truncated or swapped data is refused. The content, not the file's bytes: the same rows saved by
# another program (or another openpyxl) give other bytes. IMDB_DATA_SHA256="train.xlsx=HEX,test.xlsx=HEX" pins
# others, for other data served at IMDB_DATA_URL (the tests' server).
IMDB_SHA256 = {
    "train.xlsx": "753861afd6c488dc9d598ed623c390886fa969992092004ca7e7de15e0ee5ca1",
    "test.xlsx": "f791217d827ad00ce9ea16422792613f7abc1ae50aac9172fa221fedce39a0d3",
}
WHERE_TO_POINT = "pass --data-dir DIR (a folder with train.xlsx and test.xlsx) or --train PATH --test PATH"


def read_split(path: str | os.PathLike, text_column: str = TEXT, label_column: str = LABEL) -> pd.DataFrame:
    """Read one split, check its columns and labels, and drop empty reviews (reported).

    The text and label columns (`text_column`, `label_column`: train.py's --text-column and --label-column) come
    back as the columns TEXT and LABEL, whatever the file calls them. Labels are text: a whole number written as a
    decimal ("4.0", as some spreadsheets save star ratings) becomes "4".
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; {WHERE_TO_POINT}.")
    try:
        df = reading.read_table(path)  # .xlsx, or CSV in UTF-8, UTF-16 or Windows-1252, as Excel saves it
    except UserError:
        raise
    except Exception as error:  # openpyxl, zipfile and pandas each raise their own kinds
        raise UserError(f"could not read {path} as a spreadsheet ({error}); "
                        f"give an .xlsx or .csv file with {text_column} and {label_column} columns.") from None

    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)} column (it has: {', '.join(map(str, df.columns))}); "
                        f"name the text column with --text-column and the label column with --label-column "
                        f"(now {text_column} and {label_column}).")
    df = df[[text_column, label_column]].copy()
    df.columns = [TEXT, LABEL]
    df[LABEL] = df[LABEL].str.strip().str.replace(r"^(-?\d+)\.0*$", r"\1", regex=True)
    if df[LABEL].isna().any() or (df[LABEL] == "").any():
        rows = df.index[df[LABEL].isna() | (df[LABEL] == "")]
        raise UserError(f"{path} has {len(rows)} rows with no {label_column} label (first at spreadsheet row "
                        f"{rows[0] + 2}); label them or delete them.")

    empty = df[TEXT].isna() | (df[TEXT].str.strip() == "")
    df = df[~empty].reset_index(drop=True)
    df[TEXT] = plain_strings(df[TEXT])
    df[LABEL] = plain_strings(df[LABEL])
    df.attrs = {"path": str(path), "dropped_empty": int(empty.sum()), "label_column": label_column}
    if df.empty:
        raise UserError(f"{path} has no non-empty reviews in its {text_column} column.")
    return df


MAX_CLASSES = 100  # more distinct labels than this is a text column, not a label column


def class_order(labels: Iterable[str]) -> list[str]:
    """The classes of `labels` in the order the model's outputs take: by number when every label is a whole number
    (star ratings: 1, 2, ..., 10), else as ktrain sorts them (as text: neg, pos)."""
    classes = sorted(set(labels))
    if all(re.fullmatch(r"-?\d+", c) for c in classes):
        return sorted(classes, key=int)
    return classes


def check_labels(train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """Two or more classes in train, each with at least two reviews, and no class in test that train lacks.
    Returns the classes, in class_order."""
    column = train.attrs.get("label_column", LABEL)
    classes = class_order(train[LABEL])
    if len(classes) < 2:
        raise UserError(f"{train.attrs['path']} has one label value ({classes[0]}) in its {column} column; "
                        "the training split needs reviews of at least two classes.")
    if len(classes) > MAX_CLASSES:
        raise UserError(f"{train.attrs['path']} has {len(classes)} different values in its {column} column, more "
                        f"than the {MAX_CLASSES} classes taken; is --label-column the column of the labels?")
    counts = train[LABEL].value_counts()
    rare = [c for c in classes if counts[c] < 2]
    if rare:
        raise UserError(f"{train.attrs['path']} has a single review of class {', '.join(rare[:10])}; give each class "
                        "at least two training reviews (better, dozens), or delete that class's rows.")
    unknown = sorted(set(test[LABEL]) - set(classes))
    if unknown:
        raise UserError(f"{test.attrs['path']} has labels the training data does not ({', '.join(unknown[:10])}); "
                        f"use the same {column} values ({', '.join(classes[:10])}) in both splits.")
    return classes


def class_weights(train: pd.DataFrame, classes: Sequence[str]) -> dict[int, float]:
    """--class-weight balanced: each class's weight in the loss, by its position in `classes` (as ktrain and Keras
    take it): n / (k * n_class), scikit-learn's "balanced", so that every class weighs the same in total."""
    counts = train[LABEL].value_counts()
    return {i: len(train) / (len(classes) * int(counts.get(c, 0) or 1)) for i, c in enumerate(classes)}


def sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A stratified random `n` rows of `df` (all rows, shuffled, when `n` is None)."""
    if n is None or n == len(df):
        return df.sample(frac=1, random_state=seed).reset_index(drop=True)
    if n > len(df):
        raise UserError(f"--sample {n} is larger than {df.attrs['path']}, which has {len(df)} usable reviews; "
                        f"use --sample {len(df)} or less.")
    classes = df[LABEL].nunique()
    if n < classes or df[LABEL].value_counts().min() < 2:  # too few to stratify: a plain random sample
        return df.sample(n=n, random_state=seed).reset_index(drop=True)
    from sklearn.model_selection import train_test_split  # here: scikit-learn takes a second to import

    picked, _ = train_test_split(df, train_size=n, stratify=df[LABEL], random_state=seed)
    return picked.reset_index(drop=True)


def load_splits(train_path: str | os.PathLike, test_path: str | os.PathLike, n_sample: int | None = None,
                seed: int = 42, text_column: str = TEXT,
                label_column: str = LABEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and check both splits; optionally sample each. Returns (train_df, test_df), with the text in the TEXT
    column and the label in LABEL."""
    train, test = read_split(train_path, text_column, label_column), read_split(test_path, text_column, label_column)
    check_labels(train, test)
    for df in (train, test):
        df.attrs["content_sha256"] = fingerprint(df)  # metrics.json records it: which data a run learnt from
        if df.attrs["dropped_empty"]:
            print(f"dropped {df.attrs['dropped_empty']} empty reviews from {df.attrs['path']}")
    return sample(train, n_sample, seed), sample(test, n_sample, seed)  # pandas keeps .attrs


def split_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a stratified `fraction` of `train` off as validation data. Returns (train, val)."""
    n_val = round(len(train) * fraction)
    classes = train[LABEL].nunique()
    if n_val < classes or len(train) - n_val < classes:
        raise UserError(f"--val-split {fraction} leaves too few reviews on one side of {len(train)} training reviews; "
                        "use a fraction between about 0.05 and 0.5.")
    from sklearn.model_selection import train_test_split

    stratify = train[LABEL] if train[LABEL].value_counts().min() >= 2 else None
    kept, val = train_test_split(train, test_size=n_val, stratify=stratify, random_state=seed)
    return kept.reset_index(drop=True), val.reset_index(drop=True)


def describe(train: pd.DataFrame, test: pd.DataFrame) -> str:
    """One line on the data a run uses."""
    counts = train[LABEL].value_counts()
    counts = ", ".join(f"{label} {counts[label]}" for label in class_order(counts.index))
    return f"train: {len(train)} reviews, test: {len(test)} reviews ({counts} in train)"


def download_splits(data_dir: str | os.PathLike, url: str = DATA_URL) -> None:
    """Download whichever of train.xlsx/test.xlsx is missing from `data_dir`.

    Each file goes to a `.part` file first and is checked (readable, both columns, two labels, 25,000 rows, and
    the pinned content digest); only then does it take its final name, so an interrupted, broken or tampered
    download never leaves a file that looks complete. Without a network, it says so within seconds (network.py).
    """
    from tqdm.auto import tqdm

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    missing = [name for name in SPLITS if not (data_dir / name).exists()]
    if missing:
        # Any answer will do: HTTP errors are reported below.
        _, why = network.answer(url.rstrip("/") + "/" + missing[0])
        if why:
            raise UserError(f"could not download {url.rstrip('/')}/{missing[0]} ({why}); connect to the internet, "
                            f"or {WHERE_TO_POINT}.")
    for name in missing:
        part = data_dir / (name + ".part")
        source = url.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(source, timeout=30) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}") as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size != total:
                raise UserError(f"the download of {source} stopped early ({part.stat().st_size} of {total} bytes); "
                                f"run again, or {WHERE_TO_POINT}.")
            check_download(part, name, source)
            os.replace(part, data_dir / name)
        except (urllib.error.URLError, OSError) as error:
            reason = f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError) \
                else getattr(error, "reason", error)
            raise UserError(f"could not download {source} ({reason}); connect to the internet, "
                            f"or {WHERE_TO_POINT}.") from None
        finally:
            part.unlink(missing_ok=True)


def check_download(part: Path, name: str, source: str) -> None:
    """A downloaded split (`name`, from `source`) must read as a complete split and hold what the pinned digest
    says (IMDB_SHA256)."""
    try:
        df = read_split(part)
    except UserError as error:
        raise UserError(f"the downloaded file is not a usable IMDB split: {error}") from None
    rows = len(df) + df.attrs["dropped_empty"]  # the real splits each hold one empty review
    if rows != ROWS_PER_SPLIT or df[LABEL].nunique() != 2:
        raise UserError(f"the downloaded file has {rows} rows and {df[LABEL].nunique()} labels, "
                        f"not {ROWS_PER_SPLIT} and 2; run again later, or {WHERE_TO_POINT}.")
    pinned, found = pinned_digests(), fingerprint(df)
    if found != pinned.get(name):
        other = next((n for n, digest in pinned.items() if digest == found), None)
        what = f"the {other} split's reviews" if other else "other reviews or labels than IMDB's"
        raise UserError(f"{source} holds {what} (content SHA-256 {found[:16]}..., pinned "
                        f"{pinned.get(name, 'none')[:16]}...), so it was not kept; the source may have changed or been "
                        f"tampered with: {WHERE_TO_POINT}.")


def fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of a split's content as read_split gives it: each row's label and review, in any order."""
    pairs = zip(df[TEXT], df[LABEL], strict=True)
    rows = sorted(hashlib.sha256(f"{label}\t{text}".encode()).digest() for text, label in pairs)
    return hashlib.sha256(b"".join(rows)).hexdigest()


def pinned_digests() -> dict[str, str]:
    """The content digests downloads must have: IMDB_SHA256, or IMDB_DATA_SHA256's "NAME=HEX,..." when set."""
    setting = os.environ.get("IMDB_DATA_SHA256")
    if not setting:
        return IMDB_SHA256
    return dict(item.strip().split("=", 1) for item in setting.split(",") if item.strip())
