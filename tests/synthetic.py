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


def reviews(n, seed=0, mixed=False):
    """`n` reviews, half `pos` and half `neg`, in random order, as a Reviews/Sentiment frame.

    `mixed`: the reviews also hold fewer words of the other polarity, so the label is the majority's
    and the words of both polarities decide it (a model cannot learn "negative words mean neg")."""
    rng = random.Random(seed)
    labels = ["pos", "neg"] * (n // 2) + ["pos"] * (n % 2)
    rng.shuffle(labels)
    return pd.DataFrame({"Reviews": [review(label, rng, mixed) for label in labels], "Sentiment": labels})


def write_splits(folder, n_train, n_test, seed=0, mixed=False):
    """Write train.xlsx and test.xlsx (disjoint random reviews) into `folder`; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews(n_train, seed, mixed).to_excel(folder / "train.xlsx", index=False)
    reviews(n_test, seed + 1, mixed).to_excel(folder / "test.xlsx", index=False)
    return folder
