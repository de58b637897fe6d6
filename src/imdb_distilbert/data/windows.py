"""Reading the whole review: overlapping windows of `maxlen` word pieces, each scored, combined into one answer.

A review longer than the model's budget is cut (data/truncation.py: head, tail, head+tail) and the rest never
read. Windows read all of it: the word pieces between [CLS] and [SEP] are split into windows of `budget` pieces
that overlap by `overlap` pieces (the last window ends at the review's end), each window is scored as a review of
its own, and the windows' logits are averaged (log-probabilities, which differ from logits by a constant per
window that softmax ignores). A review that fits is one window: scored exactly as today.

The first window is exactly what --truncation head keeps, and the last what tail keeps, so one scoring of the
windows also gives those two (training/evaluation.py compares them that way).

A window starts at a whole word (a word piece "##..." is never first), so its text, tokenized again, gives the
same pieces. At most `max_windows` windows per review: past that, windows evenly spread over the review are kept
(a 1 MB review must not take minutes), and the caller says so (`cap_note`).

`Reading` says how a predictor reads a long review; `saved_reading(folder)` what the run that saved it chose.
No TensorFlow here: the ONNX backends use it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from imdb_distilbert.config import LONG_REVIEWS, MAX_WINDOWS, RunConfig
from imdb_distilbert.data import truncation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

COMBINATIONS = ("mean-logits", "mean-proba", "max-confidence")  # measured in benchmarks/long_reviews.py
COMBINATION = "mean-logits"  # the one used (docs/performance.md: "Reviews longer than maxlen")


@dataclass(frozen=True)
class Reading:
    """How a review longer than `maxlen` word pieces ([CLS] and [SEP] included) is read.

    `long_reviews` "cut": the `cut` part is kept (truncation.MODES); "windows": all of it, in windows that overlap
    by `overlap` word pieces (None: a quarter of the window), at most `max_windows` per review."""

    maxlen: int | None  # None: unknown (a predictor saved by other code): ktrain's own cut at the head applies
    cut: str = "head"
    long_reviews: str = "cut"
    overlap: int | None = None
    max_windows: int = MAX_WINDOWS

    @property
    def windows(self) -> bool:
        return self.long_reviews == "windows" and self.maxlen is not None

    @property
    def budget(self) -> int:
        return self.maxlen - 2  # room for [CLS] and [SEP]

    def window_overlap(self) -> int:
        return self.budget // 4 if self.overlap is None else self.overlap

    def problems(self) -> list[str]:
        """What is wrong with these settings, in the words of the flags."""
        found = []
        if self.long_reviews not in LONG_REVIEWS:
            found.append(f"--long-reviews must be one of {', '.join(LONG_REVIEWS)}")
        if self.max_windows < 1:
            found.append("--max-windows must be at least 1")
        if self.maxlen and self.overlap is not None and not 0 <= self.overlap < self.budget // 2:
            found.append(f"--window-overlap must be from 0 to {self.budget // 2 - 1} word pieces (less than half of "
                         f"a window of {self.budget}; default {self.budget // 4})")
        return found

    def record(self) -> dict:
        """What onnx.json and /health say about it."""
        return {"long_reviews": self.long_reviews, "window_overlap": self.window_overlap() if self.maxlen else None,
                "max_windows": self.max_windows}


def saved_reading(folder: str | os.PathLike) -> Reading:
    """How the run that saved the predictor in `folder` read long reviews (its metrics.json; backends.with_settings
    applies predict.py's flags over it). A predictor saved before windows existed reads "cut"."""
    saved = RunConfig.saved(folder)
    maxlen, cut = truncation.saved_settings(folder)
    return Reading(maxlen, cut, getattr(saved, "long_reviews", None) or "cut", getattr(saved, "window_overlap", None),
                   getattr(saved, "max_windows", None) or MAX_WINDOWS)


def onnx_reading(settings: dict) -> Reading:
    """How the run read long reviews, from the onnx.json `settings` src/export.py wrote (Reading.record's keys;
    an export from before windows: cut)."""
    return Reading(int(settings["maxlen"]), settings.get("truncation", "head"), settings.get("long_reviews", "cut"),
                   settings.get("window_overlap"), settings.get("max_windows", MAX_WINDOWS))


@dataclass
class Windows:
    """The texts (or token ids) a model scores for some reviews: `pieces[i]` belongs to review `owners[i]`, in order
    of the reviews, each review's windows from its start to its end; `capped`: the reviews the cap cut."""

    pieces: list
    owners: np.ndarray
    n_reviews: int
    capped: list[int] = field(default_factory=list)

    def first(self, proba: np.ndarray) -> np.ndarray:
        """Each review's first window's row of `proba` (one row per piece): what --truncation head reads."""
        return np.asarray(proba)[np.searchsorted(self.owners, np.arange(self.n_reviews), side="left")]

    def last(self, proba: np.ndarray) -> np.ndarray:
        """Each review's last window's row: what --truncation tail reads."""
        return np.asarray(proba)[np.searchsorted(self.owners, np.arange(self.n_reviews), side="right") - 1]

    def counts(self) -> np.ndarray:
        """Windows per review."""
        return np.bincount(self.owners, minlength=self.n_reviews)

    def combine(self, proba: np.ndarray, how: str = COMBINATION) -> np.ndarray:
        return combine(proba, self.owners, self.n_reviews, how)


def spans(tokens: Sequence[str], budget: int, overlap: int | None = None,
          max_windows: int = MAX_WINDOWS) -> tuple[list[tuple[int, int]], bool]:
    """The windows of `tokens` (word pieces, [CLS]/[SEP] excluded) as (start, end) pairs, and whether the cap cut
    some. `overlap` defaults to a quarter of `budget`. A review of at most `budget` pieces is one window."""
    n = len(tokens)
    if n <= budget:
        return [(0, n)], False
    overlap = budget // 4 if overlap is None else overlap
    if not 0 <= overlap < budget:
        raise ValueError(f"the overlap must be at least 0 and less than the window ({budget}), not {overlap}")
    starts, start = [], 0
    while start + budget < n:
        starts.append(start)
        start = whole_word(tokens, start + budget - overlap)
    starts.append(whole_word(tokens, n - budget))  # the last window ends at the review's end
    starts = sorted(set(starts))
    capped = len(starts) > max_windows
    if capped:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return [(s, min(s + budget, n)) for s in starts], capped


def whole_word(tokens: Sequence[str], start: int) -> int:
    """`start`, moved forward past word pieces that continue a word ("##ing"), so a window starts at a word."""
    while 0 < start < len(tokens) and str(tokens[start]).startswith("##"):
        start += 1
    return start


def of_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, reading: Reading) -> Windows:
    """The texts to score for `texts` read the `reading` way: with windows, each window's text (a review that fits
    is its own text, unchanged); else each text cut as truncation.truncate cuts it (one piece per review)."""
    if not reading.windows:
        cut = truncation.truncate(texts, tokenizer, reading.maxlen, reading.cut) if reading.maxlen else list(texts)
        return Windows(cut, np.arange(len(cut)), len(cut))
    pieces, owners, capped = [], [], []
    for i, text in enumerate(texts):
        tokens = tokenizer.tokenize(text)
        found, cut = spans(tokens, reading.budget, reading.window_overlap(), reading.max_windows)
        if len(found) == 1:
            pieces.append(text)
        else:
            pieces += [tokenizer.convert_tokens_to_string(tokens[a:b]) for a, b in found]
        owners += [i] * len(found)
        capped += [i] if cut else []
    return Windows(pieces, np.asarray(owners, dtype=np.int64), len(texts), capped)


def of_ids(encodings: Sequence[tuple[Sequence[str], Sequence[int]]], reading: Reading) -> Windows:
    """Like of_texts, for texts already tokenized: `encodings` holds each text's (word pieces, token ids) with
    [CLS] first and [SEP] last. The pieces are token ids, [CLS] and [SEP] around each window."""
    pieces, owners, capped = [], [], []
    for i, (tokens, ids) in enumerate(encodings):
        ids = list(ids)
        if len(ids) <= reading.maxlen:
            pieces.append(ids)
            owners.append(i)
            continue
        inner = tokens[1:-1]
        if reading.windows:
            found, cut = spans(inner, reading.budget, reading.window_overlap(), reading.max_windows)
            capped += [i] if cut else []
        else:
            found = [truncation.kept(inner, reading.budget, reading.cut)]
        for window in found:
            keep = range(*window) if isinstance(window, tuple) else window
            pieces.append([ids[0], *(ids[1 + k] for k in keep), ids[-1]])
            owners.append(i)
    return Windows(pieces, np.asarray(owners, dtype=np.int64), len(encodings), capped)


def combine(proba: np.ndarray, owners: Sequence[int], n_reviews: int, how: str = COMBINATION) -> np.ndarray:
    """Each review's probabilities from its windows' (`owners[i]`: the review window i belongs to).

    mean-logits: softmax of the mean of the windows' log-probabilities (= of their logits); mean-proba: the mean of
    their probabilities; max-confidence: the window whose top probability is highest. A review of one window gets
    that window's probabilities, unchanged."""
    proba = np.asarray(proba, dtype=np.float64)
    owners = np.asarray(owners)
    counts = np.bincount(owners, minlength=n_reviews)[:, None]
    if how == "mean-proba":
        sums = np.zeros((n_reviews, proba.shape[1]))
        np.add.at(sums, owners, proba)
        return sums / counts
    if how == "max-confidence":
        best = np.full(n_reviews, -1.0)
        out = np.zeros((n_reviews, proba.shape[1]))
        for row, owner in zip(proba, owners, strict=True):
            if row.max() > best[owner]:
                best[owner], out[owner] = row.max(), row
        return out
    if how != "mean-logits":
        raise ValueError(f"combination must be one of {', '.join(COMBINATIONS)}, not {how!r}")
    logp = np.log(np.clip(proba, 1e-12, 1))
    sums = np.zeros((n_reviews, proba.shape[1]))
    np.add.at(sums, owners, logp)
    mean = sums / counts
    e = np.exp(mean - mean.max(axis=1, keepdims=True))
    out = e / e.sum(axis=1, keepdims=True)
    single = (counts[:, 0] == 1)
    out[single] = proba[np.searchsorted(owners, np.flatnonzero(single))]  # one window: its own answer, unchanged
    return out


def cap_note(n_capped: int, reading: Reading) -> str:
    """The sentence said when the cap cut some reviews' windows."""
    step = reading.budget - reading.window_overlap()
    reach = reading.budget + (reading.max_windows - 1) * step
    many = "review was" if n_capped == 1 else "reviews were"
    return (f"note: {n_capped} {many} longer than {reading.max_windows} windows (about {reach} word pieces): "
            f"{reading.max_windows} windows spread over each were read, not all of it; --max-windows raises the cap")
