"""The data checked before it is trusted: duplicates, train/test overlap, conflicting labels, label balance, and
whether the splits look swapped or identical. One pass over both splits, pandas and the standard library only, so
it runs (and warns) before TensorFlow loads.

Two reviews are *exact* duplicates when their text is identical, and *near-exact* duplicates when their key
(near_key) is: the text with case, HTML tags (`<br />`), punctuation and whitespace ignored. Near-exact includes
exact. A duplicate is a copy beyond the first: a text found three times is one group and two duplicates.
Conflicting labels: one near-exact text with two or more labels among its reviews (in train, in test, or between).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from imdb_distilbert.data import dataset, reading
from imdb_distilbert.data.dataset import LABEL, TEXT
from imdb_distilbert.errors import UserError
from imdb_distilbert.files import spreadsheet_safe

CONFLICTS_CSV = "label_conflicts.csv"  # in the output folder when some texts have conflicting labels
NORMALISATION = "case, HTML tags, punctuation and whitespace ignored"
TAG = re.compile(r"</?[a-z][a-z0-9]*\b[^<>]*>", re.IGNORECASE)  # <br />, <i>, </p>; not "<3" or "a < b"
NOT_WORD = re.compile(r"[\W_]+")
ASCII_NOT_WORD = bytes(c if chr(c).isalnum() else 32 for c in range(256))  # bytes.translate: fast on ASCII text


def near_key(text: str) -> str:
    """`text` with case, HTML tags, punctuation and whitespace ignored: its words (letters and digits), lower case,
    one space apart. Reviews with the same key are near-exact duplicates."""
    text = (TAG.sub(" ", text) if "<" in text else text).casefold()
    if text.isascii():  # 9 in 10 IMDB reviews; the regex alone takes twice as long
        return " ".join(text.encode().translate(ASCII_NOT_WORD).decode().split())
    return NOT_WORD.sub(" ", text).strip()


@dataclass
class DataCheck:
    """What check() found: `facts` (for metrics.json), the reviews with conflicting labels (`conflicts`: one row
    per review, its text group, split, label and text), and which test reviews also occur in train (`overlap`,
    near-exact, a boolean Series over the test split's rows)."""

    facts: dict[str, Any]
    conflicts: pd.DataFrame
    overlap: pd.Series

    def table(self) -> pd.DataFrame:
        """The numbers as a table: a row per split and one for the test reviews also in train."""
        rows = {}
        for name in ("train", "test", "test also in train"):
            split = self.facts["overlap"] if name.startswith("test also") else self.facts[name]
            rows[name] = {"reviews": split["reviews"], "exact duplicates": split["exact_duplicates"],
                          "near-exact duplicates": split["near_duplicates"],
                          "texts with conflicting labels": split["conflicting_texts"], **split["labels"]}
        return pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)

    def lines(self) -> list[str]:
        """The warnings (overlap, conflicts, swapped or identical splits), one sentence each."""
        facts, found = self.facts, []
        overlap = facts["overlap"]
        if overlap["reviews"]:
            dropped = facts["dropped_test_overlap"]
            found.append(f"warning: {overlap['reviews']} test reviews ({overlap['exact_duplicates']} exact copies) "
                         "also occur in train, so the test scores count them as unseen; "
                         + ("dropped them from the test split (--drop-test-overlap)" if dropped else
                            "--drop-test-overlap removes them from the test split"))
        if len(self.conflicts):
            found.append(f"warning: {len(self.conflicts)} reviews share their text (near-exact) with a review of "
                         f"another label (train {facts['train']['conflicting_texts']}, test "
                         f"{facts['test']['conflicting_texts']}, between them {overlap['conflicting_texts']} texts); "
                         f"they are listed in {CONFLICTS_CSV}")
        splits = facts["splits"]
        if splits["identical"]:
            found.append("warning: the training and test splits hold the same reviews and labels, so the test scores "
                         "measure memory, not how the model does on new reviews")
        elif splits["swapped"]:
            found.append(f"warning: the splits look swapped: the training split holds {splits['train'] or 'other'} "
                         f"reviews, the test split {splits['test'] or 'other'} reviews")
        return found

    def report(self) -> str:
        """The section report.txt gets."""
        splits = self.facts["splits"]
        which = (f"splits: train is {splits['train'] or 'not an IMDB split'}, test is "
                 f"{splits['test'] or 'not an IMDB split'}; {'' if splits['identical'] else 'not '}identical, "
                 f"{'' if splits['swapped'] else 'not '}swapped")
        return "\n".join(["", f"data check (before training; near-exact: {NORMALISATION})",
                          self.table().to_string(), which, *self.lines(), ""])


def check(train: pd.DataFrame, test: pd.DataFrame) -> DataCheck:
    """Check the splits as read_split (or load_splits) gives them; see the module's docstring for the terms."""
    started = time.perf_counter()
    both = pd.DataFrame({"split": ["train"] * len(train) + ["test"] * len(test),
                         "label": [*train[LABEL], *test[LABEL]], "review": [*train[TEXT], *test[TEXT]]})
    # Each text and each near-exact key as a number (hashed once), so that counting and grouping are fast.
    both["exact"] = pd.factorize(both["review"])[0]
    both["key"] = pd.factorize(both["review"].map(near_key))[0]
    labels = both.groupby("key")["label"].nunique()  # per near-exact text, over both splits
    in_train, in_test = both[: len(train)], both[len(train):]
    facts: dict[str, Any] = {"train": split_facts(in_train), "test": split_facts(in_test)}

    exact, near = in_test["exact"].isin(set(in_train["exact"])), in_test["key"].isin(set(in_train["key"]))
    shared = in_test["key"][near].unique()
    facts["overlap"] = {"reviews": int(near.sum()), "exact_duplicates": int(exact.sum()),
                        "near_duplicates": int(near.sum()), "texts": len(shared),
                        "conflicting_texts": int((labels[shared] > 1).sum()),
                        "labels": in_test["label"][near].value_counts().to_dict()}

    conflicting = both[both["key"].map(labels) > 1].copy()
    conflicting.insert(0, "text_group", conflicting.groupby("key", sort=False).ngroup() + 1)
    conflicts = conflicting.sort_values(["text_group", "split"], kind="stable")[["text_group", "split", "label",
                                                                                 "review"]]
    digests = {name: df.attrs.get("content_sha256") or dataset.fingerprint(df)
               for name, df in (("train", train), ("test", test))}
    imdb = {digest: f"IMDB's {name.removesuffix('.xlsx')} split" for name, digest in dataset.IMDB_SHA256.items()}
    facts["splits"] = {"train": imdb.get(digests["train"]), "test": imdb.get(digests["test"]),
                       "identical": digests["train"] == digests["test"],
                       "swapped": digests["train"] == dataset.IMDB_SHA256["test.xlsx"]
                       or digests["test"] == dataset.IMDB_SHA256["train.xlsx"]}
    facts.update(normalisation=NORMALISATION, dropped_test_overlap=0,
                 seconds=round(time.perf_counter() - started, 2))
    return DataCheck(facts, conflicts.reset_index(drop=True), near.reset_index(drop=True))


def split_facts(split: pd.DataFrame) -> dict[str, Any]:
    """Duplicates, conflicting labels and labels of one split (check's rows of it)."""
    return {"reviews": len(split), "exact_duplicates": int(split["exact"].duplicated().sum()),
            "exact_groups": int((split["exact"].value_counts() > 1).sum()),
            "near_duplicates": int(split["key"].duplicated().sum()),
            "near_groups": int((split["key"].value_counts() > 1).sum()),
            "conflicting_texts": int((split.groupby("key")["label"].nunique() > 1).sum()),
            "labels": {c: int(n) for c, n in split["label"].value_counts().sort_index().items()}}


def conflicts_csv(conflicts: pd.DataFrame) -> str:
    """label_conflicts.csv, for people in a spreadsheet: a byte-order mark first (reading.BOM), and a review that
    starts like a formula shown as text (files.spreadsheet_safe)."""
    return reading.BOM + conflicts.assign(review=conflicts["review"].map(spreadsheet_safe)).to_csv(index=False)


def check_and_report(train: pd.DataFrame, test: pd.DataFrame,
                     drop_test_overlap: bool = False) -> tuple[pd.DataFrame, DataCheck]:
    """check() the splits and print what it found; with `drop_test_overlap`, drop the test reviews whose text
    (near-exact) occurs in train. Returns (the test split, the check)."""
    found = check(train, test)
    if drop_test_overlap:
        if found.overlap.all():
            raise UserError(f"every one of the {len(test)} test reviews also occurs in train, so --drop-test-overlap "
                            "would leave no test split; give a test split with reviews that training lacks.")
        test = test[~found.overlap.to_numpy()].reset_index(drop=True)
        found.facts["dropped_test_overlap"] = int(found.overlap.sum())
    facts = found.facts
    in_train, in_test, overlap = facts["train"], facts["test"], facts["overlap"]
    print(f"data check ({facts['seconds']:.1f} s): duplicates (exact, near-exact) train "
          f"{in_train['exact_duplicates']}, {in_train['near_duplicates']}; test {in_test['exact_duplicates']}, "
          f"{in_test['near_duplicates']}; test reviews "
          f"also in train {overlap['exact_duplicates']}, {overlap['near_duplicates']}; texts with conflicting labels "
          f"{found.conflicts['text_group'].nunique()}")
    for line in found.lines():
        print(line)
    return test, found
