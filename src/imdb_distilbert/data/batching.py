"""Batches of texts of similar length: which texts share a model call, and how far each call is padded.

Every caller that puts texts into model calls takes its batches from here, so a change to batching is one edit.
Pure NumPy (no TensorFlow, no ktrain): the ONNX backends use it where only requirements-onnx.txt is installed.

The pieces: by_length() sorts positions by length; chunks() cuts sorted positions into batches under a batch size
and/or a token budget; padded_width() is the width a batch is padded to (its longest, rounded up to a bucket);
training_epoch() is a training epoch's batches (Hugging Face's group_by_length); in_given_order() puts results
back in the order the texts were given; grouping_pays() is train.py --padding auto's decision.

The policies, one per caller, and why they differ:

- Training (training/learning.py, LengthGroupedDataset for the training split): reviews kept longest first;
  each epoch training_epoch(): Hugging Face's group_by_length (shuffle, cut into mega-batches of MEGABATCH
  batches, sort each by length, cut into batches, shuffle the batches, the one with the longest review first, the
  short one last). Exactly `batch_size` reviews a step and no token budget: the batch size is the recipe's, and
  ktrain's one-cycle schedule counts ceil(n / batch_size) steps. Widths rounded up to bucket_width(maxlen), at most
  16 of them: each new input shape costs TensorFlow a trace (and XLA or a GPU a compilation), so few shapes.
- Evaluation (learning.predict_proba, so training/evaluation.py, and the validation split): the same sorted
  reviews, longest first, in consecutive batches of `batch_size` (chunks()), bucket widths as in training; the
  probabilities back in the reviews' order with in_given_order(). Longest first: a batch too large for memory fails
  at once.
- ONNX backends (inference/backends.py, OnnxBackend.batches: onnx_batches()): shortest first, at most `batch_size`
  texts and ONNX_MAX_TOKENS padded word pieces a call (at least one text each), each padded to its own longest
  text, unrounded: ONNX Runtime compiles nothing per shape, so rounding would only add work, while a call whose
  activations stay in a CPU's cache is faster (the measurements are at ONNX_MAX_TOKENS).
- ktrain backend (inference/backends.py, KtrainBackend): the texts in the order given, in consecutive calls of
  `batch_size` (chunks()); ktrain pads each call to its longest text itself.
- Explanations (inference/explain.py: explain_batches(), explain_width()): shortest first, no limit on the number
  of reviews, at most EXPLAIN_TOKENS_PER_CALL path tokens a call (reviews x path points x width: a call's memory
  grows with the path points); widths rounded up to EXPLAIN_BUCKET, so TensorFlow's CPU kernels set up for one
  length are reused (a review longer than maxlen is not cut by the padding).
- The ONNX export's parity check (export/onnx_export.py, check_parity): the texts sorted by their length in
  characters (by_length()), then the TensorFlow predictor in consecutive calls of 32 (chunks()), as ktrain pads each
  call to its longest; the ONNX models score them as the ONNX backends do.
"""

import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

Lengths = Union[Sequence[int], np.ndarray]  # tokens (or characters) per text

MEGABATCH = 50  # batches per mega-batch, as in Hugging Face's group_by_length (transformers' LengthGroupedSampler)
GROUPING_PAYS = 0.9  # --padding auto groups by length where it computes at most this share of fixed padding's tokens
# Word pieces per ONNX Runtime call (padding included), on top of the batch size: on a CPU, a call's
# activations should stay in cache. Full-size DistilBERT, onnx-int8, 96 real reviews, 2 cores
# (docs/inference.md): at maxlen 400, batches of 32 score 12.2-12.7 reviews/s, at most 1,024 tokens
# per call 15.9-16.8; at maxlen 128, 37.6 against 41.6-41.8. A server's batch of 32 reviews that
# arrived together, split this way, scores as fast as predict.py's length-sorted batches.
ONNX_MAX_TOKENS = 1024
EXPLAIN_TOKENS_PER_CALL = 4096  # path points x tokens per model call: several full-length reviews, or many short ones
EXPLAIN_BUCKET = 32  # explanations pad to a multiple of this: TensorFlow's CPU kernels set up for a length are reused


def by_length(lengths: Lengths, longest_first: bool = False) -> np.ndarray:
    """The positions of `lengths` in order of length, shortest first (or longest first); ties keep their order."""
    lengths = np.asarray(lengths)
    return np.argsort(-lengths if longest_first else lengths, kind="stable")


def chunks(order: np.ndarray, batch_size: Optional[int] = None, max_tokens: Optional[int] = None,
        lengths: Optional[Lengths] = None, copies: int = 1) -> list[np.ndarray]:
    """`order` (positions, sorted by length) cut into consecutive batches (slices of `order`) of at most
    `batch_size` positions and, with `max_tokens`, at most that many padded tokens: the batch's size x its longest
    length (`lengths[position]`) x `copies` (how many times the model runs each text: explanations' path points).
    Each batch holds at least one position, even one over the budget alone. None: no limit."""
    if max_tokens is None:
        size = batch_size or max(len(order), 1)
        return [order[start:start + size] for start in range(0, len(order), size)]
    batches, start = [], 0
    while start < len(order):
        end, longest = start + 1, lengths[order[start]]
        while end < len(order) and (batch_size is None or end - start < batch_size):
            longest = max(longest, lengths[order[end]])
            if (end - start + 1) * copies * longest > max_tokens:
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def bucket_width(maxlen: int) -> int:
    """Training and evaluation pad batches to a multiple of this many tokens (or to `maxlen`): 8 x ceil(maxlen / 128).

    So there are at most 16 widths, each a multiple of 8, whatever `maxlen` is: at 400, 32, 64, ..., 384 and 400
    (13 widths). Few widths matter where a new input shape costs a compilation (XLA, a GPU's kernel tuning).
    """
    return 8 * math.ceil(maxlen / 128)


def padded_width(longest: Union[int, Lengths], maxlen: int, bucket: Optional[int] = None) -> np.ndarray:
    """The tokens a batch whose longest text holds `longest` tokens is padded to (elementwise for an array):
    rounded up to a multiple of `bucket` (default bucket_width(maxlen)), at most `maxlen`."""
    bucket = bucket or bucket_width(maxlen)
    return np.minimum(maxlen, -(-np.asarray(longest) // bucket) * bucket)


def training_epoch(n: int, batch_size: int, seed: int, epoch: int, megabatch: int = MEGABATCH) -> list[np.ndarray]:
    """The batches (arrays of positions) of training epoch `epoch` (from 0) over `n` texts whose positions are in
    order of length, longest first; the same for the same seed and epoch. Hugging Face's group_by_length: shuffle,
    cut into mega-batches of `megabatch` batches (fewer when there are fewer than 4 x `megabatch` batches in all),
    sort each (by position, so by length), cut into batches; then the full batches shuffled, the one holding
    position 0 (the longest text) first, and the short batch, if any, last. ceil(n / batch_size) batches."""
    rng = np.random.default_rng([seed, epoch])
    mega = batch_size * max(1, min(megabatch, n // (batch_size * 4)))
    shuffled = rng.permutation(n)
    batches = []
    for start in range(0, n, mega):
        batches += chunks(np.sort(shuffled[start:start + mega]), batch_size)  # in position order: length order
    full = [batch for batch in batches if len(batch) == batch_size]
    rng.shuffle(full)
    longest = [batch for batch in full if batch[0] == 0]
    return longest + [b for b in full if b[0] != 0] + [b for b in batches if len(b) < batch_size]


def in_given_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`values` (one row per text, row k for the text at position order[k]) in the order the texts were given."""
    values = np.asarray(values)
    given = np.empty_like(values)
    given[order] = values
    return given


def grouping_pays(lengths: Lengths, maxlen: int) -> bool:
    """Whether batches of texts of similar length would compute at most GROUPING_PAYS of the tokens of padding
    every text (of `lengths` tokens) to `maxlen`, counted at best: each text padded to its own bucket."""
    return padded_width(lengths, maxlen).sum() <= GROUPING_PAYS * len(lengths) * maxlen


def onnx_batches(lengths: Lengths, batch_size: int, max_tokens: int = ONNX_MAX_TOKENS) -> list[np.ndarray]:
    """The ONNX backends' batches: positions of `lengths` shortest first, at most `batch_size` texts and
    `max_tokens` padded word pieces a call (at least one text). Each is padded to its last (longest) text."""
    return chunks(by_length(lengths), batch_size, max_tokens, lengths)


def explain_batches(lengths: Lengths, steps: int, tokens_per_call: int = EXPLAIN_TOKENS_PER_CALL) -> list[np.ndarray]:
    """Explanations' batches: positions of `lengths` shortest first, at most `tokens_per_call` path tokens a call
    (reviews x max(steps, 1) path points x the longest's length), any number of reviews (at least one)."""
    return chunks(by_length(lengths), None, tokens_per_call, lengths, copies=max(steps, 1))


def explain_width(longest: int, maxlen: int, bucket: int = EXPLAIN_BUCKET) -> int:
    """The width explanations pad a batch to: its longest rounded up to `bucket`, at most maxlen (or its longest)."""
    return int(padded_width(longest, max(maxlen, longest), bucket))
