"""How reviews longer than `maxlen` tokens are cut: keep the head, the tail, or both.

ktrain (like the tutorial) keeps the first `maxlen` tokens ("head"). Many IMDB reviews end with the
verdict ("... 3/10, avoid"), so keeping the end as well can help: "head+tail" keeps the first
quarter of the budget from the start and the rest from the end, the split Sun et al. found best
for BERT on IMDB ("How to Fine-Tune BERT for Text Classification", 2019: 128 head + 382 tail of 512).

For "tail" and "head+tail" the text itself is cut before ktrain sees it: tokenize, keep the chosen
tokens, join them back into text. Re-tokenizing that text gives the same tokens, so ktrain's own
cut (at the head) never triggers. No TensorFlow here: the prediction tools use it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from imdb_distilbert.config import TRUNCATIONS, RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MODES = TRUNCATIONS
Token = TypeVar("Token")  # a word piece (str), or anything else a test cuts


def cut(tokens: Sequence[Token], budget: int, mode: str) -> list[Token]:
    """The tokens kept from `tokens` when at most `budget` fit, for `mode` in MODES."""
    return [tokens[i] for i in kept(tokens, budget, mode)]


def kept(tokens: Sequence[object], budget: int, mode: str) -> list[int]:
    """The positions of the tokens `cut` keeps.

    A kept tail starts at a whole word: word pieces ("##ing") before its first word are dropped,
    so the cut text, tokenized again, gives exactly the kept tokens.
    """
    if mode not in MODES:
        raise ValueError(f"truncation mode must be one of {', '.join(MODES)}, not {mode!r}")
    n = len(tokens)
    if n <= budget:
        return list(range(n))
    if mode == "head":
        return list(range(budget))
    head = 0 if mode == "tail" else budget // 4
    start = n - (budget - head)
    while start < n and str(tokens[start]).startswith("##"):
        start += 1
    return list(range(head)) + list(range(start, n))


def truncate(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, maxlen: int, mode: str) -> list[str]:
    """Cut each text to `maxlen` tokens (including DistilBERT's [CLS] and [SEP]) the `mode` way.

    `tokenizer` is a Hugging Face tokenizer. Texts that fit are returned unchanged, and "head"
    leaves every text to ktrain, which keeps the head itself.
    """
    if mode == "head":
        return list(texts)
    budget = maxlen - 2  # room for [CLS] and [SEP]
    out = []
    for text in texts:
        tokens = tokenizer.tokenize(text)
        out.append(text if len(tokens) <= budget else tokenizer.convert_tokens_to_string(cut(tokens, budget, mode)))
    return out


def saved_settings(folder: str | os.PathLike) -> tuple[int | None, str]:
    """(maxlen, mode) of the run that saved the predictor in `folder`, from its metrics.json.

    (None, "head") when unknown: then ktrain's own cut at the head applies, as for any predictor.
    """
    saved = RunConfig.saved(folder)
    return (int(saved.maxlen), saved.truncation) if saved else (None, "head")


def like_saved_run(texts: Iterable[str], folder: str | os.PathLike, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Cut `texts` the way the run that saved the predictor in `folder` cut its reviews.

    `ktrain.load_predictor(folder).predict` always keeps the head; call this first so a model
    trained with --truncation tail or head+tail sees reviews cut the same way. A no-op for "head".
    """
    maxlen, mode = saved_settings(folder)
    return truncate(texts, tokenizer, maxlen, mode) if maxlen else list(texts)
