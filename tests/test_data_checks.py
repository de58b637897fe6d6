"""The data checked before it is trusted (data/checks.py): duplicates, train/test overlap, conflicting labels, label
balance, swapped or identical splits; train.py's --drop-test-overlap."""

import io
import json

import pandas as pd
import pytest
import synthetic
from conftest import ROOT, TINY, run_train, unavailable

from imdb_distilbert.data import checks, dataset
from imdb_distilbert.errors import UserError

IMDB = ROOT.parent / "shared" / "data" / "imdb"


def frame(texts, labels):
    return pd.DataFrame({dataset.TEXT: texts, dataset.LABEL: labels})


@pytest.fixture
def planted():
    """20 training and 10 test reviews with planted duplicates, overlap and conflicting labels."""
    train = synthetic.reviews(20, seed=1)
    test = synthetic.reviews(10, seed=2)
    t, label = list(train[dataset.TEXT]), list(train[dataset.LABEL])
    other = {"pos": "neg", "neg": "pos"}
    train = pd.concat([train, frame(
        [t[0], t[0],  # two exact copies of one review
         "  " + t[1].upper().replace(" ", "<br /><br />", 1).replace(".", "!!"),  # a near-exact copy
         t[2],  # an exact copy with the other label: a conflict within train
         "=HYPERLINK(1) a formula", "=hyperlink(1), A FORMULA"],  # near-exact copies, two labels: a conflict
        [label[0], label[0], label[1], other[label[2]], "pos", "neg"])], ignore_index=True)
    test = pd.concat([test, frame(
        [t[3],  # in train, exact
         t[4].replace(" ", "  ") + "...",  # in train, near-exact
         t[5],  # in train, exact, with the other label: a conflict between the splits
         test[dataset.TEXT][0].lower()],  # a near-exact copy within test
        [label[3], label[4], other[label[5]], test[dataset.LABEL][0]])], ignore_index=True)
    return train, test, t, label


def test_near_key():
    assert checks.near_key("Great film!<br /><br />Loved it.") == checks.near_key("great film loved   it") \
        == "great film loved it"
    assert checks.near_key("I <3 it, <i>Amélie</i>'s café") == "i 3 it amélie s café"
    assert checks.near_key("if a < b and c > d") == "if a b and c d"  # not a tag: only punctuation


def test_planted_duplicates_overlap_and_conflicts(planted):
    train, test, t, label = planted
    found = checks.check(train, test)
    facts = found.facts
    assert facts["train"] == {"reviews": 26, "exact_duplicates": 3, "exact_groups": 2, "near_duplicates": 5,
                              "near_groups": 4, "conflicting_texts": 2, "labels": train["Sentiment"].value_counts()
                              .sort_index().to_dict()}
    assert {k: facts["test"][k] for k in ("reviews", "exact_duplicates", "near_duplicates", "near_groups",
                                          "conflicting_texts")} == {"reviews": 14, "exact_duplicates": 0,
                                                                    "near_duplicates": 1, "near_groups": 1,
                                                                    "conflicting_texts": 0}
    assert facts["overlap"] == {"reviews": 3, "exact_duplicates": 2, "near_duplicates": 3, "texts": 3,
                                "conflicting_texts": 1, "labels": test["Sentiment"][-4:-1].value_counts().to_dict()}
    assert list(found.overlap[found.overlap].index) == [10, 11, 12]
    assert facts["splits"] == {"train": None, "test": None, "identical": False, "swapped": False}
    assert facts["dropped_test_overlap"] == 0
    assert sum(n for n in facts["train"]["labels"].values()) == 26

    csv = checks.conflicts_csv(found.conflicts)
    assert csv.startswith("\ufeff")
    rows = pd.read_csv(io.StringIO(csv.removeprefix("\ufeff")))
    assert list(rows.columns) == ["text_group", "split", "label", "review"]
    groups = {g: sorted(zip(part["split"], part["label"], part["review"], strict=True))
              for g, part in rows.groupby("text_group")}
    other = {"pos": "neg", "neg": "pos"}
    assert sorted(groups.values()) == sorted([
        sorted([("train", label[2], t[2]), ("train", other[label[2]], t[2])]),
        sorted([("train", "pos", "'=HYPERLINK(1) a formula"), ("train", "neg", "'=hyperlink(1), A FORMULA")]),
        sorted([("train", label[5], t[5]), ("test", other[label[5]], t[5])]),
    ])

    report = found.report()
    assert "texts with conflicting labels" in report and "test also in train" in report
    assert "warning: 3 test reviews (2 exact copies) also occur in train" in report
    assert "warning: 6 reviews share their text" in report and checks.CONFLICTS_CSV in report


def test_check_and_report_warns_and_drops(planted, capsys):
    train, test, t, _ = planted
    kept, found = checks.check_and_report(train, test)
    assert kept is test and "--drop-test-overlap removes them" in capsys.readouterr().out
    kept, found = checks.check_and_report(train, test, drop_test_overlap=True)
    assert len(kept) == 11 and found.facts["dropped_test_overlap"] == 3
    assert not set(kept["Reviews"]) & {t[3], t[5]} and "dropped them from the test split" in capsys.readouterr().out
    with pytest.raises(UserError, match="would leave no test split"):
        checks.check_and_report(train, train, drop_test_overlap=True)


@pytest.fixture(scope="module")
def imdb():
    if not (IMDB / "train.xlsx").exists():
        unavailable(f"{IMDB} holds no IMDB splits")
    return dataset.read_split(IMDB / "train.xlsx"), dataset.read_split(IMDB / "test.xlsx")


def test_imdb_findings_and_swapped_or_identical_splits(imdb):
    """On IMDB's own splits, what docs/training.md says it finds; the splits given the other way round are
    swapped, and one split given twice is identical."""
    train, test = imdb
    facts = checks.check(train, test).facts
    counts = {name: (facts[name]["exact_duplicates"], facts[name]["near_duplicates"], facts[name]["conflicting_texts"])
              for name in ("train", "test", "overlap")}
    assert counts == {"train": (96, 99, 0), "test": (199, 202, 0), "overlap": (123, 123, 0)}
    assert facts["splits"] == {"train": "IMDB's train split", "test": "IMDB's test split", "identical": False,
                               "swapped": False}
    swapped = checks.check(test, train)
    assert swapped.facts["splits"] == {"train": "IMDB's test split", "test": "IMDB's train split",
                                       "identical": False, "swapped": True}
    assert "the splits look swapped" in swapped.report()
    same = checks.check(train, train)
    assert same.facts["splits"]["identical"] and "hold the same reviews and labels" in same.report()
    assert same.facts["overlap"]["reviews"] == len(train)


def test_train_py_drops_the_test_overlap(tmp_path):
    """--drop-test-overlap: exactly the test reviews whose text occurs in train are gone (n_test), the facts are in
    metrics.json and report.txt, and conflicting labels in label_conflicts.csv."""
    splits = synthetic.write_splits(tmp_path / "splits", 400, 200)
    train = pd.read_excel(splits / "train.xlsx")
    test = pd.read_excel(splits / "test.xlsx")
    copies = train[:7].copy()
    copies.loc[5:6, "Reviews"] = copies.loc[5:6, "Reviews"].str.upper() + "!"  # two near-exact copies
    copies.loc[6, "Sentiment"] = {"pos": "neg", "neg": "pos"}[copies.loc[6, "Sentiment"]]  # and a conflict
    pd.concat([test, copies], ignore_index=True).to_excel(splits / "test.xlsx", index=False)

    output = tmp_path / "out"
    result = run_train("--data-dir", splits, "--output", output, *TINY, "--epochs", 1, "--drop-test-overlap")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warning: 7 test reviews (5 exact copies) also occur in train" in result.stdout
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["n_test"] == 200 and metrics["args"]["drop_test_overlap"] is True
    check = metrics["data_check"]
    assert check["dropped_test_overlap"] == 7 and check["test"]["reviews"] == 207
    assert {k: check["overlap"][k] for k in ("reviews", "exact_duplicates", "near_duplicates", "conflicting_texts")} \
        == {"reviews": 7, "exact_duplicates": 5, "near_duplicates": 7, "conflicting_texts": 1}
    assert "data check" in (output / "report.txt").read_text()
    csv = (output / checks.CONFLICTS_CSV).read_text(encoding="utf-8")
    rows = pd.read_csv(output / checks.CONFLICTS_CSV, encoding="utf-8-sig")
    assert csv.startswith("\ufeff") and len(rows) == 2 and sorted(rows["split"]) == ["test", "train"]
    assert rows["label"].nunique() == 2
