"""Score texts with a saved predictor: ktrain on TensorFlow, or its ONNX export on ONNX Runtime.

Every backend has `classes` and `predict_proba(texts, done=None) -> (n, n_classes) array`, the same
probabilities in the same order as `texts`; `done(k)` is called as each k texts finish (for a progress bar).

The ONNX backends import only NumPy, ONNX Runtime and the `tokenizers` package: no TensorFlow, ktrain
or src/compat.py, so a server can score without a TensorFlow install (requirements-onnx.txt).
"""

import functools
import json
from pathlib import Path

import numpy as np

from imdb_distilbert.data import truncation
from imdb_distilbert.errors import UserError

BACKENDS = ("ktrain", "onnx", "onnx-int8")
ONNX_SETTINGS = "onnx.json"  # written by src/export.py next to the ONNX files
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
# Word pieces per ONNX Runtime call (padding included), on top of the batch size: on a CPU, a call's
# activations should stay in cache. Full-size DistilBERT, onnx-int8, 96 real reviews, 2 cores
# (docs/inference.md): at maxlen 400, batches of 32 score 12.2-12.7 reviews/s, at most 1,024 tokens
# per call 15.9-16.8; at maxlen 128, 37.6 against 41.6-41.8. A server's batch of 32 reviews that
# arrived together, split this way, scores as fast as predict.py's length-sorted batches.
MAX_TOKENS = 1024


def check_predictor_folder(model_dir):
    """Stop with one sentence unless `model_dir` is a folder saved by ktrain's predictor.save()."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UserError(f"--model {model_dir} does not exist; give the folder src/train.py saved "
                        "(default models/distilbert-imdb), or train one with src/train.py.")
    if not model_dir.is_dir() or not (model_dir / "tf_model.preproc").is_file():
        raise UserError(f"--model {model_dir} is not a saved predictor (it has no tf_model.preproc); "
                        "give the folder src/train.py saved.")


def load(model_dir, backend="ktrain", batch_size=32):
    """The backend named `backend` for the predictor in `model_dir`."""
    check_predictor_folder(model_dir)
    if backend == "ktrain":
        return KtrainBackend(model_dir, batch_size)
    return OnnxBackend(model_dir, backend, batch_size)


@functools.lru_cache(maxsize=2)
def onnx_once(model_dir, backend="onnx-int8", batch_size=32, threads=None):
    """An OnnxBackend loaded once per process and then reused: Spark runs many tasks in each of
    its Python workers (src/score_spark.py), and loading the model for every task would be wasted."""
    return OnnxBackend(model_dir, backend, batch_size, threads)


class KtrainBackend:
    """The saved ktrain predictor, as `ktrain.load_predictor` gives it (TensorFlow)."""

    def __init__(self, model_dir, batch_size=32):
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

    def predict_proba(self, texts, done=None):
        # One predict() call per batch, so a progress bar can move; ktrain pads each call to its
        # longest text (up to maxlen), so this gives the same probabilities as one call on all texts.
        texts = truncation.like_saved_run(texts, self.model_dir, self.predictor.preproc.get_tokenizer())
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            chunks.append(np.asarray(self.predictor.predict(chunk, return_proba=True), dtype=np.float32))
            if done:
                done(len(chunk))
        return np.concatenate(chunks).reshape(len(texts), len(self.classes))


class OnnxBackend:
    """The ONNX export of the predictor (fp32 or int8), with length-sorted, tightly padded batches."""

    def __init__(self, model_dir, backend="onnx", batch_size=32, threads=None):
        model_dir = Path(model_dir)
        settings_path, model_path = model_dir / ONNX_SETTINGS, model_dir / ONNX_FILES[backend]
        if not settings_path.is_file() or not model_path.is_file():
            raise UserError(f"{model_dir} has no ONNX export yet ({model_path.name}); run "
                            f"`python src/export.py --model {model_dir}` once (it needs requirements-export.txt).")
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
        # Cut as training did (train.py --truncation; ktrain keeps the head): see encode().
        self.cut = self.settings.get("truncation", "head")
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.pad_id = int(self.settings["pad_token_id"])

    def encode(self, texts):
        """Token ids of each text, cut to maxlen ([CLS] and [SEP] kept) as training did, unpadded."""
        out = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = encoding.ids
            if len(ids) > self.maxlen:  # keep [CLS] and [SEP], and cut what is between as src/truncation.py does
                keep = truncation.kept(encoding.tokens[1:-1], self.maxlen - 2, self.cut)
                ids = [ids[0], *(ids[1 + i] for i in keep), ids[-1]]
            out.append(ids)
        return out

    def predict_proba(self, texts, done=None):
        ids = self.encode(texts)
        proba = np.empty((len(ids), len(self.classes)), dtype=np.float32)
        for batch in self.batches([len(x) for x in ids]):
            width = len(ids[batch[-1]])  # the batch's longest text: pad only to it
            input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
            proba[batch] = softmax(logits)  # back to the input order
            if done:
                done(len(batch))
        return proba

    def batches(self, lengths):
        """Indices of the texts, sorted by length and cut into batches of at most `batch_size` texts
        and MAX_TOKENS padded word pieces (at least one text each)."""
        order = np.argsort(lengths, kind="stable")  # neighbours have similar lengths
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < self.batch_size
                   and (end - start + 1) * lengths[order[end]] <= MAX_TOKENS):
                end += 1
            yield order[start:end]
            start = end


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
