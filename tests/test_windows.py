"""Windows over long reviews (data/windows.py): where they start and end, the cap, and how windows combine."""

import json

import numpy as np
import pytest
import synthetic
from conftest import TINY, assert_user_error, at_least, at_most, run_predict, run_train

from imdb_distilbert.data import windows
from imdb_distilbert.inference import backends


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


def test_the_combinations():
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    assert np.allclose(windows.combine(proba, [0, 0, 1], 2, "mean-proba"), [[0.65, 0.35], [0.2, 0.8]])
    assert np.allclose(windows.combine(proba, [0, 0, 1], 2, "max-confidence"), [[0.9, 0.1], [0.2, 0.8]])
    assert np.array_equal(windows.combine(proba, [0, 0, 1], 2)[1], proba[2])  # one window: its answer, unchanged


# With the tests' tiny model's tokenizer.

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained("distilbert-base-uncased")


READ = windows.Reading(maxlen=32, cut="head", long_reviews="windows")


def test_window_texts_tokenize_to_their_pieces_and_the_ends_are_the_cuts(tokenizer):
    from imdb_distilbert.data import truncation

    review = ("the film opens well . zq xv " * 20) + "but the ending was awful , boring and bad ."  # zq: z ##q
    tokens = tokenizer.tokenize(review)
    found = windows.of_texts([review, "a short one"], tokenizer, READ)
    spans, _ = windows.spans(tokens, 30)
    assert list(found.counts()) == [len(spans), 1] and found.pieces[-1] == "a short one"
    assert [tokenizer.tokenize(t) for t in found.pieces[:-1]] == [tokens[a:b] for a, b in spans]
    for mode, ends in (("head", found.first), ("tail", found.last)):  # the first window is head's cut, the last tail's
        (cut,) = truncation.truncate([review], tokenizer, 32, mode)
        kept = tokenizer.tokenize(cut)[:30]  # head: truncate leaves the cut to ktrain, which keeps 30 pieces
        assert tokenizer.tokenize(ends(np.array(found.pieces, dtype=object))[0]) == kept


def test_token_ids_give_the_same_windows_as_texts(tokenizer):
    """The ONNX backends window token ids (of_ids), the ktrain backend texts (of_texts): the same pieces."""
    reviews = list(synthetic.reviews(20, seed=3, long=True, at="middle")["Reviews"]) + ["short and sweet"]
    encodings = [(e.tokens, e.ids) for e in tokenizer.backend_tokenizer.encode_batch(reviews)]
    for reading in (READ, windows.Reading(32, "head+tail"), windows.Reading(32, "tail", "windows", 0, 2)):
        by_ids, by_texts = windows.of_ids(encodings, reading), windows.of_texts(reviews, tokenizer, reading)
        assert np.array_equal(by_ids.owners, by_texts.owners) and by_ids.capped == by_texts.capped
        assert by_ids.pieces == [tokenizer(t)["input_ids"] for t in by_texts.pieces]


def accuracy(model, frame):
    predicted = np.array(model.classes)[model.predict_proba(list(frame["Reviews"])).argmax(1)]
    return float(np.mean(predicted == frame["Sentiment"].to_numpy()))


# Trained for real on the both-ends splits (conftest: reviews longer than maxlen 32 whose verdict opens or closes
# them) with --train-windows: every window is a training review, so the model also learns that filler alone says
# nothing (windows of filler come with both labels). A model trained only on short reviews did not: it called
# filler alone negative with probability 1, and the mean of logits followed that window.

@pytest.fixture(scope="module")
def windows_run(both_ends_splits, tmp_path_factory):
    """(predictor folder, CompletedProcess) of train.py --train-windows with TINY on the both-ends splits."""
    output = tmp_path_factory.mktemp("train-windows") / "predictor"
    result = run_train("--data-dir", both_ends_splits, "--output", output, *TINY, "--train-windows",
                       "--padding", "grouped")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result


def test_training_on_windows_reads_both_ends(windows_run):
    """The model learns verdicts at both ends (a head run learns only the opening ones: test_truncation)."""
    output, result = windows_run
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["n_train_windows"] > metrics["n_train"] and "--train-windows:" in result.stdout
    model = backends.KtrainBackend(output)
    for at in ("start", "end"):
        at_least(f"windows: --train-windows run, accuracy on verdicts at the {at}",
                 accuracy(model, synthetic.reviews(100, seed=47, long=True, at=at)), 0.9)


def test_a_verdict_in_the_middle_is_read_by_windows_only(windows_run):
    """100 reviews whose verdict is only in their middle (synthetic.middle_review): neither the first nor the last
    30 word pieces hold any of it, so head and tail guess (about 0.5); windows read it."""
    middle = synthetic.reviews(100, seed=43, long=True, at="middle")
    found = {how: accuracy(backends.KtrainBackend(windows_run[0], **settings), middle)
             for how, settings in (("windows", {"long_reviews": "windows"}), ("head", {"long_reviews": "cut"}),
                                   ("tail", {"long_reviews": "cut", "cut": "tail"}))}
    at_least("windows: accuracy of windows on verdicts in the middle", found["windows"], 0.9)
    at_most("windows: accuracy of head on verdicts in the middle", found["head"], 0.75)
    at_most("windows: accuracy of tail on verdicts in the middle", found["tail"], 0.75)


def test_the_run_reads_windows_and_reports_every_way(trained):
    """The run chose windows (the default): metrics.json and the report compare head, tail, head+tail and windows,
    and the metrics are windows'."""
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    found = metrics["long_reviews"]
    assert metrics["args"]["long_reviews"] == found["used"] == "windows"
    assert set(found["readings"]) == {"head", "tail", "head+tail", "windows"}
    assert found["readings"]["windows"]["accuracy"] == metrics["accuracy"]
    assert "read as windows above" in (trained[0] / "report.txt").read_text()


@pytest.mark.parametrize("backend", ["ktrain", "onnx"])
def test_a_reviews_answer_does_not_depend_on_its_batch_mates(trained, exported, backend):
    """Windows of many reviews share batches (ONNX: sorted by length); each review's answer is the one it gets
    alone, and ONNX gives what ktrain gives."""
    folder = exported[0] if backend == "onnx" else trained[0]
    reviews = list(synthetic.reviews(12, seed=44, long=True, at="middle")["Reviews"])
    reviews += list(synthetic.reviews(12, seed=45)["Reviews"])  # short ones, one window each
    model = backends.load(folder, backend, batch_size=5, long_reviews="windows")
    together = model.predict_proba(reviews)
    alone = np.concatenate([model.predict_proba([r]) for r in reviews[:3] + reviews[-2:]])
    assert np.abs(together[[0, 1, 2, -2, -1]] - alone).max() <= 1e-5
    reference = backends.KtrainBackend(trained[0], long_reviews="windows").predict_proba(reviews)
    assert np.abs(together - reference).max() <= 1e-4


def test_the_cap_is_said_and_kept(trained, tmp_path):
    """A review of 20,000 words reads --max-windows windows spread over it, and predict.py says so."""
    huge = " ".join(synthetic.reviews(2000, seed=46)["Reviews"])
    result = run_predict("--model", trained[0], "--max-windows", 3, "--json", "-", input=f"{huge}\ngreat film\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: 1 review was longer than 3 windows" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and rows[1]["label"] == "pos"
    model = backends.KtrainBackend(trained[0], max_windows=3)
    said = []
    model.say = said.append
    assert np.allclose(model.predict_proba([huge]), [[rows[0]["prob_neg"], rows[0]["prob_pos"]]], atol=1e-5)
    assert len(said) == 1
    result = run_predict("--model", trained[0], "--long-reviews", "cut", "--json", "-", input=huge + "\n")
    assert result.returncode == 0 and "note:" not in result.stderr


def test_bad_reading_options_are_one_sentence(trained):
    assert_user_error(run_predict("--model", trained[0], "--window-overlap", 15, "great"),
                      "--window-overlap must be from 0 to 14")
    assert_user_error(run_predict("--model", trained[0], "--max-windows", 0, "great"), "--max-windows")
