"""data/batching.py: which texts share a model call and how far each call is padded, for every caller.

Fast: NumPy only (one subprocess checks that importing the module loads neither TensorFlow nor ktrain).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imdb_distilbert.data import batching

RNG = np.random.default_rng(0)
LENGTHS = [RNG.integers(1, 520, 1003), RNG.integers(1, 12, 200), np.array([7]), np.array([3, 3, 3, 3]),
           np.array([2000, 5, 5, 1500, 40])]  # some over any budget on their own


def flat(batches):
    return sorted(int(i) for batch in batches for i in batch)


def every_kind_of_batches(lengths):
    """(name, batches) of each caller's policy on `lengths` (positions 0..n-1; training's sorted longest first)."""
    n = len(lengths)
    return [
        ("training", batching.training_epoch(n, 6, seed=1, epoch=0)),
        ("evaluation", batching.chunks(np.arange(n), 6)),
        ("onnx", batching.onnx_batches(lengths, 32)),
        ("explain", batching.explain_batches(lengths, steps=3)),
        ("budget only", batching.chunks(batching.by_length(lengths), None, 1000, lengths)),
        ("one batch", batching.chunks(np.arange(n))),
    ]


@pytest.mark.parametrize("lengths", LENGTHS, ids=len)
def test_every_position_exactly_once(lengths):
    for name, batches in every_kind_of_batches(lengths):
        assert flat(batches) == list(range(len(lengths))), name
        assert all(len(batch) >= 1 for batch in batches), name


@pytest.mark.parametrize("lengths", LENGTHS, ids=len)
def test_batch_size_and_token_budgets_are_respected(lengths):
    """At most batch_size texts, and at most max_tokens padded tokens (size x longest x copies) unless one text alone
    is over the budget; and the budget is used: the next text would not have fitted (no needlessly small batch)."""
    for batch_size, max_tokens, copies in [(32, 1024, 1), (7, 1024, 1), (None, 4096, 3), (None, 200, 1), (5, None, 1)]:
        order = batching.by_length(lengths)
        batches = batching.chunks(order, batch_size, max_tokens, lengths, copies)
        for k, batch in enumerate(batches):
            cost = len(batch) * copies * lengths[batch].max()
            assert batch_size is None or len(batch) <= batch_size
            assert max_tokens is None or cost <= max_tokens or len(batch) == 1
            if k + 1 < len(batches):  # greedy: the next text did not fit
                grown = np.append(batch, batches[k + 1][0])
                full = batch_size is not None and len(batch) == batch_size
                over = max_tokens is not None and len(grown) * copies * lengths[grown].max() > max_tokens
                assert full or over
        assert np.array_equal(np.concatenate(batches), order)  # consecutive slices of the order
    # The callers' settings: ONNX's MAX_TOKENS with its batch size, explanations' path tokens with their steps.
    for batch in batching.onnx_batches(lengths, 8):
        assert len(batch) <= 8 and (len(batch) == 1 or len(batch) * lengths[batch].max() <= batching.ONNX_MAX_TOKENS)
    for batch in batching.explain_batches(lengths, steps=3):
        assert len(batch) == 1 or len(batch) * 3 * lengths[batch].max() <= batching.EXPLAIN_TOKENS_PER_CALL
    assert [len(b) for b in batching.onnx_batches([10] * 100, 32)] == [32, 32, 32, 4]  # short texts: the batch size
    assert [len(b) for b in batching.explain_batches([10] * 300, steps=0)] == [300]  # no limit on the count


def test_batches_hold_texts_of_similar_length():
    """Sorted shortest first (ONNX, explanations) or longest first (training's positions), ties in the given order."""
    lengths = np.array([5, 3, 9, 3, 5, 1, 9])
    assert batching.by_length(lengths).tolist() == [5, 1, 3, 0, 4, 2, 6]
    assert batching.by_length(lengths, longest_first=True).tolist() == [2, 6, 0, 4, 1, 3, 5]
    assert batching.by_length([len(t) for t in ["bb", "a", "cc", "d"]]).tolist() == [1, 3, 0, 2]  # the parity check
    for lengths in LENGTHS:
        widths = [lengths[batch].max() for batch in batching.onnx_batches(lengths, 32)]
        assert widths == sorted(widths)


@pytest.mark.parametrize("maxlen", [1, 7, 32, 64, 128, 129, 400, 512, 1000])
def test_widths_are_bucket_multiples_up_to_maxlen(maxlen):
    """Training and evaluation: the longest rounded up to a multiple of bucket_width(maxlen) (8 x ceil(maxlen / 128)),
    at most maxlen, never less than the longest: at most 16 widths. Explanations: multiples of EXPLAIN_BUCKET."""
    bucket = batching.bucket_width(maxlen)
    assert bucket == 8 * math.ceil(maxlen / 128) and bucket % 8 == 0
    longest = np.arange(1, maxlen + 1)
    widths = batching.padded_width(longest, maxlen)
    assert ((widths % bucket == 0) | (widths == maxlen)).all()
    assert (widths >= longest).all() and (widths <= maxlen).all() and (widths - longest < bucket).all()
    assert [int(batching.padded_width(n, maxlen)) for n in longest] == widths.tolist()  # a scalar as an array
    assert len(set(widths.tolist())) <= 16
    for n in range(1, maxlen + 1):
        width = batching.explain_width(n, maxlen)
        assert width >= n and (width % batching.EXPLAIN_BUCKET == 0 or width == maxlen) and width <= maxlen
    assert batching.explain_width(maxlen + 3, maxlen) == maxlen + 3  # a longer review is not cut by the padding
    assert batching.padded_width(10, maxlen, bucket=1) == min(10, maxlen)  # no rounding: ONNX's policy
    assert sorted(set(batching.padded_width(np.arange(1, 401), 400).tolist())) == [*range(32, 400, 32), 400]


def test_same_seed_same_epoch_new_epoch_new_order():
    n, size = 1003, 6
    first = batching.training_epoch(n, size, seed=5, epoch=1)
    again = batching.training_epoch(n, size, seed=5, epoch=1)
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    assert not same(first, batching.training_epoch(n, size, seed=5, epoch=2))  # a new grouping every epoch
    assert not same(first, batching.training_epoch(n, size, seed=6, epoch=1))  # and for another seed
    firsts = [int(b[0]) for b in first[1:-1]]
    assert firsts != sorted(firsts)  # the batches come in a shuffled order, not by length


def test_training_epoch_is_hugging_faces_group_by_length():
    """ceil(n / batch_size) batches, full but the last; the batch with position 0 (the longest text) first, the short
    one last; each batch of neighbours in length: sorted within mega-batches of MEGABATCH batches."""
    for n, size in [(1003, 6), (1000, 8), (7, 3), (5, 8), (1, 1), (20000, 32)]:
        batches = batching.training_epoch(n, size, seed=0, epoch=3)
        assert len(batches) == math.ceil(n / size)
        assert [len(b) for b in batches[:-1]] == [size] * (len(batches) - 1) and len(batches[-1]) == (n % size or size)
        assert 0 in batches[0]
        assert all((np.diff(b) > 0).all() for b in batches)  # sorted by position: by length
        mega = size * max(1, min(batching.MEGABATCH, n // (size * 4)))
        if n >= 4 * batching.MEGABATCH * size:  # full mega-batches: a batch spans about size x n / mega positions
            span = np.median([int(b.max() - b.min()) for b in batches])
            assert span < 3 * size * n / mega


def test_results_come_back_in_the_input_order():
    """in_given_order() undoes by_length(), for one value or a row per text; as does writing each batch's results
    at its positions (ONNX's proba[batch] = ..., explanations' results[j] = ...)."""
    lengths = RNG.integers(1, 400, 257)
    for longest_first in (False, True):
        order = batching.by_length(lengths, longest_first)
        assert batching.in_given_order(lengths[order], order).tolist() == lengths.tolist()
        rows = np.stack([lengths, -lengths], axis=1)
        assert np.array_equal(batching.in_given_order(rows[order], order), rows)
    written = np.zeros(len(lengths), dtype=int)
    for batch in batching.onnx_batches(lengths, 16):
        written[batch] = lengths[batch]
    assert written.tolist() == lengths.tolist()


def test_grouping_pays_where_it_saves_a_tenth_of_the_tokens():
    assert batching.GROUPING_PAYS == 0.9
    assert batching.grouping_pays(np.arange(10, 401), 400)  # about half of the tokens
    assert not batching.grouping_pays(np.array([128] * 90 + list(range(30, 40))), 128)  # 0.93 of them
    assert batching.grouping_pays(np.array([128] * 70 + [24] * 30), 128)  # 0.76 of them
    assert not batching.grouping_pays(np.array([121] * 100), 128)  # 121 rounds up to the bucket: 128


def test_imports_neither_tensorflow_nor_ktrain():
    """The ONNX backends use it where only requirements-onnx.txt is installed."""
    heavy = ("tensorflow", "tf_keras", "ktrain", "transformers", "torch")
    code = ("import sys, imdb_distilbert.data.batching; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))")
    env = {**os.environ, "PYTHONPATH": str(Path(batching.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
