"""Training learns real text: a pretrained model fine-tuned by src/train.py on a few hundred real IMDB reviews.

The tiny random-weight model of the other tests learns the synthetic reviews in every run, so it cannot show that
training learns real text: a training path that learnt nothing on real reviews (it once sat on one class on the
default seed) passed them all. Here train.py, as a user runs it, fine-tunes the pretrained stand-in
(../shared/pretrained/build.sh: MiniLM-L6, 22.7M parameters, re-expressed exactly as a DistilBERT; not DistilBERT)
on real reviews of ../shared/data/imdb, in both padding modes, and must score well above chance on held-out real
reviews. The same run on shuffled labels must not: that shows the bar tells learning from its absence.

Margins over seeds and kernels: docs/testing.md ("Real text").
"""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, SEED, at_least, at_most, run_train, unavailable

SHARED = ROOT.parent / "shared"
BUILD = SHARED / "pretrained" / "build.sh"
IMDB = SHARED / "data" / "imdb"
# 600 training reviews, 2 epochs at maxlen 64 keeping each review's end (--truncation tail, where reviews give their
# verdict) in batches of 16 at lr 5e-5 (76 steps), 200 held-out reviews: see docs/testing.md ("Real text") for what it
# gave over seeds. maxlen 128 with the head learnt as well (0.74-0.83) at twice the training time; 1 epoch in batches
# of 8 at 128 reached only 0.69 on seed 7.
N_TRAIN, N_TEST = 600, 200
SETTINGS = ["--maxlen", 64, "--truncation", "tail", "--batch-size", 16, "--lr", 5e-5, "--epochs", 2,
            "--precision", "float32", "--seed", SEED, "--top-losses", 5]
# The bar: 0.65 is 4 standard deviations of 200 reviews' accuracy above chance (a model that learnt nothing passes
# about once in 100,000 runs), and 2.4 below the lowest learning run seen (0.735, seed 1 with Eigen's kernels).
LEARNT = 0.65


def needs(path, what):
    """Skip without `path` on a developer's machine; fail in CI (CI is set), where ../shared is always laid."""
    if not path.exists():
        unavailable(f"{path} ({what}) is not here")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """An HF_HOME where from_pretrained('distilbert-base-uncased') finds the pretrained stand-in, offline."""
    needs(BUILD, "the pretrained stand-in's build script")
    home = tmp_path_factory.mktemp("stand-in-hf")
    built = subprocess.run(["bash", str(BUILD), sys.executable, str(home)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def real_splits(tmp_path_factory):
    """A seeded, stratified N_TRAIN reviews of the real training split and N_TEST of the real test split,
    and the same training reviews with their labels shuffled."""
    needs(IMDB / "train.xlsx", "the real IMDB splits")
    folder = tmp_path_factory.mktemp("real")
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        df = pd.read_excel(IMDB / f"{name}.xlsx", dtype=str)
        df = (df.groupby("Sentiment", group_keys=False).sample(n // 2, random_state=SEED)
              .sample(frac=1, random_state=SEED))
        df.to_excel(folder / f"{name}.xlsx", index=False)
        if name == "train":
            df.assign(Sentiment=df["Sentiment"].sample(frac=1, random_state=SEED + 1).to_numpy()).to_excel(
                folder / "train-shuffled.xlsx", index=False)
    return folder


def train_on(splits, stand_in, output, padding, train="train.xlsx"):
    result = run_train("--train", splits / train, "--test", splits / "test.xlsx", "--output", output,
                       "--padding", padding, *SETTINGS, env={"HF_HOME": str(stand_in), "HF_HUB_OFFLINE": "1"},
                       timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((output / "metrics.json").read_text())


@pytest.mark.parametrize("padding", ["grouped", "fixed"])
def test_training_learns_real_reviews(real_splits, stand_in, tmp_path, padding):
    metrics = train_on(real_splits, stand_in, tmp_path / "predictor", padding)
    assert metrics["n_train"] == N_TRAIN and metrics["n_test"] == N_TEST
    assert metrics["padding"]["padding"] == padding
    at_least(f"real text: held-out accuracy of {N_TRAIN} real reviews, {padding} padding", metrics["accuracy"], LEARNT)
    # Both classes predicted, each for a fair share: a model sitting on one class predicts the other for 0%. Runs that
    # learnt lean by up to 0.34 against 0.66 (seed 7, fixed), hence 0.2.
    predicted = [sum(row) for row in zip(*metrics["confusion_matrix"], strict=True)]
    at_least(f"real text: share of the rarer predicted class, {padding} padding", min(predicted) / N_TEST, 0.2)


def test_the_bar_is_not_met_on_shuffled_labels(real_splits, stand_in, tmp_path):
    """The same run on labels shuffled among the training reviews learns nothing to tell the test reviews apart:
    its accuracy stays far from LEARNT, so passing the test above means the labels were learnt."""
    metrics = train_on(real_splits, stand_in, tmp_path / "predictor", "grouped", train="train-shuffled.xlsx")
    at_most("real text: held-out accuracy trained on shuffled labels", metrics["accuracy"], 0.62)
