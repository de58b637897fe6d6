"""--truncation: which tokens of a long review are kept, on token sequences and on real text."""

import pytest

import truncation
from truncation import cut

TOKENS = list(range(20))


def test_short_sequences_are_kept_whole_in_every_mode():
    for mode in truncation.MODES:
        assert cut(TOKENS[:5], 8, mode) == TOKENS[:5]
        assert cut(TOKENS[:8], 8, mode) == TOKENS[:8]


def test_head_keeps_the_start():
    assert cut(TOKENS, 8, "head") == [0, 1, 2, 3, 4, 5, 6, 7]


def test_tail_keeps_the_end():
    assert cut(TOKENS, 8, "tail") == [12, 13, 14, 15, 16, 17, 18, 19]


def test_head_and_tail_keep_a_quarter_from_the_start_and_the_rest_from_the_end():
    assert cut(TOKENS, 8, "head+tail") == [0, 1, 14, 15, 16, 17, 18, 19]
    kept = cut(list(range(1000)), 510, "head+tail")  # the paper's 512-token setting
    assert kept[:127] == list(range(127)) and kept[127:] == list(range(617, 1000)) and len(kept) == 510


def test_a_kept_tail_starts_at_a_whole_word():
    tokens = ["a", "good", "act", "##ing", "and", "great", "end"]
    assert cut(tokens, 4, "tail") == ["and", "great", "end"]  # not "##ing", which would read "ing"
    assert cut(tokens, 5, "tail") == ["act", "##ing", "and", "great", "end"]
    assert cut(tokens, 5, "head+tail") == ["a", "and", "great", "end"]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="head, tail, head\\+tail"):
        cut(TOKENS, 8, "middle")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained("distilbert-base-uncased")  # the tests' tiny model


def test_truncated_text_retokenizes_to_the_kept_tokens(tokenizer):
    # "zq" and "xv" are not in the tiny vocabulary: they split into word pieces (z ##q ...)
    review = ("the film opens well . zq xv " * 10) + "but the ending was awful , boring and bad ."
    tokens = tokenizer.tokenize(review)
    assert len(tokens) > 60 and any(t.startswith("##") for t in tokens)
    for maxlen in range(12, 40):  # cuts landing on every kind of token
        for mode in ("tail", "head+tail"):
            (short,) = truncation.truncate([review], tokenizer, maxlen, mode)
            assert tokenizer.tokenize(short) == cut(tokens, maxlen - 2, mode)  # less [CLS] and [SEP]
    assert truncation.truncate([review], tokenizer, 32, "head") == [review]  # ktrain cuts the head itself
    assert truncation.truncate(["a short one"], tokenizer, 32, "tail") == ["a short one"]


def test_like_saved_run_cuts_as_the_saved_run_did(tokenizer, tmp_path):
    review = ("the film opens well . " * 10) + "but the ending was awful , boring and bad ."
    assert truncation.like_saved_run([review], tmp_path, tokenizer) == [review]  # no metrics.json: ktrain's head
    (tmp_path / "metrics.json").write_text('{"args": {"maxlen": 32, "truncation": "head+tail"}}')
    assert truncation.like_saved_run([review], tmp_path, tokenizer) == truncation.truncate([review], tokenizer, 32, "head+tail")
    (tmp_path / "metrics.json").write_text('{"args": {"maxlen": 32, "truncation": "head"}}')
    assert truncation.like_saved_run([review], tmp_path, tokenizer) == [review]
