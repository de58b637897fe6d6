"""Export a saved predictor as a standard Hugging Face model folder, with a model card.

    pip install -r requirements-export.txt           # once: PyTorch, for exporting only
    python src/export_hf.py --model models/distilbert-imdb        # writes models/distilbert-imdb-hf/

Then anyone loads it with the tools they already have (transformers and PyTorch; no ktrain, TensorFlow,
pickle or this project):

    from transformers import pipeline
    classify = pipeline("text-classification", model="models/distilbert-imdb-hf", truncation=True)
    classify("the movie was really great")          # [{'label': 'pos', 'score': 0.98...}]

The folder holds config.json (the predictor's classes as id2label / label2id), model.safetensors (the
PyTorch weights: the TensorFlow weights copied into the PyTorch model of the same architecture, as
src/export.py does for ONNX), the tokenizer files (the run's maxlen as model_max_length, and its
--truncation as the truncation side) and README.md, a model card in the Hugging Face Hub's format filled
from the run's metrics.json. It can be shared on the Hub as it is (docs/inference.md says how).

Before anything is written, the folder is loaded with transformers.pipeline() and checked on sample
reviews: its probabilities must be within 1e-4 of the TensorFlow predictor's, or nothing is written.
A pipeline keeps the head (--truncation head) or the tail (tail) of a review longer than maxlen; it
cannot keep both, so for a model trained with head+tail it keeps the tail, and says so.
"""

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from imdb_distilbert.inference import backends
from imdb_distilbert.data import truncation
from imdb_distilbert.errors import UserError, run_cli

from imdb_distilbert import ROOT
SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"
TOLERANCE = 1e-4  # largest difference in any probability allowed between TensorFlow and the exported folder
BASE_MODEL = "distilbert/distilbert-base-uncased"  # the Hub's id of what ktrain loads as distilbert-base-uncased
DATASET = "stanfordnlp/imdb"  # the Hub's id of the IMDB Large Movie Review Dataset
# The tutorial's recipe (README.md), against which the card says how a run differs.
RECIPE = {"epochs": 2, "lr": 2e-5, "batch_size": 6, "maxlen": 400, "n_train": 25_000, "n_test": 25_000}
DISTILBERT_SHAPE = {"n_layers": 6, "dim": 768, "n_heads": 12, "hidden_dim": 3072, "vocab_size": 30522}
# Which side the folder's tokenizer cuts: it keeps the other end. head+tail cannot be done by a tokenizer.
SIDE = {"head": "right", "tail": "left", "head+tail": "left"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR", default=ROOT / "models" / "distilbert-imdb",
                   help="the predictor folder src/train.py saved (default: models/distilbert-imdb)")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="the Hugging Face folder to write; replaced if it is an earlier export "
                   "(default: next to the predictor, its name + '-hf', e.g. models/distilbert-imdb-hf)")
    p.add_argument("--reviews", type=Path, metavar="PATH", default=SAMPLE_REVIEWS,
                   help="reviews for the parity check (.xlsx/.csv with a Reviews column, or .txt) "
                   "(default: data/sample/test.xlsx, 100 real reviews, most longer than 128 word pieces)")
    p.add_argument("--n", type=int, default=100, metavar="N", help="how many of them to check (default: 100)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    return args


def default_output(model_dir):
    """Where the folder goes unless told: next to the predictor, e.g. models/distilbert-imdb-hf."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}-hf"


def check_output(model_dir, output):
    """Stop with one sentence unless `output` is a new folder, or an earlier export that may be replaced."""
    output, model_dir = Path(output).resolve(), Path(model_dir).resolve()
    if output == model_dir or model_dir in output.parents or output in model_dir.parents:
        raise UserError(f"--output {output} is the predictor folder, or inside or around it; "
                        "give a folder of its own (the default is next to the predictor).")
    if output.exists() and not (output.is_dir() and (not any(output.iterdir()) or is_export(output))):
        raise UserError(f"--output {output} exists and is not a Hugging Face folder written by this script; "
                        "move it away or give another --output.")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: its parent folder {output.parent} does not exist; create it first.")


def is_export(folder):
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", "README.md"))


def check_torch():
    try:
        found = importlib.util.find_spec("torch") is not None
    except ImportError:
        found = False
    if not found:
        raise UserError("writing the Hugging Face folder needs PyTorch (torch), which is not installed; run "
                        "`pip install -r requirements-export.txt` (Colab has it already).")


def export(model_dir, output=None, reviews=SAMPLE_REVIEWS, n=100):
    """Write the Hugging Face folder for the predictor in `model_dir` to `output` (default: next to it),
    all or nothing, after checking it against the TensorFlow predictor on `n` of `reviews`.
    Returns the folder. A UserError (and nothing written) if anything is wrong or the check fails."""
    model_dir = Path(model_dir)
    output = Path(output) if output else default_output(model_dir)
    backends.check_predictor_folder(model_dir)
    check_output(model_dir, output)
    check_torch()
    from imdb_distilbert.inference import predict

    texts = predict.read_texts(reviews)[:n]  # bad input is reported before TensorFlow loads
    started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything needed is in the predictor folder
    import ktrain

    predictor = ktrain.load_predictor(str(model_dir))
    maxlen, mode = int(predictor.preproc.maxlen), truncation.saved_settings(model_dir)[1]
    output = output.resolve()
    for stale in [*output.parent.glob(f".{output.name}-export-*"), *output.parent.glob(f".{output.name}-old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by an export that was killed
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-export-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        print(f"exporting {model_dir} to a Hugging Face folder (PyTorch weights, maxlen {maxlen}, "
              f"keeps the {'head' if SIDE[mode] == 'right' else 'tail'} of longer reviews)...", flush=True)
        if mode == "head+tail":
            print(f"note: {head_tail_note(maxlen)}", flush=True)
        write_model(predictor, staging, maxlen, mode)
        print(f"checking the folder with transformers.pipeline() against the TensorFlow predictor on {len(texts)} "
              f"reviews from {reviews}...", flush=True)
        parity = check_parity(predictor, model_dir, staging, texts)
        print(f"largest probability difference {parity['max_abs_diff']:.2e}, same label on {parity['label_agreement']:.1%}")
        if "uncut" in parity:
            uncut = parity["uncut"]
            print(f"without cutting the reviews first ({mode}; the pipeline keeps the tail itself): same label on "
                  f"{uncut['label_agreement']:.1%}, largest probability difference {uncut['max_abs_diff']:.2e}")
        if parity["max_abs_diff"] > TOLERANCE:
            raise UserError(f"the Hugging Face folder's probabilities differ from the TensorFlow predictor's by up to "
                            f"{parity['max_abs_diff']:.2e} (more than {TOLERANCE:g}), so nothing was written; check the "
                            "installed versions against requirements-export.txt.")
        metrics = read_metrics(model_dir)
        (staging / "README.md").write_text(model_card(metrics, predictor.model.config, maxlen, mode, parity,
                                                      output.name, export_versions()))
        for file in staging.iterdir():
            file.chmod(0o666 & ~umask)  # safetensors writes its file private
        replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = (output / "model.safetensors").stat().st_size / 1e6
    print(f"wrote {output} (model.safetensors {size:.1f} MB, config.json, tokenizer, README.md model card) "
          f"in {time.time() - started:.0f} s")
    return output


def notebook_export(model_dir, output=None):
    """export() for the notebook: the folder, or None after saying in one sentence why it was not written."""
    try:
        return export(model_dir, output)
    except UserError as error:
        print(f"The Hugging Face folder was not written: {error}")
        return None


def write_model(predictor, folder, maxlen, mode):
    """config.json, model.safetensors and the tokenizer files of the predictor into `folder`."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from imdb_distilbert.export.onnx_export import to_pytorch

    model = to_pytorch(predictor.model)
    classes = list(predictor.get_classes())
    model.config.id2label = dict(enumerate(classes))
    model.config.label2id = {c: i for i, c in enumerate(classes)}
    model.config.problem_type = "single_label_classification"  # softmax over the classes, as the predictor does
    model.save_pretrained(folder, safe_serialization=True)

    # The predictor's own tokenizer, saved again with the run's length limit and the side it cuts.
    # ktrain's tokenizer.json carries the cut it applies itself (head, at maxlen); a pipeline's cut is set by
    # model_max_length and truncation_side instead, so the file's own is removed to leave no contradiction.
    original = folder / ".tokenizer"
    predictor.preproc.get_tokenizer().save_pretrained(original)
    backend = Tokenizer.from_file(str(original / "tokenizer.json"))
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(original / "tokenizer.json"))
    tokenizer = AutoTokenizer.from_pretrained(original, model_max_length=maxlen, truncation_side=SIDE[mode])
    for key in ("max_length", "stride", "truncation_strategy"):  # that same cut, as the tokenizer's settings
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(original)


def pipeline_proba(folder, texts, classes, batch_size=8):
    """Probabilities (n, len(classes)) that transformers.pipeline() gives for `texts` with the folder as it is."""
    import numpy as np
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), truncation=True, top_k=None, framework="pt")
    found = classify(list(texts), batch_size=batch_size)
    return np.array([[{d["label"]: d["score"] for d in row}[c] for c in classes] for row in found], dtype=np.float64)


def check_parity(predictor, model_dir, folder, texts):
    """The folder through pipeline() against the TensorFlow predictor, on `texts` cut as the training run cut them
    (for head, the pipeline's own cut is the run's: nothing to do). For tail and head+tail, also on the uncut
    texts, where the pipeline cuts by itself and may keep a word piece more or less (tail) or only the tail."""
    import numpy as np

    import tensorflow as tf

    classes = list(predictor.get_classes())
    cut = truncation.like_saved_run(texts, model_dir, predictor.preproc.get_tokenizer())
    # The reference in full float32: on Ampere and later GPUs TensorFlow multiplies in TF32 by default, about
    # 1e-3 off (PyTorch does not by default). A no-op on a CPU.
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        expected = np.asarray(predictor.predict(cut, return_proba=True), dtype=np.float64)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)

    def compare(proba):
        return {"max_abs_diff": float(np.abs(proba - expected).max()),
                "label_agreement": float(np.mean(proba.argmax(1) == expected.argmax(1)))}

    report = {"n_reviews": len(texts), **compare(pipeline_proba(folder, cut, classes))}
    if cut != list(texts):
        report["uncut"] = compare(pipeline_proba(folder, texts, classes))
    return report


def read_metrics(model_dir):
    """The run's metrics.json ({} if it has none: the card then says so)."""
    import json

    try:
        return json.loads((Path(model_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def export_versions():
    names = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "tensorflow", "ktrain")
    import platform

    return {"python": platform.python_version(), **{name: metadata.version(name) for name in names}}


def replace(staging, output):
    """Move the finished `staging` folder to `output`; an earlier export there is replaced as a whole."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}-old-{os.getpid()}"
        os.replace(output, old)
    os.replace(staging, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def head_tail_note(maxlen):
    return (f"this model was trained with --truncation head+tail (the first {(maxlen - 2) // 4} and the last "
            f"{maxlen - 2 - (maxlen - 2) // 4} word pieces of a longer review), which a transformers pipeline cannot do: "
            "the folder's tokenizer keeps the tail (the last "
            f"{maxlen - 2}). For the predictor's exact answers, cut reviews with src/truncation.py first (the model card says how).")


# ---------------------------------------------------------------------------------------------------------------
# The model card (README.md): the Hub's YAML header, then what a user of the model needs to know.

METRICS = [("accuracy", "Accuracy"), ("f1", "F1 (macro)"), ("precision", "Precision (macro)"),
           ("recall", "Recall (macro)"), ("roc_auc", "ROC-AUC")]


def card_data(metrics, name):
    """The card's YAML header, built with huggingface_hub's own ModelCardData (model-index from metrics.json)."""
    from huggingface_hub import EvalResult, ModelCardData

    n_test = metrics.get("n_test")
    results = [EvalResult(task_type="text-classification", task_name="Sentiment analysis", dataset_type=DATASET,
                          dataset_name=f"IMDB (test split{f', {n_test:,} reviews' if n_test else ''})",
                          dataset_split="test", metric_type=key, metric_name=label, metric_value=round(float(metrics[key]), 4))
               for key, label in METRICS if metrics.get(key) is not None]
    return ModelCardData(language="en", library_name="transformers", pipeline_tag="text-classification",
                         base_model=BASE_MODEL, datasets=[DATASET], metrics=[key for key, _ in METRICS],
                         tags=["sentiment-analysis", "distilbert", "ktrain", "imdb"], model_name=name,
                         eval_results=results or None)


def differences_from_recipe(metrics, config):
    """How this run differs from the tutorial's full recipe on real DistilBERT, one phrase each ([] if not at all)."""
    args = metrics.get("args", {})
    found = []
    shape = {key: getattr(config, key, None) for key in DISTILBERT_SHAPE}
    if shape != DISTILBERT_SHAPE:
        found.append(f"the model loaded as distilbert-base-uncased was not DistilBERT's shape ({shape['n_layers']} layers, "
                     f"{shape['dim']} wide, a {shape['vocab_size']:,}-word vocabulary; DistilBERT: 6, 768, 30,522): a stand-in "
                     "or test model, so these results are not DistilBERT's")
    for key in ("epochs", "lr", "batch_size", "maxlen"):
        if key in args and args[key] != RECIPE[key]:
            found.append(f"{key} {args[key]:g} (the recipe: {RECIPE[key]:g})")
    if args.get("sample"):
        found.append(f"a sample of {args['sample']:,} reviews per split (--sample)")
    for key, split in (("n_train", "training"), ("n_test", "test")):
        if key in metrics and metrics[key] < RECIPE[key] - 100 and not args.get("sample"):  # a few empty reviews dropped are fine
            found.append(f"{metrics[key]:,} {split} reviews (the full split has {RECIPE[key]:,})")
    if not metrics:
        found.append("the predictor folder had no metrics.json, so how it was trained is unknown")
    return found


def arithmetic(precision):
    if precision in (None, "float32"):
        return precision
    return f"mixed {precision} (weights and the saved model in float32)"


def model_card(metrics, config, maxlen, mode, parity, name, versions):
    """README.md of the folder: the Hub's YAML header and the card's text."""
    from huggingface_hub import ModelCard

    args = metrics.get("args", {})
    differs = differences_from_recipe(metrics, config)
    classes = metrics.get("classes") or list(config.id2label.values())
    lines = [f"# {name}: movie-review sentiment ({' / '.join(classes)})", ""]
    if differs:
        lines += ["> **Not the full recipe.** This run differs from the tutorial's (DistilBERT, 2 epochs, lr 2e-5, batch 6, "
                  "maxlen 400, all 25,000 training reviews): " + "; ".join(differs) + ". Read its results as those of this "
                  "run only.", ""]
    lines += [
        "DistilBERT (`distilbert-base-uncased`) fine-tuned to tell positive from negative English movie reviews, on the "
        "IMDB Large Movie Review Dataset, with [ktrain](https://github.com/amaiya/ktrain) on TensorFlow "
        "(`texts_from_df(preprocess_mode='distilbert')`, `text_classifier('distilbert')`, `fit_onecycle`), then exported "
        "to PyTorch by the imdb-distilbert project's `src/export_hf.py`. No ktrain, TensorFlow or pickle is needed to use it.",
        "",
        "## Use it",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'classify = pipeline("text-classification", model="{name}", truncation=True)  # the folder, or its Hub id',
        'classify("the movie was really great. I will see it again")   # [{\'label\': ..., \'score\': ...}]',
        'classify(["awful, boring, too long"], top_k=None)             # every class with its probability',
        "```",
        "",
        f"`truncation=True` cuts a review longer than {maxlen} word pieces the way the model was trained "
        f"(`model_max_length` {maxlen}). Without it, a pipeline reads up to 512 word pieces, which changes the answers "
        "for longer reviews, and fails on reviews longer than that.",
        "",
        "## Long reviews",
        "",
    ]
    if mode == "head":
        lines += [f"The model was trained on the first {maxlen - 2} word pieces of each review (`--truncation head`, "
                  "ktrain's way); the tokenizer keeps the same (`truncation_side: right`)."]
    elif mode == "tail":
        lines += [f"The model was trained on the last {maxlen - 2} word pieces of each review (`--truncation tail`); the "
                  "tokenizer keeps the tail too (`truncation_side: left`). The training run started the kept tail at a whole "
                  "word; the tokenizer may keep a word piece more, which changes the answers for some long reviews slightly."]
    else:
        lines += [f"**The model was trained with `--truncation head+tail`**: the first {(maxlen - 2) // 4} and the last "
                  f"{maxlen - 2 - (maxlen - 2) // 4} word pieces of each longer review. A transformers pipeline cannot cut a "
                  f"review that way: this tokenizer keeps the tail (the last {maxlen - 2} word pieces, "
                  "`truncation_side: left`), which gives somewhat different answers on long reviews. For the trained "
                  "model's exact answers, cut the reviews first with the project's `src/truncation.py`:",
                  "", "```python", "from truncation import truncate  # imdb-distilbert's src/truncation.py",
                  "", f'texts = truncate(texts, classify.tokenizer, {maxlen}, "head+tail")', "```"]
    if "uncut" in parity:
        uncut = parity["uncut"]
        lines += ["", f"Measured at export on {parity['n_reviews']} reviews: letting the pipeline cut gave the predictor's "
                  f"label on {uncut['label_agreement']:.1%} of them (largest probability difference {uncut['max_abs_diff']:.2g})."]

    lines += ["", "## How it was trained", ""]
    if args:
        rows = [("epochs", args.get("epochs")), ("peak learning rate (one-cycle policy)", args.get("lr")),
                ("batch size", args.get("batch_size")), ("maxlen (word pieces)", args.get("maxlen")),
                ("truncation", args.get("truncation", "head")), ("seed", args.get("seed")),
                ("training reviews", metrics.get("n_train")), ("validation", metrics.get("validation")),
                ("test reviews", metrics.get("n_test")), ("sample per split", args.get("sample")),
                ("arithmetic", arithmetic(metrics.get("training_precision"))),
                ("distribution", (metrics.get("distribution") or {}).get("strategy")),
                ("training data", ", ".join(Path(str(args[k])).name for k in ("train", "test") if args.get(k))),
                ("training time", f"{metrics['seconds']['total']:,.0f} s" if metrics.get("seconds", {}).get("total") else None)]
        lines += ["| setting | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:,} |" if isinstance(value, int) and not isinstance(value, bool) else f"| {key} | {value} |"
                  for key, value in rows if value is not None]
        versions_trained = metrics.get("versions", {})
        lines += ["", "Trained with " + ", ".join(f"{k} {v}" for k, v in versions_trained.items()) + "."]
    else:
        lines += ["Unknown: the predictor folder had no metrics.json."]
    lines += ["Exported with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]

    lines += ["", "## Results on the test split", ""]
    if metrics.get("accuracy") is not None:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {label} | {metrics[key]:.4f} |" for key, label in METRICS if metrics.get(key) is not None]
        per_class = metrics.get("per_class") or {}
        if per_class:
            lines += ["", "| class | precision | recall | F1 | reviews |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']:,} |"
                      for c, m in per_class.items()]
    else:
        lines += ["Not recorded."]
    lines += ["", f"Exported weights checked against the TensorFlow predictor on {parity['n_reviews']} reviews: the same "
              f"label on {parity['label_agreement']:.1%}, probabilities within {parity['max_abs_diff']:.1e}."]

    lines += [
        "", "## Intended use and limitations", "",
        "- For: English movie reviews (or similar opinionated English text), positive or negative; learning and "
        "comparing fine-tuning recipes.",
        "- Not for: other languages; neutral or mixed text (it always answers one of the two classes, often with high "
        "confidence); decisions about people.",
        "- It learned from IMDB reviews only: other domains (products, news, social media) and other writing styles may "
        "score worse, and its confidence is not calibrated for them. Sarcasm and verdicts that come after the kept part "
        f"of a long review (beyond {maxlen} word pieces) are typical mistakes.",
        "- It inherits the biases of DistilBERT's pretraining text and of IMDB's reviewers.",
        "", "## Share it on the Hub", "",
        "```bash", f"hf upload YOUR-NAME/{name} path/to/{name} .   # after `hf auth login`", "```",
        "", "(or `huggingface_hub.upload_folder(repo_id=..., folder_path=...)`). Add a `license:` line to the header above "
        "first: the one you choose for your model.",
    ]
    return str(ModelCard(f"---\n{card_data(metrics, name).to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def main(argv=None):
    args = parse_args(argv)
    export(args.model, args.output, args.reviews, args.n)

