"""Length-grouped batches (train.py --padding grouped, the default): which reviews go together, what the model is
handed, and that evaluation in such batches gives the saved predictor's probabilities, in the reviews' order.

The runs with every other option (--strategy mirrored, --precision float16, --resume, --lr-find, --val-split,
--truncation) train with these batches too, being the default; their tests check that they did
(metrics.json's "padding").
"""

import math

import numpy as np
import pandas as pd
import pytest
import synthetic
from conftest import TINY, assert_scored_as_its_predictor, run_train
from ktrain.text.dataset import TransformerDataset

from imdb_distilbert.training import evaluation, learning

FLAGS = dict(zip(TINY[::2], TINY[1::2], strict=True))


def ktrain_like(lengths, maxlen, n_labels=2, seed=0):
    """A dataset as ktrain's preprocessing makes it: (n, 3, maxlen) token ids, attention masks and token types,
    each review padded to maxlen; one-hot labels. Token ids are 1000 + the review's index, so rows can be told apart."""
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), 3, maxlen), dtype=np.int64)
    for i, n in enumerate(lengths):
        x[i, 0, :n], x[i, 1, :n] = 1000 + i, 1
    y = np.eye(n_labels, dtype=np.int64)[rng.integers(0, n_labels, len(lengths))]
    return TransformerDataset(x, y, use_token_type_ids=False)


def test_bucket_widths_are_few_and_multiples_of_8():
    """At most 16 widths whatever maxlen is, each a multiple of 8 or maxlen itself; 13 at the tutorial's 400."""
    assert learning.bucket_width(400) == 32
    for maxlen in range(1, 513):
        bucket = learning.bucket_width(maxlen)
        widths = {min(maxlen, math.ceil(n / bucket) * bucket) for n in range(1, maxlen + 1)}
        assert len(widths) <= 16 and all(w % 8 == 0 or w == maxlen for w in widths), maxlen
    data = learning.LengthGroupedDataset(ktrain_like(range(1, 401), 400), 400)
    assert sorted({data.width([i]) for i in range(400)}) == [*range(32, 400, 32), 400]  # 13 widths


def test_auto_groups_only_where_it_saves_a_tenth_of_the_tokens():
    """--padding auto: grouped where reviews padded each to its own bucket would need at most 0.9 of fixed padding's
    tokens, else ktrain's fixed batches (as at maxlen 128 on IMDB, where 89% of the reviews reach the cut)."""
    assert learning.grouping_pays(ktrain_like(range(10, 401), 400), 400)  # half of the tokens
    assert not learning.grouping_pays(ktrain_like([128] * 90 + list(range(30, 40)), 128), 128)  # 0.93 of them
    assert learning.grouping_pays(ktrain_like([128] * 70 + [24] * 30, 128), 128)  # 0.76 of them
    assert not learning.grouping_pays(ktrain_like([121] * 100, 128), 128)  # 121 rounds up to the bucket: 128


def test_training_batches_are_hugging_faces_group_by_length():
    """Every review once per epoch, in ceil(n / batch_size) batches, full but the last; each batch of reviews of
    similar length (sorted within mega-batches of 50 batches), padded to its longest rounded up to the bucket;
    the batch with the longest review first, the others in a new random order every epoch, the same for a seed."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 520, 1003)  # some longer than maxlen: ktrain has cut them to 400
    data = learning.LengthGroupedDataset(ktrain_like(np.minimum(lengths, 400), 400), 400, seed=5)
    data.batch_size = 6
    assert (np.diff(data.lengths) <= 0).all()  # kept longest first
    epochs = [data.training_batches(epoch) for epoch in range(3)]
    for batches in epochs:
        assert len(batches) == math.ceil(1003 / 6)
        assert [len(b) for b in batches[:-1]] == [6] * 167 and len(batches[-1]) == 1003 % 6
        assert sorted(np.concatenate(batches)) == list(range(1003))
        assert 0 in batches[0]  # the longest review (a GPU that cannot hold it fails at the first step)
        for batch in batches:
            assert data.width(batch) == min(400, math.ceil(data.lengths[batch].max() / 32) * 32)
        # Grouped: within a mega-batch of 300 random reviews, neighbours in length differ by about 1.3 tokens; the
        # padding is mostly the rounding up to 32. Random batches of 6 would compute about 1.5x the real tokens.
        real = data.lengths.sum()
        assert real < data.tokens(batches) < 1.12 * real
        firsts = [b[0] for b in batches[1:-1]]
        assert firsts != sorted(firsts)  # the batches come in a shuffled order
    # a new grouping every epoch
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], epochs[1], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(epochs[1], data.training_batches(1), strict=True))  # reproducible
    other = learning.LengthGroupedDataset(ktrain_like(np.minimum(lengths, 400), 400), 400, seed=6)
    other.batch_size = 6
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], other.training_batches(0), strict=True))


def test_tf_dataset_hands_over_the_batches_without_cutting_a_token():
    """What Keras gets: each batch cut to its width, nothing but padding cut, labels with their reviews; training
    repeats with epoch after epoch's grouping (from first_epoch, which --resume sets), evaluation goes once,
    longest first; in_given_order() puts results back in the order of the data given."""
    lengths = [5, 17, 3, 30, 32, 9, 12, 24, 1, 16, 8, 20, 31]
    given = ktrain_like(lengths, 32)
    data = learning.LengthGroupedDataset(given, 32, seed=2)
    data.batch_size = 4
    index_of = lambda ids: int(ids[0]) - 1000  # noqa: E731  (the review's index in `given`)

    def check(batch, positions):
        ids, mask = batch[0]["input_ids"].numpy(), batch[0]["attention_mask"].numpy()
        assert (ids.shape == mask.shape == (len(positions), data.width(positions))
                and set(batch[0]) == {"input_ids", "attention_mask"})
        for row, position in zip(range(len(ids)), positions, strict=True):
            i = index_of(ids[row])
            assert i == data.order[position] and mask[row].sum() == lengths[i]  # every real token is there
            assert (ids[row] == given.x[i, 0, :ids.shape[1]]).all() and (batch[1].numpy()[row] == given.y[i]).all()

    data.first_epoch = 1
    handed = list(data.to_tfdataset(train=True).take(2 * 4))  # 4 batches per epoch: epochs 1 and 2
    for batch, positions in zip(handed, data.training_batches(1) + data.training_batches(2), strict=True):
        check(batch, positions)
    evaluated = list(data.to_tfdataset(train=False))
    assert len(evaluated) == 4
    for batch, positions in zip(evaluated, data.evaluation_batches(), strict=True):
        check(batch, positions)
    assert [w for w in map(data.width, data.evaluation_batches())] == [32, 24, 16, 8]
    seen = np.concatenate([b[0]["input_ids"].numpy()[:, 0] - 1000 for b in evaluated])
    assert list(data.in_given_order(seen)) == list(range(len(lengths)))
    assert (data.get_y() == given.y[data.order]).all()  # ktrain's own views agree with the sorted order


def test_fixed_padding_keeps_ktrains_datasets(synthetic_splits):
    from imdb_distilbert.data import dataset

    train_df, test_df = dataset.load_splits(synthetic_splits / "train.xlsx", synthetic_splits / "test.xlsx", 40, 1)
    for padding, kind in (("fixed", TransformerDataset), ("grouped", learning.LengthGroupedDataset)):
        train, val, _ = learning.preprocess(train_df, test_df, 32, padding=padding)
        assert type(train) is kind and type(val) is kind, padding


@pytest.fixture(scope="module")
def bfloat16_learner(synthetic_splits):
    """A tiny model trained in process for an epoch in mixed bfloat16, on length-grouped batches."""
    from imdb_distilbert.data import dataset

    train_df, test_df = dataset.load_splits(synthetic_splits / "train.xlsx", synthetic_splits / "test.xlsx", 96, 1)
    learning.set_seed(FLAGS["--seed"])
    train, val, preproc = learning.preprocess(train_df, test_df, FLAGS["--maxlen"], seed=FLAGS["--seed"])
    try:
        learner = learning.build_learner(train, val, preproc, FLAGS["--batch-size"], "bfloat16")
        trained = learner.model  # fit() then puts a float32 copy of it in its place
        assert learning.precision_of(learner) == "bfloat16"
        history = learning.fit(learner, FLAGS["--lr"], 1)
    finally:
        # build_learner sets it; later tests need float32
        learning.tf.keras.mixed_precision.set_global_policy("float32")
    return learner, preproc, history, test_df, trained.train_tf_function.experimental_get_tracing_count()


def test_bfloat16_trains_on_grouped_batches_with_one_trace(bfloat16_learner):
    """ktrain takes the batches through its own Learner; TensorFlow traces the training step as for ktrain's fixed
    padding (once, and once more when the optimizer makes its variables), not once per width."""
    learner, preproc, history, _, traces = bfloat16_learner
    assert type(learner).__name__ == "TransformerTextClassLearner"  # what ktrain picks for its own TransformerDataset
    assert isinstance(learner.train_data, learning.LengthGroupedDataset)
    assert isinstance(learner.val_data, learning.LengthGroupedDataset)
    assert len(history["lr"]) == math.ceil(96 / FLAGS["--batch-size"]) and len(history["val_loss"]) == 1
    widths = {learner.train_data.width(b) for b in learner.train_data.training_batches(0)}
    assert len(widths) >= 2, widths
    assert traces <= 2
    assert learning.padding_of(learner)["padding"] == "grouped" and learning.padding_of(learner)["token_share"] < 1


def test_grouped_evaluation_gives_the_predictors_probabilities(bfloat16_learner):
    """After bfloat16 training (fit hands back a float32 model), evaluation's grouped batches and the predictor."""
    import ktrain

    learner, preproc, _, test_df, _ = bfloat16_learner
    texts = list(test_df["Reviews"]) + list(synthetic.reviews(20, seed=3, long=True)["Reviews"])  # some cut at maxlen
    expected = ktrain.get_predictor(learner.model, preproc).predict(texts, return_proba=True)
    proba = evaluation.predict(learner, preproc, texts, "grouped")
    assert proba.shape == expected.shape and np.abs(proba - expected).max() <= 1e-5


def test_saved_predictor_predicts_what_evaluation_reported(trained, synthetic_splits):
    """The train.py run: its test metrics (scored in grouped batches) are the loaded predictor's own, review by
    review; so is learning.predict_proba, in the given order, on the test split and on reviews longer than maxlen;
    and the last epoch's validation (grouped batches of the test split, the same weights) agrees."""
    import ktrain

    output = trained[0]
    metrics = assert_scored_as_its_predictor(output, synthetic_splits / "test.xlsx")
    assert metrics["padding"]["padding"] == "grouped" and metrics["padding"]["bucket_width"] == 8
    assert 0.5 < metrics["padding"]["token_share"] < 1
    predictor = ktrain.load_predictor(str(output))
    texts = list(pd.read_excel(synthetic_splits / "test.xlsx", dtype=str)["Reviews"])
    texts += list(synthetic.reviews(40, seed=5, long=True)["Reviews"]) + ["great", ""]
    expected = predictor.predict(texts, return_proba=True)
    proba = learning.predict_proba(predictor.model, predictor.preproc, texts)
    assert np.abs(proba - expected).max() <= 1e-5  # row i is text i's
    history = metrics["history"]
    assert history["val_accuracy"][-1] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert history["val_loss"][-1] == pytest.approx(metrics["loss"], abs=1e-4)


def test_padding_fixed_gives_ktrains_padding_back(synthetic_splits, tmp_path):
    """--padding fixed: ktrain's batches (every review padded to maxlen) and ktrain's predictor for the evaluation;
    ktrain's steps per epoch. One epoch: the learning itself is ktrain's own, and the tutorial's."""
    output = tmp_path / "fixed"
    result = run_train("--data-dir", synthetic_splits, "--output", output, *TINY, "--padding", "fixed", "--epochs", 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = assert_scored_as_its_predictor(output, synthetic_splits / "test.xlsx")
    assert metrics["padding"] == {"padding": "fixed", "bucket_width": None, "token_share": 1.0}
    assert (metrics["args"]["padding"] == "fixed"
            and len(metrics["history"]["lr"]) == math.ceil(400 / FLAGS["--batch-size"]))
