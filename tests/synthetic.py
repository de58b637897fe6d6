"""Reviews a tiny model can learn: neutral filler around polarity words that decide the label."""

import random

import pandas as pd

POSITIVE = "great wonderful excellent brilliant superb fantastic amazing loved enjoyed masterpiece".split()
NEGATIVE = "awful terrible boring dull horrible poor weak worst hated waste bad".split()
FILLER = ("the movie film story plot acting cast director script scene music ending characters "
          "was is and with of this that it really very quite a in to i we they").split()
WORDS = POSITIVE + NEGATIVE + FILLER


def review(label, rng):
    words = rng.choices(FILLER, k=rng.randint(8, 24))
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
    return " ".join(words).capitalize() + "."


def reviews(n, seed=0):
    """`n` reviews, half `pos` and half `neg`, in random order, as a Reviews/Sentiment frame."""
    rng = random.Random(seed)
    labels = ["pos", "neg"] * (n // 2) + ["pos"] * (n % 2)
    rng.shuffle(labels)
    return pd.DataFrame({"Reviews": [review(label, rng) for label in labels], "Sentiment": labels})


def write_splits(folder, n_train, n_test, seed=0):
    """Write train.xlsx and test.xlsx (disjoint random reviews) into `folder`; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews(n_train, seed).to_excel(folder / "train.xlsx", index=False)
    reviews(n_test, seed + 1).to_excel(folder / "test.xlsx", index=False)
    return folder
