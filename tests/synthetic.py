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


def reviews(n, seed=0, mixed=False, long=False, at=None):
    """`n` reviews, half `pos` and half `neg`, in random order, as a Reviews/Sentiment frame.

    `mixed`: the reviews also hold fewer words of the other polarity, so the label is the majority's
    and the words of both polarities decide it (a model cannot learn "negative words mean neg").
    `long`: long_review()s, whose verdict is at their `at` ("start" or "end"; by default, half each)."""
    rng = random.Random(seed)
    labels = ["pos", "neg"] * (n // 2) + ["pos"] * (n % 2)
    rng.shuffle(labels)
    texts = [long_review(label, rng, at) if long else review(label, rng, mixed) for label in labels]
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
