"""Windows over long reviews (data/windows.py): where they start and end, the cap, and how windows combine."""

import numpy as np
import pytest

from imdb_distilbert.data import windows


def pieces(n, continued=()):
    """n word pieces; those at `continued` positions continue the word before ("##x")."""
    return [f"##w{i}" if i in continued else f"w{i}" for i in range(n)]


def test_a_review_that_fits_is_one_window():
    assert windows.spans(pieces(10), budget=10) == ([(0, 10)], False)


def test_windows_cover_everything_and_overlap():
    found, capped = windows.spans(pieces(100), budget=40)  # overlap 10: starts 0, 30, 60 (last ends at 100)
    assert found == [(0, 40), (30, 70), (60, 100)] and not capped
    covered = set().union(*(range(a, b) for a, b in found))
    assert covered == set(range(100)) and all(b - a == 40 for a, b in found)


def test_a_window_starts_at_a_whole_word():
    found, _ = windows.spans(pieces(100, continued={30, 31}), budget=40)
    assert [a for a, _ in found] == [0, 32, 60]  # not 30 or 31: they continue a word


def test_the_cap_keeps_windows_spread_over_the_review():
    found, capped = windows.spans(pieces(10_000), budget=100, overlap=0, max_windows=5)
    assert capped and len(found) == 5 and found[0][0] == 0 and found[-1][1] == 10_000


def test_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        windows.spans(pieces(100), budget=40, overlap=40)


def test_combine_is_the_mean_of_logits():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    combined = windows.combine(proba, owners=[0, 0, 1], n_reviews=2)
    mean = np.array([[1.0, 0.5], [3.0, 3.0]])
    assert np.allclose(combined, np.exp(mean) / np.exp(mean).sum(1, keepdims=True))
