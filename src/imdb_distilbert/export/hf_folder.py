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

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imdb_distilbert import ROOT, cli, files, packages
from imdb_distilbert.data import reading, truncation
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import backends

if TYPE_CHECKING:
    import numpy as np
    from huggingface_hub import ModelCardData
    from transformers import PretrainedConfig

SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"
TOLERANCE = 1e-4  # largest difference in any probability allowed between TensorFlow and the exported folder
BASE_MODEL = "distilbert/distilbert-base-uncased"  # the Hub's id of what ktrain loads as distilbert-base-uncased
DATASET = "stanfordnlp/imdb"  # the Hub's id of the IMDB Large Movie Review Dataset
# The tutorial's recipe (README.md), against which the card says how a run differs.
RECIPE = {"epochs": 2, "lr": 2e-5, "batch_size": 6, "maxlen": 400, "n_train": 25_000, "n_test": 25_000}
DISTILBERT_SHAPE = {"n_layers": 6, "dim": 768, "n_heads": 12, "hidden_dim": 3072, "vocab_size": 30522}
# Which side the folder's tokenizer cuts: it keeps the other end. head+tail cannot be done by a tokenizer.
SIDE = {"head": "right", "tail": "left", "head+tail": "left"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_option(p)
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="the Hugging Face folder to write; replaced if it is an earlier export "
                   "(default: next to the predictor, its name + '-hf', e.g. models/distilbert-imdb-hf)")
    p.add_argument("--reviews", type=Path, metavar="PATH", default=SAMPLE_REVIEWS,
                   help="reviews for the parity check (.xlsx/.csv with the run's text column or Reviews, or .txt) "
                   "(default: data/sample/test.xlsx, 100 real reviews, most longer than 128 word pieces)")
    p.add_argument("--n", type=int, default=100, metavar="N", help="how many of them to check (default: 100)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    return args


def default_output(model_dir: str | Path) -> Path:
    """Where the folder goes unless told: next to the predictor, e.g. models/distilbert-imdb-hf."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}-hf"


def check_output(model_dir: str | Path, output: str | Path) -> None:
    """Stop with one sentence unless `output` is a new folder, or an earlier export that may be replaced."""
    output, model_dir = Path(output).resolve(), Path(model_dir).resolve()
    if output == model_dir or model_dir in output.parents or output in model_dir.parents:
        raise UserError(f"--output {output} is the predictor folder, or inside or around it; "
                        "give a folder of its own (the default is next to the predictor).")
    files.check_replaceable(output)  # absent, empty, or written by this project (its marker)
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: its parent folder {output.parent} does not exist; create it first.")


def check_torch() -> None:
    if not packages.installed("torch"):
        raise UserError("writing the Hugging Face folder needs PyTorch (torch), which is not installed; run "
                        "`pip install -r requirements-export.txt` (Colab has it already).")


def export(model_dir: str | Path, output: str | Path | None = None, reviews: str | Path = SAMPLE_REVIEWS,
           n: int = 100) -> Path:
    """Write the Hugging Face folder for the predictor in `model_dir` to `output` (default: next to it),
    all or nothing, after checking it against the TensorFlow predictor on `n` of `reviews`.
    Returns the folder. A UserError (and nothing written) if anything is wrong or the check fails."""
    model_dir = Path(model_dir)
    output = Path(output) if output else default_output(model_dir)
    backends.check_predictor_folder(model_dir)
    check_output(model_dir, output)
    check_torch()
    texts = reading.read_texts(reviews, cli.text_columns(model_dir))[:n]  # bad input is reported before TF loads
    started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything needed is in the predictor folder
    import ktrain

    predictor = ktrain.load_predictor(str(model_dir))
    maxlen, mode = int(predictor.preproc.maxlen), truncation.saved_settings(model_dir)[1]
    output = output.resolve()
    with files.atomic_folder(output) as staging:  # replaces an earlier export only when this one is complete
        print(f"exporting {model_dir} to a Hugging Face folder (PyTorch weights, maxlen {maxlen}, "
              f"keeps the {'head' if SIDE[mode] == 'right' else 'tail'} of longer reviews)...", flush=True)
        if mode == "head+tail":
            print(f"note: {head_tail_note(maxlen)}", flush=True)
        write_model(predictor, staging, maxlen, mode)
        print(f"checking the folder with transformers.pipeline() against the TensorFlow predictor on {len(texts)} "
              f"reviews from {reviews}...", flush=True)
        parity = check_parity(predictor, model_dir, staging, texts)
        print(f"largest probability difference {parity['max_abs_diff']:.2e}, "
              f"same label on {parity['label_agreement']:.1%}")
        if "uncut" in parity:
            uncut = parity["uncut"]
            print(f"without cutting the reviews first ({mode}; the pipeline keeps the tail itself): same label on "
                  f"{uncut['label_agreement']:.1%}, largest probability difference {uncut['max_abs_diff']:.2e}")
        if parity["max_abs_diff"] > TOLERANCE:
            raise UserError(f"the Hugging Face folder's probabilities differ from the TensorFlow predictor's by up "
                            f"to {parity['max_abs_diff']:.2e} (more than {TOLERANCE:g}), so nothing was written; check "
                            "the installed versions against requirements-export.txt.")
        metrics = read_metrics(model_dir)
        (staging / "README.md").write_text(model_card(metrics, predictor.model.config, maxlen, mode, parity,
                                                      output.name, export_versions()))
    size = (output / "model.safetensors").stat().st_size / 1e6
    print(f"wrote {output} (model.safetensors {size:.1f} MB, config.json, tokenizer, README.md model card) "
          f"in {time.time() - started:.0f} s")
    return output


def notebook_export(model_dir: str | Path, output: str | Path | None = None) -> Path | None:
    """export() for the notebook: the folder, or None after saying in one sentence why it was not written."""
    try:
        return export(model_dir, output)
    except UserError as error:
        print(f"The Hugging Face folder was not written: {error}")
        return None


def write_model(predictor: Any, folder: Path, maxlen: int, mode: str) -> None:
    """config.json, model.safetensors and the tokenizer files of the (ktrain) predictor into `folder`."""
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


def pipeline_proba(folder: str | Path, texts: Iterable[str], classes: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """Probabilities (n, len(classes)) that transformers.pipeline() gives for `texts` with the folder as it is."""
    import numpy as np
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), truncation=True, top_k=None, framework="pt")
    found = classify(list(texts), batch_size=batch_size)
    return np.array([[{d["label"]: d["score"] for d in row}[c] for c in classes] for row in found], dtype=np.float64)


def check_parity(predictor: Any, model_dir: str | Path, folder: str | Path, texts: Sequence[str]) -> dict:
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

    def compare(proba: np.ndarray) -> dict[str, float]:
        return {"max_abs_diff": float(np.abs(proba - expected).max()),
                "label_agreement": float(np.mean(proba.argmax(1) == expected.argmax(1)))}

    report = {"n_reviews": len(texts), **compare(pipeline_proba(folder, cut, classes))}
    if cut != list(texts):
        report["uncut"] = compare(pipeline_proba(folder, texts, classes))
    return report


def read_metrics(model_dir: str | Path) -> dict:
    """The run's metrics.json ({} if it has none: the card then says so)."""
    import json

    try:
        return json.loads((Path(model_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def export_versions() -> dict[str, str]:
    return packages.versions(("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "tensorflow",
                              "ktrain"))


def head_tail_ends(maxlen: int) -> tuple[int, int]:
    """The word pieces --truncation head+tail keeps of a longer review's head and of its tail (as truncation.kept)."""
    budget = maxlen - 2  # [CLS] and [SEP] take two
    return budget // 4, budget - budget // 4


def head_tail_note(maxlen: int) -> str:
    head, tail = head_tail_ends(maxlen)
    return (f"this model was trained with --truncation head+tail (the first {head} and the last {tail} word pieces "
            "of a longer review), which a transformers pipeline cannot do: the folder's tokenizer keeps the tail "
            f"(the last {maxlen - 2}). For the predictor's exact answers, cut reviews with data/truncation.py first "
            "(the model card says how).")


# ---------------------------------------------------------------------------------------------------------------
# The model card (README.md): the Hub's YAML header, then what a user of the model needs to know. Its text is the
# Jinja2 template CARD_TEMPLATE; the functions here work out what fills it.

CARD_TEMPLATE = resources.files("imdb_distilbert.export") / "templates" / "model_card.md"  # also inside a zip

METRICS = [("accuracy", "Accuracy"), ("f1", "F1 (macro)"), ("precision", "Precision (macro)"),
           ("recall", "Recall (macro)"), ("roc_auc", "ROC-AUC")]


def own_data(metrics: dict) -> str | None:
    """The name of the training file when the run learned a user's own data (other columns or classes than IMDB's
    Reviews/Sentiment with neg/pos: train.py --text-column, --label-column); None for IMDB."""
    args = metrics.get("args", {})
    imdb = (metrics.get("classes") in (None, ["neg", "pos"]) and args.get("text_column", "Reviews") == "Reviews"
            and args.get("label_column", "Sentiment") == "Sentiment")
    return None if imdb else Path(str(args.get("train") or "own data")).name


def card_data(metrics: dict, name: str) -> ModelCardData:
    """The card's YAML header, built with huggingface_hub's own ModelCardData (model-index from metrics.json)."""
    from huggingface_hub import EvalResult, ModelCardData

    n_test, own = metrics.get("n_test"), own_data(metrics)
    split = f"test split{f', {n_test:,} reviews' if n_test else ''}"
    results = [EvalResult(task_type="text-classification", task_name="Text classification" if own
                          else "Sentiment analysis", dataset_type=own or DATASET,
                          dataset_name=f"{own} ({split})" if own else f"IMDB ({split})",
                          dataset_split="test", metric_type=key, metric_name=label,
                          metric_value=round(float(metrics[key]), 4))
               for key, label in METRICS if metrics.get(key) is not None]
    return ModelCardData(language="en", library_name="transformers", pipeline_tag="text-classification",
                         base_model=BASE_MODEL, datasets=None if own else [DATASET],
                         metrics=[key for key, _ in METRICS],
                         tags=["distilbert", "ktrain"] if own else ["sentiment-analysis", "distilbert", "ktrain",
                                                                    "imdb"],
                         model_name=name, eval_results=results or None)


def differences_from_recipe(metrics: dict, config: PretrainedConfig) -> list[str]:
    """How this run differs from the tutorial's full recipe on real DistilBERT, one phrase each ([] if not at all)."""
    args = metrics.get("args", {})
    found = []
    shape = {key: getattr(config, key, None) for key in DISTILBERT_SHAPE}
    if shape != DISTILBERT_SHAPE:
        found.append(f"the model loaded as distilbert-base-uncased was not DistilBERT's shape "
                     f"({shape['n_layers']} layers, {shape['dim']} wide, a {shape['vocab_size']:,}-word vocabulary; "
                     "DistilBERT: 6, 768, 30,522): a stand-in or test model, so these results are not DistilBERT's")
    for key in ("epochs", "lr", "batch_size", "maxlen"):
        if key in args and args[key] != RECIPE[key]:
            found.append(f"{key} {args[key]:g} (the recipe: {RECIPE[key]:g})")
    if own_data(metrics):
        found.append(f"trained on {own_data(metrics)}, not IMDB ({len(metrics.get('classes') or [])} classes)")
    if args.get("class_weight", "none") != "none":
        found.append(f"--class-weight {args['class_weight']}")
    if args.get("sample"):
        found.append(f"a sample of {args['sample']:,} reviews per split (--sample)")
    for key, split in (("n_train", "training"), ("n_test", "test")):
        # a few empty reviews dropped are fine
        if key in metrics and metrics[key] < RECIPE[key] - 100 and not args.get("sample") and not own_data(metrics):
            found.append(f"{metrics[key]:,} {split} reviews (the full split has {RECIPE[key]:,})")
    if not metrics:
        found.append("the predictor folder had no metrics.json, so how it was trained is unknown")
    return found


def arithmetic(precision: str | None) -> str | None:
    if precision in (None, "float32"):
        return precision
    return f"mixed {precision} (weights and the saved model in float32)"


def model_card(metrics: dict, config: PretrainedConfig, maxlen: int, mode: str, parity: dict, name: str,
               versions: dict[str, str]) -> str:
    """README.md of the folder: CARD_TEMPLATE (the Hub's YAML header, card_data, and the card's text) rendered by
    huggingface_hub's ModelCard.from_template (Jinja2) with the values worked out here."""
    from huggingface_hub import ModelCard

    args = metrics.get("args", {})
    rows = [("epochs", args.get("epochs")), ("peak learning rate (one-cycle policy)", args.get("lr")),
            ("batch size", args.get("batch_size")), ("maxlen (word pieces)", args.get("maxlen")),
            ("truncation", args.get("truncation", "head")), ("seed", args.get("seed")),
            ("training reviews", metrics.get("n_train")), ("validation", metrics.get("validation")),
            ("test reviews", metrics.get("n_test")), ("sample per split", args.get("sample")),
            ("arithmetic", arithmetic(metrics.get("training_precision"))),
            ("distribution", (metrics.get("distribution") or {}).get("strategy")),
            ("training data", ", ".join(Path(str(args[k])).name for k in ("train", "test") if args.get(k))),
            ("text and label columns", f"{args.get('text_column')}, {args.get('label_column')}"
             if own_data(metrics) else None),
            ("class weights", args.get("class_weight") if args.get("class_weight", "none") != "none" else None),
            ("training time", f"{metrics['seconds']['total']:,.0f} s" if metrics.get("seconds", {}).get("total")
             else None)]
    settings = [(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value)
                for key, value in rows if value is not None]
    results = [(label, metrics[key]) for key, label in METRICS if metrics.get(key) is not None]
    head, tail = head_tail_ends(maxlen)
    readings = (metrics.get("long_reviews") or {}).get("readings", {})
    windows = ({"accuracy": readings["windows"]["accuracy"], "cut_accuracy": readings[mode]["accuracy"]}
               if args.get("long_reviews") == "windows" and mode in readings and "windows" in readings else None)
    card = ModelCard.from_template(
        card_data(metrics, name), template_str=CARD_TEMPLATE.read_text(encoding="utf-8"),
        name=name, classes=metrics.get("classes") or list(config.id2label.values()),
        differs=differences_from_recipe(metrics, config), own_data=own_data(metrics), maxlen=maxlen, kept=maxlen - 2,
        mode=mode, windows=windows,
        head=head, tail=tail, parity=parity, settings=settings if args else None,
        trained_with=metrics.get("versions", {}), exported_with=versions,
        results=results if metrics.get("accuracy") is not None else None, per_class=metrics.get("per_class") or {})
    return str(card)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    export(args.model, args.output, args.reviews, args.n)

