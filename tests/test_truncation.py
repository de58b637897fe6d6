"""--truncation: which tokens of a long review are kept, on token sequences, on real text, and in real training runs."""

import json

import numpy as np
import pytest
import synthetic
from conftest import assert_scored_as_its_predictor, at_least, at_most

from imdb_distilbert.data import truncation
from imdb_distilbert.data.truncation import cut
from imdb_distilbert.inference import backends

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
    assert (truncation.like_saved_run([review], tmp_path, tokenizer)
            == truncation.truncate([review], tokenizer, 32, "head+tail"))
    (tmp_path / "metrics.json").write_text('{"args": {"maxlen": 32, "truncation": "head"}}')
    assert truncation.like_saved_run([review], tmp_path, tokenizer) == [review]


# Trained for real: reviews longer than maxlen 32 whose verdict is in their first words or in their last.

def accuracy_by_verdict_place(folder):
    """Accuracy of the predictor in `folder` (cutting as its run did: predict.py --long-reviews cut) on 100 fresh
    long reviews with the verdict at their start, and 100 with it at their end."""
    model = backends.KtrainBackend(folder, long_reviews="cut")
    found = {}
    for at in ("start", "end"):
        fresh = synthetic.reviews(100, seed=41, long=True, at=at)
        predicted = np.array(model.classes)[model.predict_proba(list(fresh["Reviews"])).argmax(1)]
        found[at] = float(np.mean(predicted == fresh["Sentiment"].to_numpy()))
    return found


def test_tail_reads_the_end_only(cut_run):
    """Trained with --truncation tail, the model learns the verdicts that close a review, and cannot know
    those that open it (they were cut: chance, about 50%)."""
    folder = cut_run("tail")
    assert json.loads((folder / "metrics.json").read_text())["args"]["truncation"] == "tail"
    found = accuracy_by_verdict_place(folder)
    # 0.8: the worst training of docs/testing.md's table gave 0.94 on these 100 reviews; at the start, about 0.5.
    at_least("truncation: tail run, accuracy when the verdict ends the review", found["end"], 0.8)
    at_most("truncation: tail run, accuracy when the verdict opens the review", found["start"], 0.75)


def test_head_and_tail_reads_both_ends(cut_run):
    """Trained with --truncation head+tail, the model reads a quarter of its budget from the start and the rest
    from the end, so it learns the verdicts at both; the test split's accuracy in metrics.json says the same."""
    folder = cut_run("head+tail")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["args"]["truncation"] == "head+tail"
    found = accuracy_by_verdict_place(folder)
    at_least("truncation: head+tail run, accuracy when the verdict opens the review", found["start"], 0.9)
    at_least("truncation: head+tail run, accuracy when the verdict ends the review", found["end"], 0.9)
    at_least("truncation: head+tail run, test accuracy (metrics.json)", metrics["accuracy"], 0.9)


@pytest.mark.parametrize("mode", ["tail", "head+tail"])
def test_cut_runs_evaluate_as_their_predictors(cut_run, both_ends_splits, mode):
    """Trained and evaluated in length-grouped batches of reviews cut the `mode` way: the test metrics are what the
    saved predictor gives for the test split cut the same way (as predict.py cuts it)."""
    metrics = assert_scored_as_its_predictor(cut_run(mode), both_ends_splits / "test.xlsx")
    assert metrics["padding"]["padding"] == "grouped"
