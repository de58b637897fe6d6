"""Score texts with a saved predictor: ktrain on TensorFlow, or its ONNX export on ONNX Runtime.

Every backend has `classes` and `predict_proba(texts, done=None) -> (n, n_classes) array`, the same
probabilities in the same order as `texts`; `done(k)` is called as each k texts finish (for a progress bar).

A review longer than maxlen is read as the run that saved the predictor chose (`reading`, data/windows.py): cut
(train.py --truncation) or in overlapping windows whose logits are averaged; load(..., long_reviews="cut") and the
other settings of windows.Reading override it. A review's answer never depends on the other reviews scored with it.

The ONNX backends import only NumPy, ONNX Runtime and the `tokenizers` package: no TensorFlow, ktrain
or imdb_distilbert/compat.py, so a server can score without a TensorFlow install (requirements-onnx.txt).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imdb_distilbert.data import batching, windows
from imdb_distilbert.errors import UserError

BACKENDS = ("ktrain", "onnx", "onnx-int8")
ONNX_SETTINGS = "onnx.json"  # written by src/export.py next to the ONNX files
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
MAX_TOKENS = batching.ONNX_MAX_TOKENS  # word pieces per ONNX Runtime call, padding included (why: data/batching.py)


def check_predictor_folder(model_dir: str | Path) -> None:
    """Stop with one sentence unless `model_dir` is a folder saved by ktrain's predictor.save()."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UserError(f"--model {model_dir} does not exist; give the folder src/train.py saved "
                        "(default models/distilbert-imdb), or train one with src/train.py.")
    if not model_dir.is_dir() or not (model_dir / "tf_model.preproc").is_file():
        raise UserError(f"--model {model_dir} is not a saved predictor (it has no tf_model.preproc); "
                        "give the folder src/train.py saved.")


def has_onnx_export(model_dir: str | Path, backend: str = "onnx-int8") -> bool:
    """Whether `model_dir` holds src/export.py's files for `backend` (onnx or onnx-int8)."""
    model_dir = Path(model_dir)
    return (model_dir / ONNX_SETTINGS).is_file() and (model_dir / ONNX_FILES[backend]).is_file()


def check_onnx_export(model_dir: str | Path, backend: str) -> None:
    """Stop with one sentence unless `model_dir` holds src/export.py's files for `backend`."""
    if not has_onnx_export(model_dir, backend):
        raise UserError(f"{model_dir} has no ONNX export yet ({ONNX_FILES[backend]}); run "
                        f"`python src/export.py --model {model_dir}` once (it needs requirements-export.txt).")


def load(model_dir: str | Path, backend: str = "ktrain", batch_size: int = 32, **reading: Any) -> Backend:
    """The backend named `backend` for the predictor in `model_dir`. `reading`: any of long_reviews ("cut" or
    "windows"), overlap and max_windows (None: as the saved run chose; windows.Reading)."""
    check_predictor_folder(model_dir)
    if backend == "ktrain":
        return KtrainBackend(model_dir, batch_size, **reading)
    return OnnxBackend(model_dir, backend, batch_size, **reading)


@functools.lru_cache(maxsize=2)
def onnx_once(model_dir: str | Path, backend: str = "onnx-int8", batch_size: int = 32,
              threads: int | None = None, long_reviews: str | None = None, overlap: int | None = None,
              max_windows: int | None = None) -> OnnxBackend:
    """An OnnxBackend loaded once per process and then reused: Spark runs many tasks in each of
    its Python workers (src/score_spark.py), and loading the model for every task would be wasted."""
    return OnnxBackend(model_dir, backend, batch_size, threads, long_reviews=long_reviews, overlap=overlap,
                       max_windows=max_windows)


def with_settings(saved: windows.Reading, **given: Any) -> windows.Reading:
    """`saved` with the settings given (not None) instead; a bad one stops with one sentence."""
    reading = dataclasses.replace(saved, **{k: v for k, v in given.items() if v is not None})
    for problem in reading.problems()[:1]:
        raise UserError(problem + ".")
    return reading


def say(line: str) -> None:
    """Where a backend says what a caller should know (the windows' cap): standard error."""
    print(line, file=sys.stderr)


def predict_like_saved_run(predictor: Any, texts: Sequence[str], folder: str | Path,
                           reading: windows.Reading | None = None, batch_size: int | None = None,
                           done: Callable[[int], object] | None = None,
                           notes: Callable[[str], object] = say) -> np.ndarray:
    """Probabilities (n, classes) of `texts` from a loaded ktrain predictor, long reviews read as the run that saved
    `folder` read them (cut, or windows combined: `reading`, default windows.saved_reading(folder)). What
    predict.py's ktrain backend answers; `ktrain.load_predictor(folder).predict(texts)` alone keeps the head."""
    reading = reading or windows.saved_reading(folder)
    found = windows.of_texts(list(texts), predictor.preproc.get_tokenizer(), reading)
    progress = Progress(found, done)
    chunks = []
    # One predict() call per batch, so a progress bar can move; ktrain pads each call to its longest text (up to
    # maxlen), so this gives the same probabilities as one call on all texts.
    for batch in batching.chunks(np.arange(len(found.pieces)), batch_size or predictor.batch_size):
        chunk = [found.pieces[i] for i in batch]
        chunks.append(np.asarray(predictor.predict(chunk, return_proba=True), dtype=np.float32).reshape(len(chunk), -1))
        progress.update(batch)
    if found.capped:
        notes(windows.cap_note(len(found.capped), reading))
    proba = np.concatenate(chunks) if chunks else np.zeros((0, len(predictor.get_classes())), np.float32)
    return found.combine(proba).astype(np.float32)


class Progress:
    """Calls `done(k)` as k reviews have all their windows scored, in whatever order the windows are."""

    def __init__(self, found: windows.Windows, done: Callable[[int], object] | None):
        self.left, self.owners, self.done = found.counts(), found.owners, done

    def update(self, pieces: Sequence[int]) -> None:
        owners = self.owners[np.asarray(pieces, dtype=np.int64)]
        np.subtract.at(self.left, owners, 1)
        finished = int(np.count_nonzero(self.left[np.unique(owners)] == 0))
        if self.done and finished:
            self.done(finished)


class KtrainBackend:
    """The saved ktrain predictor, as `ktrain.load_predictor` gives it (TensorFlow)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, **reading: Any):
        import os

        # The predictor folder holds its tokenizer and config: scoring needs nothing from the Hub,
        # and without a network each Hub check would wait about 20 seconds.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

        try:
            import ktrain
        except ImportError as error:
            raise UserError(f"the ktrain backend needs {error.name or 'ktrain'}, which is not installed; install "
                            "requirements.txt, or use --backend onnx or onnx-int8 after src/export.py.") from None

        self.model_dir = model_dir
        self.predictor = ktrain.load_predictor(str(model_dir), batch_size=batch_size)
        self.classes = list(self.predictor.get_classes())
        self.batch_size = batch_size
        self.reading = with_settings(windows.saved_reading(model_dir), **reading)
        self.say = say

    def predict_proba(self, texts: Sequence[str], done: Callable[[int], object] | None = None) -> np.ndarray:
        return predict_like_saved_run(self.predictor, texts, self.model_dir, self.reading, self.batch_size, done,
                                      self.say).reshape(len(texts), len(self.classes))


class OnnxBackend:
    """The ONNX export of the predictor (fp32 or int8), with length-sorted, tightly padded batches."""

    def __init__(self, model_dir: str | Path, backend: str = "onnx", batch_size: int = 32, threads: int | None = None,
                 **reading: Any):
        model_dir = Path(model_dir)
        settings_path, model_path = model_dir / ONNX_SETTINGS, model_dir / ONNX_FILES[backend]
        check_onnx_export(model_dir, backend)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as error:
            raise UserError(f"the {backend} backend needs {error.name}; "
                            "install it with `pip install -r requirements-onnx.txt`.") from None

        self.settings = json.loads(settings_path.read_text())
        self.classes = list(self.settings["classes"])
        self.maxlen = int(self.settings["maxlen"])
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(model_dir / self.settings["tokenizer"]))
        # Long reviews read as the run chose (cut as training did, or windows): see encode().
        self.reading = with_settings(windows.onnx_reading(self.settings), **reading)
        self.say = say
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.pad_id = int(self.settings["pad_token_id"])

    def encode(self, texts: Iterable[str]) -> windows.Windows:
        """Token ids of each text's windows (windows.of_ids; [CLS] and [SEP] around each), unpadded: one per review
        that fits, else its windows, or the part training kept (data/truncation.py)."""
        return windows.of_ids([(e.tokens, e.ids) for e in self.tokenizer.encode_batch(list(texts))], self.reading)

    def predict_proba(self, texts: Sequence[str], done: Callable[[int], object] | None = None) -> np.ndarray:
        found = self.encode(texts)
        ids, progress = found.pieces, Progress(found, done)
        proba = np.empty((len(ids), len(self.classes)), dtype=np.float32)
        # The windows of all reviews together, batched by length: a review's windows may share batches with
        # others', and its answer is the same (padding is masked out).
        for batch in self.batches([len(x) for x in ids]):
            width = len(ids[batch[-1]])  # the batch's longest text: pad only to it
            input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
            proba[batch] = softmax(logits)  # back to the input order
            progress.update(batch)
        if found.capped:
            self.say(windows.cap_note(len(found.capped), self.reading))
        return found.combine(proba).astype(np.float32).reshape(len(texts), len(self.classes))

    def batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Indices of the texts, sorted by length and cut into batches of at most `batch_size` texts
        and MAX_TOKENS padded word pieces (at least one text each): batching.onnx_batches."""
        return batching.onnx_batches(lengths, self.batch_size, MAX_TOKENS)


Backend = KtrainBackend | OnnxBackend  # what load() gives: either has `classes` and `predict_proba`


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


UNCERTAIN = "uncertain"  # the label of a review whose top probability is below --min-confidence


def labels(proba: np.ndarray, classes: Sequence[str], min_confidence: float | None = None) -> list[str]:
    """The predicted class of each row of `proba`; UNCERTAIN where its probability is below `min_confidence`."""
    top = np.asarray(proba).argmax(axis=1)
    sure = np.ones(len(top), bool) if min_confidence is None else np.asarray(proba).max(axis=1) >= min_confidence
    return [classes[int(i)] if ok else UNCERTAIN for i, ok in zip(top, sure, strict=True)]


def check_min_confidence(min_confidence: float | None, classes: Sequence[str], name: str = "--min-confidence") -> None:
    """Stop with one sentence unless `min_confidence` is None or a probability the labels can use."""
    if min_confidence is None:
        return
    if not 0 < min_confidence <= 1:
        raise UserError(f"{name} must be a probability above 0 and at most 1, such as 0.9 (the report's "
                        "accuracy-against-coverage table says which keeps how many reviews).")
    if UNCERTAIN in classes:
        raise UserError(f"{name} marks reviews '{UNCERTAIN}', which is one of this model's classes; "
                        "it cannot be used with this model.")


def rows(texts: Sequence[str], proba: np.ndarray, classes: Sequence[str],
         min_confidence: float | None = None) -> Iterator[dict]:
    """One dict per text: text, label, and prob_<class> for each class (what predict.py writes and serve.py
    answers). The label is UNCERTAIN where the top probability is below `min_confidence` (the probabilities stay)."""
    for text, p, label in zip(texts, proba, labels(proba, classes, min_confidence), strict=True):
        yield {"text": text, "label": label,
               **{f"prob_{c}": round(float(x), 6) for c, x in zip(classes, p, strict=True)}}
