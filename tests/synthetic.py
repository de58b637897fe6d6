"""Reviews a tiny model can learn: neutral filler around polarity words that decide the label."""

import random

import pandas as pd

POSITIVE = "great wonderful excellent brilliant superb fantastic amazing loved enjoyed masterpiece".split()
NEGATIVE = "awful terrible boring dull horrible poor weak worst hated waste bad".split()
FILLER = ("the movie film story plot acting cast director script scene music ending characters "
          "was is and with of this that it really very quite a in to i we they").split()
WORDS = POSITIVE + NEGATIVE + FILLER


def review(label, rng, mixed=False):
    """1-3 words of the label's polarity among filler; `mixed`: and fewer words of the other polarity."""
    words = rng.choices(FILLER, k=rng.randint(8, 24))
    ours, theirs = (POSITIVE, NEGATIVE) if label == "pos" else (NEGATIVE, POSITIVE)
    k = rng.randint(1, 3)
    for polarity in [ours] * k + [theirs] * (rng.randint(0, k - 1) if mixed else 0):
        words.insert(rng.randrange(len(words) + 1), rng.choice(polarity))
    return " ".join(words).capitalize() + "."


def long_review(label, rng, at=None):
    """40-50 filler words with the verdict (2-3 words of the label's polarity) at their start or end (`at`,
    by default either): longer than the tests' maxlen of 32, so where a cut falls decides what is read."""
    verdict = rng.choices(POSITIVE if label == "pos" else NEGATIVE, k=rng.randint(2, 3))
    filler = rng.choices(FILLER, k=rng.randint(40, 50))
    at = at or rng.choice(["start", "end"])
    return " ".join(verdict + filler if at == "start" else filler + verdict).capitalize() + "."


def middle_review(label, rng):
    """The verdict only in the middle: three review()s of the label (about 50 words, 3-9 of them polar) between 32-36
    filler words before and 32-36 after, so neither the first nor the last 30 word pieces (the tests' maxlen of 32)
    hold any of it; the windows in the middle do."""
    head, tail = (rng.choices(FILLER, k=rng.randint(32, 36)) for _ in range(2))
    middle = [review(label, rng).rstrip(".").lower() for _ in range(3)]
    return " ".join(head + middle + tail).capitalize() + "."


def reviews(n, seed=0, mixed=False, long=False, at=None):
    """`n` reviews, half `pos` and half `neg`, in random order, as a Reviews/Sentiment frame.

    `mixed`: the reviews also hold fewer words of the other polarity, so the label is the majority's
    and the words of both polarities decide it (a model cannot learn "negative words mean neg").
    `long`: long_review()s, whose verdict is at their `at` ("start" or "end"; by default, half each)."""
    rng = random.Random(seed)
    labels = ["pos", "neg"] * (n // 2) + ["pos"] * (n % 2)
    rng.shuffle(labels)
    texts = [(middle_review(label, rng) if at == "middle" else long_review(label, rng, at)) if long
             else review(label, rng, mixed) for label in labels]
    return pd.DataFrame({"Reviews": texts, "Sentiment": labels})


def write_splits(folder, n_train, n_test, seed=0, suffix=".xlsx", **kind):
    """Write train and test splits (disjoint random reviews; `kind`: reviews()'s options) into `folder` as
    .xlsx or .csv files; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        frame = reviews(n, split_seed, **kind)
        if suffix == ".csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            frame.to_excel(folder / f"{name}.xlsx", index=False)
    return folder


# Words that decide the class of reviews of more than two classes (every one a whole word of the tests' tiny
# vocabulary, tests/tiny_distilbert.py, and none of them filler).
THREE_CLASSES = {"neg": NEGATIVE, "neutral": "nothing something anything rather pretty".split(), "pos": POSITIVE}
STARS = {"1": "awful terrible horrible worst hated".split(), "2": "boring dull poor weak waste".split(),
         "3": "nothing something anything rather pretty".split(), "4": "good liked fun beautiful best".split(),
         "5": "great wonderful excellent brilliant masterpiece".split()}


def class_reviews(n, words, seed=0, text="Reviews", label="Sentiment", shares=None):
    """`n` reviews of the classes of `words` ({class: the words that decide it}): filler around 1-3 of its
    class's words, as a frame with columns `text` and `label`. `shares` ({class: fraction}, default equal)
    makes the classes imbalanced."""
    rng = random.Random(seed)
    classes = list(words)
    shares = shares or {c: 1 / len(classes) for c in classes}
    labels = [c for c in classes for _ in range(round(n * shares[c]))][:n]
    labels += rng.choices(classes, k=n - len(labels))
    rng.shuffle(labels)
    texts = []
    for c in labels:
        filler = rng.choices(FILLER, k=rng.randint(8, 24))
        for word in rng.choices(words[c], k=rng.randint(1, 3)):
            filler.insert(rng.randrange(len(filler) + 1), word)
        texts.append(" ".join(filler).capitalize() + ".")
    return pd.DataFrame({text: texts, label: labels})


def write_class_splits(folder, n_train, n_test, words, seed=0, suffix=".xlsx", numbers=False, **columns):
    """Train and test splits of class_reviews (`columns`: its text, label and shares) in `folder`; the folder.
    `numbers`: the labels as numbers in the file (star ratings as a spreadsheet holds them), not text."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        frame = class_reviews(n, words, split_seed, **columns)
        if numbers:
            frame[columns.get("label", "Sentiment")] = frame[columns.get("label", "Sentiment")].astype(int)
        if suffix == ".csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            frame.to_excel(folder / f"{name}.xlsx", index=False)
    return folder
