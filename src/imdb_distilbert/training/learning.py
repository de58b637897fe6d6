"""Fine-tune DistilBERT with ktrain: preprocess, build, train, save. The tutorial's recipe.

Imported by src/train.py and by the notebook, so the two run exactly the same code.

The ktrain and Keras objects are hinted `Any`: `learner` is a ktrain Learner, `preproc` ktrain's DistilBERT
preprocessor (a ktrain.text.preprocessor.TransformersPreprocessor), `model` the Hugging Face TF model (a Keras 2
model, learner.model).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imdb_distilbert import compat  # first, before TensorFlow: selects Keras 2 (the package does it too)
from imdb_distilbert.network import (
    BASE_MODEL as MODEL_NAME,  # distilbert-base-uncased: what ktrain's DistilBERT preprocessing loads for English
)

compat.numpy_inf()
compat.offline_if_cached(MODEL_NAME)
compat.check_keras2()
compat.recognise_dataset_subclasses()
import ktrain  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from ktrain import text, utils  # noqa: E402
from ktrain.lroptimize.triangular import CyclicLR  # noqa: E402
from ktrain.text.dataset import TransformerDataset  # noqa: E402

from imdb_distilbert import files  # noqa: E402
from imdb_distilbert.data import batching, truncation, windows  # noqa: E402
from imdb_distilbert.data.batching import bucket_width  # noqa: E402  (also learning.bucket_width for the tests)
from imdb_distilbert.data.dataset import LABEL, TEXT  # noqa: E402
from imdb_distilbert.errors import UserError  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, so a run can be repeated."""
    tf.keras.utils.set_random_seed(seed)


def preprocess(train_df: pd.DataFrame, val_df: pd.DataFrame, maxlen: int, cut: str = "head", padding: str = "auto",
               seed: int = 0, classes: Sequence[str] | None = None,
               train_windows: windows.Reading | None = None) -> tuple[TransformerDataset, TransformerDataset, Any]:
    """Tokenize both splits for DistilBERT. Returns ktrain's (train, val, preproc).

    `classes`: the labels in the order of the model's outputs (dataset.check_labels; default: sorted as text, as
    ktrain sorts them). preproc.get_classes() gives them in that order, and the saved predictor with it.

    `cut` says how reviews longer than `maxlen` tokens are cut (truncation.MODES); "head" is
    the tutorial's (and ktrain's) behaviour. `padding` "grouped" hands both splits over as
    LengthGroupedDatasets (batches of reviews of similar length, each padded only to its longest),
    shuffled with `seed`; "fixed" keeps ktrain's own datasets, every review padded to `maxlen`;
    "auto" groups where that saves at least a tenth of the tokens (grouping_pays), else is "fixed".
    `train_windows` (train.py --train-windows): every window of a long training review becomes a training review
    with its label (windows_of); the validation split is cut as `cut` says.
    """
    try:
        if train_windows:
            train_df = windows_of(train_df, train_windows)
        if cut != "head":
            train_df, val_df = (cut_reviews(df, maxlen, cut) for df in (train_df, val_df))
        train_df, val_df, label_columns = labelled(train_df, val_df, classes)
        train, val, preproc = text.texts_from_df(
            train_df, TEXT, label_columns=label_columns, val_df=val_df,
            maxlen=maxlen, preprocess_mode="distilbert",
            # Without lang=, ktrain guesses the language from the texts, and any guess but
            # English silently switches to distilbert-base-multilingual-cased.
            lang="en",
        )
    except (OSError, ValueError) as error:
        if isinstance(error, OSError) or "Could not load tokenizer" in str(error):
            raise UserError(
                f"could not load {MODEL_NAME} from the Hugging Face Hub or its local cache ({first_line(error)}); "
                "connect to the internet once so it is downloaded and cached, "
                "or set HF_HOME to a cache that holds it."
            ) from None
        raise
    if padding == "grouped" or (padding == "auto" and grouping_pays(train, maxlen)):
        train, val = (LengthGroupedDataset(data, maxlen, seed) for data in (train, val))
    return train, val, preproc


def labelled(train_df: pd.DataFrame, val_df: pd.DataFrame,
             classes: Sequence[str] | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The splits and the label_columns to hand ktrain's texts_from_df so that its classes are `classes`, in order.

    ktrain encodes a label column's values sorted as text (neg, pos; but 1, 10, 2 for ratings 1-10). Where that
    is the order wanted (IMDB, and any labels that are words), the label column goes to ktrain as it is; else
    one column per class, 1 for a review of that class (a one-hot encoding), in the order of `classes`.
    """
    if classes is None or list(classes) == sorted(classes):
        return train_df, val_df, [LABEL]
    frames = [pd.DataFrame({TEXT: df[TEXT].to_numpy(), **{c: (df[LABEL] == c).to_numpy().astype(int) for c in classes}})
              for df in (train_df, val_df)]
    return *frames, list(classes)


def windows_of(df: pd.DataFrame, reading: windows.Reading,
               tokenizer: PreTrainedTokenizerBase | None = None) -> pd.DataFrame:
    """A review per window of `df`'s reviews (data/windows.py), each with its review's label; reviews that fit stay
    as they are. Said, with how many training reviews it makes."""
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(MODEL_NAME)
    found = windows.of_texts(list(df[TEXT]), tokenizer, reading)
    long = int((found.counts() > 1).sum())
    print(f"--train-windows: {long} of {len(df)} training reviews are longer than maxlen {reading.maxlen}; their "
          f"windows make {len(found.pieces)} training reviews in all")
    return pd.DataFrame({TEXT: found.pieces, LABEL: df[LABEL].to_numpy()[found.owners]})


def cut_reviews(df: pd.DataFrame, maxlen: int, cut: str,
                tokenizer: PreTrainedTokenizerBase | None = None) -> pd.DataFrame:
    """A copy of `df` whose reviews are cut to `maxlen` tokens the `cut` way (see data/truncation.py)."""
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(MODEL_NAME)
    df = df.copy()
    df[TEXT] = truncation.truncate(list(df[TEXT]), tokenizer, maxlen, cut)
    return df


# --- Batches of reviews of similar length, each padded only to its longest (the policy: data/batching.py) -------

def grouping_pays(data: TransformerDataset, maxlen: int) -> bool:
    """batching.grouping_pays for ktrain's `data`: whether grouping by length would compute at most
    batching.GROUPING_PAYS of fixed padding's tokens. At maxlen 400 IMDB's reviews need 0.64 of them and grouping
    trains 1.6x faster; at 128 most reviews reach the cut (0.97), so grouping saves nothing and ktrain's own
    batches, fully shuffled, are kept (docs/training.md)."""
    return batching.grouping_pays(data.x[:, 1].sum(axis=1), maxlen)  # the attention mask: 1 for each real token


class LengthGroupedDataset(TransformerDataset):
    """ktrain's TransformerDataset (reviews as DistilBERT's token ids), in batches of reviews of similar length.

    ktrain pads every review to maxlen. IMDB's reviews hold 254 tokens on average at maxlen 400, so a third of
    that work would be padding. Here each batch is padded only to its longest review, rounded up to a multiple
    of bucket_width(maxlen). Padding is masked out of attention, so a review's logits do not depend on it.

    - Training, to_tfdataset(train=True): every epoch, Hugging Face's group_by_length scheme
      (batching.training_epoch), the batch with the longest review first (a batch too large for a GPU's memory
      fails at once, not an hour in). As many batches as ktrain makes (ceil(n / batch_size)), so steps per
      epoch and the one-cycle schedule are ktrain's.
    - Evaluation, to_tfdataset(train=False): the reviews in order of length, longest first.

    The reviews are kept sorted that way (review k was review order[k] of the data it was made from;
    in_given_order() undoes the sort), so ktrain's own views of it (get_y, learner.predict) agree.
    """

    def __init__(self, data: TransformerDataset, maxlen: int, seed: int = 0) -> None:
        lengths = data.x[:, 1].sum(axis=1)  # the attention mask: 1 for each real token
        self.order = batching.by_length(lengths, longest_first=True)
        x = data.x[self.order].astype(np.int32)
        if x.shape[2] < maxlen:  # ktrain pads a validation split only to its longest review
            x = np.pad(x, [(0, 0), (0, 0), (0, maxlen - x.shape[2])])
        super().__init__(x, data.y[self.order], data.batch_size, data.use_token_type_ids)
        self.lengths, self.maxlen, self.seed = lengths[self.order], maxlen, seed
        self.first_epoch = 0  # the training epoch the next to_tfdataset(train=True) starts at (--resume sets it)

    def training_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of positions) of training epoch `epoch`, counted from 0; the same for the same seed."""
        return batching.training_epoch(len(self.x), self.batch_size, self.seed, epoch)

    def evaluation_batches(self) -> list[np.ndarray]:
        """The batches of evaluation: consecutive positions, longest reviews first."""
        return batching.chunks(np.arange(len(self.x)), self.batch_size)

    def width(self, batch: np.ndarray) -> int:
        """The tokens `batch` is padded to: its longest review's, rounded up to the bucket width, at most maxlen."""
        return int(batching.padded_width(self.lengths[batch].max(), self.maxlen))

    def tokens(self, batches: Iterable[np.ndarray]) -> int:
        """Tokens (padding included) that `batches` hand the model."""
        return sum(len(batch) * self.width(batch) for batch in batches)

    def in_given_order(self, values: np.ndarray) -> np.ndarray:
        """`values` (one row per review, in this dataset's order) in the order of the data it was made from."""
        return batching.in_given_order(values, self.order)

    def to_tfdataset(self, train: bool = True) -> tf.data.Dataset:
        """The batches as a tf.data.Dataset, as ktrain's Learner asks for them: for training, repeated
        without end, grouped anew every epoch; for evaluation, once, longest reviews first."""
        epochs = itertools.count(self.first_epoch)
        names = ["input_ids", "attention_mask", "token_type_ids"][:3 if self.use_token_type_ids else 2]

        def reviews() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | np.generic]]:
            # One review at a time, cut to its batch's width; batch() below puts each batch together again.
            # Batching in tf.data (all batches full but the last) lets tf.distribute split each batch
            # between replicas under --strategy mirrored, as it does ktrain's.
            for batch in self.training_batches(next(epochs)) if train else self.evaluation_batches():
                width = self.width(batch)
                for i in batch:
                    yield {name: self.x[i, row, :width] for row, name in enumerate(names)}, self.y[i]

        label = tf.TensorSpec([], tf.float32) if self.y.ndim == 1 else tf.TensorSpec([None], tf.int64)  # as ktrain's
        features = {name: tf.TensorSpec([None], tf.int32) for name in names}
        dataset = tf.data.Dataset.from_generator(reviews, output_signature=(features, label)).batch(self.batch_size)
        return dataset.repeat() if train else dataset


def predict_proba(model: Any, preproc: Any, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
    """Class probabilities (n, classes) for `texts`, in their order, from `model` in length-grouped batches.

    The same numbers, to float rounding (1e-5), as ktrain.get_predictor(model, preproc).predict(texts,
    return_proba=True): the same tokens (ktrain's preprocessing), without computing ktrain's padding to maxlen.
    """
    data = LengthGroupedDataset(preproc.preprocess_test(list(texts), verbose=0), preproc.maxlen)
    data.batch_size = batch_size
    logits = model.predict(data.to_tfdataset(train=False), verbose=1)
    logits = getattr(logits, "logits", logits)  # a Hugging Face model's output
    return data.in_given_order(tf.nn.softmax(tf.convert_to_tensor(logits)).numpy())


def read_proba(model: Any, preproc: Any, texts: Sequence[str], reading: windows.Reading) -> np.ndarray:
    """predict_proba with long reviews read the `reading` way: cut, or windows combined (data/windows.py)."""
    found = windows.of_texts(list(texts), preproc.get_tokenizer(), reading)
    return found.combine(predict_proba(model, preproc, found.pieces))


def predictor_proba(learner: Any, preproc: Any, texts: Sequence[str], reading: windows.Reading) -> np.ndarray:
    """What the saved predictor answers for `texts`, computed as `predict.py --backend ktrain` computes it: ktrain's
    predictor, long reviews read as the run chose (`reading`: --truncation, --long-reviews)."""
    from imdb_distilbert.inference import backends

    return backends.predict_like_saved_run(ktrain.get_predictor(learner.model, preproc), texts, None, reading)


def padding_of(learner: Any) -> dict[str, str | int | float | None]:
    """How `learner`'s training batches are padded, and the tokens a training epoch computes as a share of
    padding every review to maxlen (ktrain's way)."""
    data = learner.train_data
    if not isinstance(data, LengthGroupedDataset):
        return {"padding": "fixed", "bucket_width": None, "token_share": 1.0}
    share = data.tokens(data.training_batches(0)) / (len(data.x) * data.maxlen)
    return {"padding": "grouped", "bucket_width": bucket_width(data.maxlen), "token_share": round(share, 3)}


MIXED_POLICY = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def choose_precision(precision: str = "auto") -> str:
    """`precision` with "auto" decided: bfloat16 when training on a CPU that computes it natively
    (AVX-512 BF16 or AMX, about 1.5x faster, see docs/performance.md), else float32 (GPUs, other CPUs).

    float16 is never chosen automatically: it is the opt-in for GPUs with float16 tensor cores
    (T4, V100, L4, A100, ...); on a CPU it is correct but slow.
    """
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "float32"  # the tutorial's setting; GPUs such as Colab's T4 have no fast bfloat16
    return "bfloat16" if cpu_has_bf16() else "float32"


# oneDNN instruction sets without bfloat16 products. Capped at one of these (ONEDNN_MAX_CPU_ISA=AVX2, say),
# oneDNN aborts on a bfloat16 product ("could not create a primitive descriptor for the matmul primitive").
ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions that TensorFlow may use: read from /proc/cpuinfo
    (False off Linux), unless ONEDNN_MAX_CPU_ISA holds oneDNN to an instruction set without them."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISAS_WITHOUT_BF16:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_learner(train: TransformerDataset, val: TransformerDataset | None, preproc: Any, batch_size: int,
                  precision: str = "auto", strategy: str = "default") -> Any:
    """DistilBERT with a fresh classification head, wrapped in a ktrain Learner.

    With `precision` bfloat16 or float16 (mixed precision), the weights stay float32 and the matrix
    products run in the 16-bit type; fit() hands back a float32 model for evaluating and saving.
    For float16, Keras wraps the optimizer in a LossScaleOptimizer when the model is compiled
    (dynamic loss scaling, so small gradients do not underflow to zero).
    With `strategy` "mirrored", the model is copied onto every GPU (see distribution()); each copy
    trains on `batch_size` reviews per step, so a step sees `batch_size` x replicas.
    """
    precision = choose_precision(precision)
    tf.keras.mixed_precision.set_global_policy(MIXED_POLICY.get(precision, "float32"))
    strategy = distribution(strategy)
    # The model's and the optimizer's variables must be made inside the scope: text_classifier creates and
    # compiles the model, get_learner keeps it (see ktrain issues #60, #78 and #122).
    with strategy.scope():
        compat.fresh_optimizer()
        model = text.text_classifier("distilbert", train_data=train, preproc=preproc)
        if precision in MIXED_POLICY:
            # The last layer in float32, as Keras advises for mixed precision: the logits, and so the loss the
            # lr finder and the history report, keep float32's resolution (bfloat16 has 8 significant bits).
            model.classifier._set_dtype_policy(tf.keras.mixed_precision.Policy("float32"))
        return ktrain.get_learner(model, train_data=train, val_data=val,
                                  batch_size=batch_size * strategy.num_replicas_in_sync)


def distribution(strategy: str = "default") -> tf.distribute.Strategy:
    """The tf.distribute strategy named `strategy`: "default" (one device: the first GPU, else the CPU)
    or "mirrored" (tf.distribute.MirroredStrategy: one copy of the model per GPU of this machine, its
    gradients summed across the copies at every step; with no GPU, one per logical CPU device, normally one)."""
    if strategy == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def distribution_of(learner: Any) -> dict[str, str | int | list[str]]:
    """How `learner` trains: strategy, replicas, their devices, and the batch of one training step."""
    strategy = learner.model.distribute_strategy
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    return {"strategy": "mirrored" if mirrored else "default", "replicas": strategy.num_replicas_in_sync,
            "devices": list(strategy.extended.worker_devices) if mirrored else [],
            "global_batch_size": learner.batch_size}


def precision_of(learner: Any) -> str:
    """The arithmetic `learner`'s model computes in: "bfloat16" or "float16" (mixed precision), or "float32"."""
    return learner.model.compute_dtype


def to_float32(learner: Any) -> None:
    """After mixed-precision training: the same weights in a float32 model, in place of learner.model.

    So the test metrics describe exactly the predictor that is saved, and the saved predictor
    computes in float32 wherever it is loaded (and matches its ONNX export).
    """
    trained = learner.model
    tf.keras.mixed_precision.set_global_policy("float32")
    if trained.compute_dtype == "float32":
        return
    model = type(trained)(trained.config)
    model(model.dummy_inputs, training=False)  # creates the weights
    trained_weights = {name_in_model(w): w for w in trained.weights}
    for weight in model.weights:
        weight.assign(trained_weights[name_in_model(weight)])
    optimizer = getattr(trained.optimizer, "inner_optimizer", trained.optimizer)  # float16: unwrap the loss scaling
    model.compile(loss=trained.loss, metrics=["accuracy"],
                  optimizer=type(optimizer).from_config(optimizer.get_config()))
    learner.model = model


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the classifier layer's weights and bias by `temperature`, so that the model's logits are divided by
    it: calibrated probabilities wherever the saved model is loaded (training/calibration.py)."""
    layer = model.classifier  # Hugging Face's TFDistilBertForSequenceClassification: the last Dense layer
    for weight in (layer.kernel, layer.bias):
        weight.assign(weight / temperature)


def name_in_model(weight: tf.Variable) -> str:
    """A weight's name without the model's own (numbered) name: 'distilbert/embeddings/.../weight:0'."""
    return weight.name.split("/", 1)[-1]


def find_lr(learner: Any, class_weight: Mapping[int, float] | None = None) -> dict[str, Any]:
    """ktrain's learning-rate finder: train briefly with a rising rate and record the loss.

    The model's weights are restored afterwards. Returns the rates, the losses and ktrain's
    suggested rates (steepest descent, minimum loss / 10, longest valley).
    """
    learner.lr_find(verbose=1, class_weight=class_weight)
    finder = learner.lr_finder
    if finder is None or not finder.find_called():  # ktrain swallows Ctrl-C in lr_find
        raise KeyboardInterrupt
    return {"lrs": [float(x) for x in finder.lrs], "losses": [float(x) for x in finder.losses],
            "suggested": compat.lr_suggestions(finder)}


def fit(learner: Any, lr: float, epochs: int, checkpoints: Checkpoints | None = None,
        callbacks: Iterable[tf.keras.callbacks.Callback] = (),
        class_weight: Mapping[int, float] | None = None) -> dict[str, list[float]]:
    """Train with the one-cycle policy (learning rate up, then down) for `epochs` epochs.

    `checkpoints` (a Checkpoints) saves the model after every epoch; when it was loaded from an
    interrupted run, training continues from its last finished epoch with the rest of the same
    schedule. `callbacks`: more Keras callbacks (the speed benchmark times steps with one). `class_weight`: each
    class's weight in the loss, by class position (dataset.class_weights; None: all 1, ktrain's default).
    Returns the history: per-epoch loss/accuracy (train and validation) and the learning rate at every step.
    Afterwards learner.model computes in float32, however it was trained (see build_learner).
    """
    callbacks = [*callbacks, checkpoints] if checkpoints else list(callbacks)
    done = checkpoints.done if checkpoints else 0
    if done == 0:
        history = learner.fit_onecycle(lr, epochs, callbacks=callbacks, class_weight=class_weight).history
    else:
        print(f"resuming from the checkpoint of epoch {done} of {epochs} in {checkpoints.folder}")
        steps_per_epoch = math.ceil(utils.nsamples_from_data(learner.train_data) / learner.batch_size)
        if isinstance(learner.train_data, LengthGroupedDataset):
            learner.train_data.first_epoch = done  # the same batches as an uninterrupted run's next epochs
        schedule = onecycle_schedule(lr, epochs, steps_per_epoch)
        schedule.set_model(learner.model)
        schedule.on_train_begin()
        for _ in range(done * steps_per_epoch):  # replay the finished steps of the schedule
            schedule.on_batch_end(0)
        if done < epochs:
            learner.fit(lr, epochs - done, callbacks=[*callbacks, schedule], steps_per_epoch=steps_per_epoch,
                        class_weight=class_weight)
        history = {"lr": schedule.history["lr"]}
    if checkpoints:
        history.update(checkpoints.history)  # all epochs, including those before a resume
    to_float32(learner)
    return {k: [float(x) for x in v] for k, v in history.items() if k != "iterations" and k != "momentum"}


def onecycle_schedule(lr: float, epochs: int, steps_per_epoch: int) -> CyclicLR:
    """The learning-rate callback `learner.fit_onecycle(lr, epochs)` builds (ktrain 0.41.4, core.py)."""
    return CyclicLR(base_lr=lr / 10, max_lr=lr, step_size=math.ceil(steps_per_epoch * epochs / 2),
                    reduce_on_plateau=0, max_momentum=0.95, min_momentum=0.85, verbose=0)


# Settings that checkpoints saved before these options existed did not record: they ran with these values.
SETTINGS_BEFORE = {"text_column": "Reviews", "label_column": "Sentiment", "class_weight": "none"}


class Checkpoints(tf.keras.callbacks.Callback):
    """Saves the model (weights and optimizer state) at the end of every epoch, to resume from.

    `folder` holds the last finished epoch only (`epoch-NN.*`, a TensorFlow checkpoint) and
    `state.json`: how many epochs are done, their losses and accuracies, and the run's
    settings, so a resume with different settings is refused.
    """

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any], epochs: int) -> None:
        super().__init__()
        self.folder, self.settings, self.epochs = Path(folder), settings, epochs
        self.done, self.history = 0, {}

    def resume(self, learner: Any) -> None:
        """Load the last finished epoch into `learner`'s model."""
        state = json.loads((self.folder / "state.json").read_text())
        saved = {**SETTINGS_BEFORE, **state["settings"]}
        changed = [k for k, v in self.settings.items() if saved.get(k) != v]
        if changed:
            was = ", ".join(f"{k}={saved.get(k)}" for k in changed)
            raise UserError(f"the checkpoint in {self.folder} is from a run with {was}; "
                            "rerun with the same settings to resume it, or drop --resume to start over.")
        # The optimizer's state (Adam's moments, the step count) is restored when the optimizer
        # creates it, at the first training step; under --strategy mirrored, in the model's strategy.
        with learner.model.distribute_strategy.scope():
            tf.train.Checkpoint(model=learner.model, optimizer=learner.model.optimizer).read(
                str(self.folder / state["checkpoint"])).assert_existing_objects_matched()
        self.done, self.history = state["epochs_done"], state["history"]

    def clear(self) -> None:
        """Delete the saved epochs (the folder too, if nothing else is in it)."""
        for name in [*self.folder.glob("epoch-*"), self.folder / "state.json", self.folder / "state.json.tmp"]:
            name.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.done += 1
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not self.folder.parent.exists():  # the output folder (OUTPUT/checkpoints): this run makes it, and marks it
            self.folder.parent.mkdir(parents=True)
            files.mark(self.folder.parent)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self.done:02d}"
        tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).write(str(self.folder / name))
        state = {"epochs_done": self.done, "checkpoint": name, "history": self.history, "settings": self.settings}
        (self.folder / "state.json.tmp").write_text(json.dumps(state, indent=1))
        os.replace(self.folder / "state.json.tmp", self.folder / "state.json")
        for old in self.folder.glob("epoch-*"):
            if not old.name.startswith(name + "."):
                old.unlink()
        print(f"\nsaved a checkpoint of epoch {self.done} of {self.epochs} to {self.folder}", flush=True)


def save_predictor(learner: Any, preproc: Any, output: str | os.PathLike,
                   extra_files: Mapping[str, str | bytes] | None = None) -> Path:
    """Save a ktrain predictor (plus `extra_files`, name -> text or bytes) to `output`, all or nothing
    (files.atomic_folder). Returns the folder."""
    with files.atomic_folder(output) as folder:
        ktrain.get_predictor(learner.model, preproc).save(str(folder))
        files.write_files(folder, extra_files or {})
    return Path(output).resolve()


save_files = files.write_folder  # save_files(output, {name: text or bytes}): the folder all or nothing (--lr-find-only)


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
