"""Reading the whole review: overlapping windows of `maxlen` word pieces, each scored, combined into one answer.

A review longer than the model's budget is cut (data/truncation.py: head, tail, head+tail) and the rest never
read. Windows read all of it: the word pieces between [CLS] and [SEP] are split into windows of `budget` pieces
that overlap by `overlap` pieces (the last window ends at the review's end), each window is scored as a review of
its own, and the windows' logits are averaged (log-probabilities, which differ from logits by a constant per
window that softmax ignores). A review that fits is one window: scored exactly as today.

A window starts at a whole word (a word piece "##..." is never first), so its text, tokenized again, gives the
same pieces. At most `max_windows` windows per review: past that, windows evenly spread over the review are kept
(a 1 MB review must not take minutes), and the caller says so.

NumPy only (no TensorFlow, no tokenizer): the callers tokenize.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_WINDOWS = 16  # per review; 16 windows of 400 pieces with a quarter overlap read about 4,900 pieces


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


def combine(proba: np.ndarray, owners: Sequence[int], n_reviews: int) -> np.ndarray:
    """Each review's probabilities from its windows': softmax of the mean of the windows' log-probabilities
    (= the mean of their logits). `owners[i]`: the review window i belongs to."""
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1))
    owners = np.asarray(owners)
    sums = np.zeros((n_reviews, logp.shape[1]))
    np.add.at(sums, owners, logp)
    mean = sums / np.bincount(owners, minlength=n_reviews)[:, None]
    e = np.exp(mean - mean.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
