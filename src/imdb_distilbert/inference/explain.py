"""Why did the model say that? Word-level explanations of a saved predictor, and HTML that shows them.

    from imdb_distilbert.inference import explain
    found = explain.explain("models/distilbert-imdb", ["great film, awful ending"])
    found[0]["label"], found[0]["words"][0]    # 'pos', {'word': 'great', 'scores': {'neg': -1.9, 'pos': 1.9}, ...}
    html = explain.to_html(found)              # the reviews, words on red/green backgrounds

The method is integrated gradients (Sundararajan et al., 2017) over the input embeddings, on the
TensorFlow model itself. Each word piece's embedding is moved in a straight line from a neutral
baseline (the [PAD] embedding; [CLS], [SEP] and the positions stay) to its real value; the gradient
of the class margin (this class's logit minus the other's) is averaged along that path and multiplied
by how far the embedding moved. A word's score is the sum over its word pieces. The scores of a
review add up (to within the integration error) to how much its words move the margin away from the
baseline's, so they are in the model's own units and comparable across words and reviews.

Why this method, and why 3 path steps by default (the measurements: docs/performance.md, "Explanations";
benchmarks/explain.py reproduces them):
- It asks the model, not a surrogate. LIME (what ktrain's `predictor.explain()` uses, through eli5) fits a
  linear model to the predictions on 2,500 randomly masked copies of a review: 2,500 forward passes, and an
  answer that changes with the seed.
- It is faithful on real text: deleting the words it scores highest moves the prediction far more than
  deleting random words, and more than plain gradient x input (steps=0) does.
- 3 steps, not 1: a confident model is flat in the middle of the path, where 1 step looks, and can give
  the polarity words the wrong sign; 3 steps agree with a 16-step integral almost everywhere.
- It is cheap. The path points of a review are one batch (and short reviews share a batch), so a
  review costs one forward and one backward pass over `steps` copies of it, plus one forward pass
  for the prediction. The points are Gauss-Legendre nodes (Captum's default).

Reviews longer than the model's maxlen are cut the way the training run cut them (`cut`, from the
predictor folder's metrics.json: head, tail or head+tail); each explanation says which text was
not read, and the HTML shows that text in grey.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imdb_distilbert import config
from imdb_distilbert.data import batching, truncation
from imdb_distilbert.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf
    from IPython.display import HTML

STEPS = 3  # points on the integration path: see the module docstring and docs/explain.md
TOKENS_PER_CALL = batching.EXPLAIN_TOKENS_PER_CALL  # path points x tokens per model call (why: data/batching.py)
BUCKET = batching.EXPLAIN_BUCKET  # lengths are padded to a multiple of this (why: data/batching.py)


def load(predictor_or_folder: Any) -> tuple[Any, str | None]:
    """(ktrain predictor, truncation mode) for a ktrain predictor or a folder src/train.py saved (str or Path).
    The mode is None for a predictor (not known), else the training run's (truncation.saved_settings)."""
    if not isinstance(predictor_or_folder, (str, bytes)) and hasattr(predictor_or_folder, "preproc"):
        return predictor_or_folder, None
    from imdb_distilbert.inference import backends

    backends.check_predictor_folder(predictor_or_folder)
    backend = backends.KtrainBackend(predictor_or_folder)
    return backend.predictor, truncation.saved_settings(predictor_or_folder)[1]


def explain(predictor_or_folder: Any, texts: Iterable[str], steps: int = STEPS, cut: str | None = None,
            done: Callable[[int], object] | None = None, label: str | None = None) -> list[dict]:
    """Explain the prediction for each of `texts`. Returns one dict per text:

    text: the text; label: the predicted class; probabilities: {class: probability};
    explained_for: the class the words are shown for (`label`, one of the classes; default: the predicted one);
    words: the words the model read, in order, each {"word", "start", "end" (its place in text),
    "scores": {class: how much it pushed towards that class}}; cut: the (start, end) spans of text
    the model did not read (its maxlen was reached), empty if none; tokens_read and tokens_cut.

    `predictor_or_folder`: a ktrain predictor, or a folder src/train.py saved. `cut`: how long reviews
    are cut (truncation.MODES); by default the folder's recorded mode, or "head" (ktrain's) for a
    predictor. `steps`: points on the integration path (more: slower, closer to exact).
    `done(k)` is called as each k texts finish, for a progress bar.
    """
    predictor, saved_cut = load(predictor_or_folder)
    cut = cut or saved_cut or "head"
    texts = list(texts)
    classes = [str(c) for c in predictor.get_classes()]
    if label is not None and label not in classes:
        raise UserError(f"there is no class {label!r} to explain; name one of the model's: {', '.join(classes)}.")
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise UserError("there is an empty text among the reviews to explain; give each review some words.")
    model = Explainer(predictor, steps)
    # Reviews of similar length share a model call (less padding), up to TOKENS_PER_CALL path tokens.
    lengths = [min(len(model.tokenizer.tokenize(t)) + 2, model.maxlen) for t in texts]
    results = [None] * len(texts)
    for batch in batching.explain_batches(lengths, steps, TOKENS_PER_CALL):
        for j, found in zip(batch, model.explain_batch([texts[j] for j in batch], cut), strict=True):
            results[j] = {**found, "explained_for": label or found["label"]}  # back in the order given
        if done:
            done(len(batch))
    return results


class Explainer:
    """Integrated gradients for one ktrain DistilBERT predictor (its Hugging Face TF model)."""

    def __init__(self, predictor: Any, steps: int = STEPS):
        """`steps` points on the path; 0: the gradient at the review itself times (review - baseline)
        ("gradient x input"), one forward and one backward pass, whose forward pass also gives the prediction."""
        import tensorflow as tf

        self.tf = tf
        self.model = predictor.model
        self.tokenizer = predictor.preproc.get_tokenizer()
        self.maxlen = int(predictor.preproc.maxlen)
        self.classes = list(predictor.get_classes())
        self.embeddings = self.model.get_input_embeddings().weight  # (vocabulary, width)
        # Gauss-Legendre nodes and weights, moved from [-1, 1] to [0, 1]
        nodes, weights = np.polynomial.legendre.leggauss(steps) if steps else (np.array([1.0]), np.array([2.0]))
        self.alphas = tf.constant((nodes + 1) / 2 if steps else nodes, dtype=tf.float32)[:, None, None]
        self.weights = tf.constant(weights / 2, dtype=tf.float32)[:, None, None]
        self.at_input = steps == 0

    def encode(self, text: str, cut: str) -> tuple[list[int], list[tuple[int, int, int]], list[tuple[int, int]], int]:
        """Token ids ([CLS] kept word pieces [SEP]), each kept piece's (word, start, end), and the cut spans."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets, word_ids = encoding["input_ids"], encoding["offset_mapping"], encoding.word_ids()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        kept = truncation.kept(tokens, self.maxlen - 2, cut)
        dropped = set(range(len(ids))) - set(kept)
        cut_spans = []
        for i in sorted(dropped):  # merge neighbouring dropped pieces into spans of text
            start, end = offsets[i]
            if cut_spans and i - 1 in dropped:
                cut_spans[-1][1] = end
            else:
                cut_spans.append([start, end])
        input_ids = [self.tokenizer.cls_token_id] + [ids[i] for i in kept] + [self.tokenizer.sep_token_id]
        pieces = [(word_ids[i], *offsets[i]) for i in kept]
        return input_ids, pieces, [tuple(s) for s in cut_spans], len(dropped)

    def margins(self, logits: tf.Tensor) -> list[tf.Tensor]:
        """Each class's logit minus the mean of the others' (for two classes: the logit difference)."""
        k = len(self.classes)
        total = self.tf.reduce_sum(logits, axis=1)
        return [logits[:, c] - (total - logits[:, c]) / (k - 1) for c in range(k if k > 2 else 1)]

    def attributions(self, batch: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-piece scores (pieces, classes) and class probabilities for each encoded review in `batch`
        (lists of token ids): all their path points in one forward and one backward pass."""
        tf = self.tf
        width, steps = max(len(ids) for ids in batch), len(self.alphas)
        width = batching.explain_width(width, self.maxlen, BUCKET)  # masked padding: same scores
        ids = np.full((len(batch), width), self.tokenizer.pad_token_id)
        mask = np.zeros((len(batch), width), dtype=np.int32)
        # 1 where the embedding moves: not [CLS], [SEP], padding
        moves = np.zeros((len(batch), width, 1), dtype=np.float32)
        for row, review in enumerate(batch):
            ids[row, :len(review)], mask[row, :len(review)], moves[row, 1:len(review) - 1] = review, 1, 1
        real = tf.gather(self.embeddings, ids)  # (reviews, width, dimension)
        baseline = (moves * tf.gather(self.embeddings, tf.fill(ids.shape, self.tokenizer.pad_token_id))
                    + (1 - moves) * real)
        path = baseline[:, None] + self.alphas[None] * (real - baseline)[:, None]  # (reviews, steps, width, dim)
        path = tf.reshape(path, (-1, width, path.shape[-1]))
        with tf.GradientTape(persistent=len(self.classes) > 2) as tape:
            tape.watch(path)
            logits = self.model({"inputs_embeds": path, "attention_mask": np.repeat(mask, steps, axis=0)},
                                training=False).logits
            margins = self.margins(logits)
        per_class = []
        for margin in margins:
            gradient = tf.reshape(tape.gradient(margin, path), (len(batch), steps, width, -1))
            integral = tf.reduce_sum(gradient * self.weights[None], axis=1)  # Gauss-Legendre quadrature
            per_class.append(tf.reduce_sum(integral * (real - baseline), axis=-1).numpy())
        if len(per_class) == 1:  # two classes: towards the second is away from the first
            per_class.append(-per_class[0])
        scores = np.stack(per_class, axis=-1)  # (reviews, width, classes)
        if not self.at_input:  # the path does not reach the review itself: one more forward pass
            logits = self.model({"input_ids": ids, "attention_mask": mask}, training=False).logits
        proba = tf.nn.softmax(logits).numpy()
        return [(scores[row, 1:len(review) - 1], proba[row]) for row, review in enumerate(batch)]

    def explain_batch(self, texts: Sequence[str], cut: str) -> list[dict]:
        encoded = [self.encode(text, cut) for text in texts]
        results = self.attributions([e[0] for e in encoded])
        return [self.describe(text, *e[1:], *r) for text, e, r in zip(texts, encoded, results, strict=True)]

    def describe(self, text: str, pieces: list[tuple[int, int, int]], cut_spans: list[tuple[int, int]], n_cut: int,
                 scores: np.ndarray, proba: np.ndarray) -> dict:
        """The explanation of one review, from its per-piece scores and probabilities."""
        words = {}
        for (word, start, end), score in zip(pieces, scores, strict=True):
            if word not in words:
                words[word] = {"start": start, "end": end, "scores": np.zeros(len(self.classes))}
            words[word]["end"] = end
            words[word]["scores"] += score
        return {
            "text": text,
            "label": self.classes[int(proba.argmax())],
            "probabilities": {c: float(p) for c, p in zip(self.classes, proba, strict=True)},
            "words": [{"word": text[w["start"]:w["end"]], "start": w["start"], "end": w["end"],
                       "scores": {c: float(s) for c, s in zip(self.classes, w["scores"], strict=True)}}
                      for w in words.values()],
            "cut": cut_spans,
            "tokens_read": len(pieces),
            "tokens_cut": n_cut,
        }


def top_words(explanation: dict, n: int = 5, label: str | None = None) -> list[tuple[str, float]]:
    """The `n` words with the largest scores (either sign) towards `label` (default: the class it was explained for,
    by default the prediction), as (word, score) pairs, largest first. A positive score pushed towards `label`, a
    negative one away."""
    label = label or explained_for(explanation)
    ranked = sorted(explanation["words"], key=lambda w: -abs(w["scores"][label]))
    return [(w["word"], round(w["scores"][label], 4)) for w in ranked[:n]]


def to_html(explanations: Iterable[dict], truths: Sequence[object] | None = None) -> str:
    """The reviews as HTML: each word on a green (towards the predicted label) or red (away from it)
    background, as strong as its score; text the model did not read in grey. `truths`, if given,
    are the true labels, shown beside the predictions."""
    parts = [STYLE]
    for i, found in enumerate(explanations):
        label, shown = found["label"], explained_for(found)
        others = [c for c in found["probabilities"] if c != shown]
        truth = truths[i] if truths is not None else None
        heading = f"<b>{html.escape(label)}</b> ({found['probabilities'][label]:.0%})"
        if truth is not None:
            heading += f", true label <b>{html.escape(str(truth))}</b>" + (" (wrong)" if truth != label else "")
        heading += (f" &nbsp;<span class='key'><span class='to'>towards {html.escape(shown)}</span> "
                    f"<span class='away'>towards {html.escape(', '.join(others))}</span></span>")
        if found["tokens_cut"]:
            heading += (f" &nbsp;<span class='key'>read {found['tokens_read']} word pieces; "
                        f"<span class='cut'>grey text</span> ({found['tokens_cut']}) was cut</span>")
        parts.append(f"<div class='review'><div class='head'>{heading}</div><p>{highlight(found)}</p></div>")
    return "\n".join(parts)


def highlight(found: dict) -> str:
    """The text of one explanation as HTML: its words as coloured spans (their score in data-score and,
    rounded, in the title) and its cut text in grey."""
    label, text = explained_for(found), found["text"]
    largest = max([abs(w["scores"][label]) for w in found["words"]] + [1e-12])
    marks = [(w["start"], w["end"],
              f"style='{span_style(w['scores'][label] / largest)}' data-score='{w['scores'][label]!r}'",
              f"{w['scores'][label]:+.3f}") for w in found["words"]]
    marks += [(start, end, "class='cut'", "not read: the review was longer than maxlen") for start, end in found["cut"]]
    out, at = [], 0
    for start, end, attributes, title in sorted(marks):
        out.append(html.escape(text[at:start]))
        out.append(f"<span {attributes} title='{html.escape(title)}'>{html.escape(text[start:end])}</span>")
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def explained_for(found: dict) -> str:
    """The class an explanation's words are shown for: the one asked for, else the predicted one."""
    return found.get("explained_for") or found["label"]


def span_style(strength: float) -> str:
    """A background for a score scaled to [-1, 1]: green for positive, red for negative."""
    colour = "0, 150, 0" if strength > 0 else "220, 0, 0"
    return f"background: rgba({colour}, {min(abs(strength), 1) * 0.6:.2f})"


STYLE = """<style>
.review { font: 15px/1.6 sans-serif; max-width: 60em; margin: 0 0 1.5em 0; }
.review .head { font-size: 13px; color: #333; }
.review .key { font-size: 12px; }
.review .to { background: rgba(0, 150, 0, 0.45); padding: 0 .3em; }
.review .away { background: rgba(220, 0, 0, 0.45); padding: 0 .3em; }
.review .cut { color: #999; }
.review p { margin: .3em 0; }
.review span[title] { border-radius: 3px; }
</style>"""


def page(body: str, title: str) -> str:
    """A whole HTML document around `body`."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>\n"
            f"<body>\n<h2 style='font-family: sans-serif'>{html.escape(title)}</h2>\n{body}\n</body></html>\n")


def top_losses_page(predictor: Any, frame: pd.DataFrame, cut: str = "head", steps: int = STEPS,
                    mistakes: int | None = 0) -> str:
    """top_losses.html: the reviews of a top_losses frame (training/evaluation.py) with their explanations.
    `predictor`: a ktrain predictor. `mistakes`: how many test reviews the model got wrong in all (the frame
    may list fewer, or none; None: unknown)."""
    from tqdm.auto import tqdm

    title = "The test reviews the model got most confidently wrong"
    if len(frame) == 0:
        return page(f"<p>{no_mistakes_listed(mistakes)}</p>", title)
    with tqdm(total=len(frame), unit="review", desc="explaining the top losses") as bar:
        found = explain(predictor, list(frame["review"]), steps=steps, cut=cut, done=bar.update)
    return page(to_html(found, truths=list(frame["true_label"])), title)


def no_mistakes_listed(mistakes: int | None) -> str:
    """What to say where a top-losses list is empty: the model made no mistakes, or none were asked for."""
    if mistakes == 0:
        return "The model got every test review right."
    wrong = "some test reviews" if mistakes is None else f"{mistakes} test review{'s' * (mistakes != 1)}"
    return (f"No mistakes are listed, though the model got {wrong} wrong: this run was told to keep none "
            "(--top-losses 0, or top_losses = 0 in the notebook). Train with a number above 0 to list them.")


# The notebook's cells: one call each.

def show(predictor_or_folder: Any, texts: Iterable[str], cut: str | None = None, steps: int = STEPS,
         label: str | None = None) -> HTML:
    """The explanations of `texts` as HTML a notebook displays (`predictor_or_folder` and `label` as for explain())."""
    from IPython.display import HTML

    return HTML(to_html(explain(predictor_or_folder, texts, steps=steps, cut=cut, label=label)))


def show_top_losses(predictor_or_folder: Any, folder: str | Path, n: int = 5, cut: str | None = None,
                    steps: int = STEPS) -> HTML:
    """The `n` worst mistakes in `folder`/top_losses.csv, explained, as HTML a notebook displays."""
    import pandas as pd
    from IPython.display import HTML

    path = Path(folder) / "top_losses.csv"
    if not path.is_file():
        raise UserError(f"{path} does not exist; train with src/train.py (or the notebook) to write it.")
    frame = pd.read_csv(path).head(n)
    if len(frame) == 0:
        metrics = config.saved_metrics(folder)
        wrong = config.mistakes(metrics) if metrics else None
        return HTML(f"<p>{no_mistakes_listed(wrong)}</p>")
    found = explain(predictor_or_folder, list(frame["review"]), steps=steps, cut=cut)
    return HTML(to_html(found, truths=list(frame["true_label"])))

