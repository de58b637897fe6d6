"""Export a saved predictor to ONNX (fp32, and int8 quantized per token) for fast CPU scoring.

    pip install -r requirements-export.txt           # once: PyTorch and onnx, for exporting only
    python src/export.py --model models/distilbert-imdb
    python src/predict.py --model models/distilbert-imdb --backend onnx-int8 "great film"

Writes model.onnx, model-int8.onnx and onnx.json (maxlen, classes, how to tokenize) into the
predictor folder, next to the tokenizer.json already there, then checks right away, on real reviews
(the run's test split when it can be found, else data/sample/test.xlsx), that the ONNX models give the
TensorFlow predictor's answers. The files are moved into the folder only when the check passes: fp32
within 1e-4 of TensorFlow's probabilities, and int8 giving TensorFlow's label on at least --min-agreement
(99%) of reviews, judged with a binomial test (see int8_refused). Scoring them later needs only requirements-onnx.txt.

How: TensorFlow's graph does not convert well (tf2onnx 1.17 does not know TF's GELU lowering, and
with an erf GELU needs about 25 GB for DistilBERT), so the same weights go into the PyTorch
model of the same architecture, which torch.onnx exports in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imdb_distilbert import ROOT, cli, files, packages
from imdb_distilbert.config import RunConfig
from imdb_distilbert.data import batching, reading, truncation, windows
from imdb_distilbert.errors import UserError
from imdb_distilbert.export import quantize
from imdb_distilbert.inference import backends, selfcheck

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import PreTrainedModel

SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"
FP32_TOLERANCE = 1e-4  # largest difference in any probability allowed between TensorFlow and ONNX fp32
FP32_CHECKED = 100  # reviews on which fp32 is checked against TensorFlow (int8: all --n)
MIN_AGREEMENT = 0.99  # int8 must give TensorFlow's label on at least this share of reviews
CHECKED = 1000  # reviews the int8 check scores by default: enough to tell 99% from 97.7% (int8_refused)
SIGNIFICANCE = 0.05  # int8 at exactly --min-agreement is refused by chance in at most this share of exports
OPSET = 17


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_option(p)
    p.add_argument("--reviews", type=Path, metavar="PATH",
                   help="reviews for the parity check (.xlsx/.csv with the run's text column or Reviews, or .txt) "
                   "(default: the test "
                   "split the run was trained with, from its metrics.json, when it is there; "
                   "else data/sample/test.xlsx)")
    p.add_argument("--n", type=int, default=CHECKED, metavar="N", help="how many of them to check, a seeded random "
                   f"sample (default: {CHECKED}, or all if fewer)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="F",
                   help="refuse the export (write nothing) when the check shows that int8 gives TensorFlow's label "
                   f"on a smaller share of reviews than this (default: {MIN_AGREEMENT}; 0 accepts any)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    if not 0 <= args.min_agreement <= 1:
        p.error("--min-agreement must be between 0 and 1")
    return args


def check_packages() -> None:
    missing = packages.missing(("torch", "onnx", "onnxruntime", "tokenizers"))
    if missing:
        raise UserError(f"exporting needs {', '.join(missing)}, which is not installed; "
                        "run `pip install -r requirements-export.txt` first.")


def to_pytorch(tf_model: Any) -> PreTrainedModel:
    """The PyTorch model of the same architecture, holding the TF model's weights (`tf_model`: a Hugging Face
    TensorFlow model, such as a ktrain predictor's `model`)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.modeling_tf_pytorch_utils import load_tf2_model_in_pytorch_model

    # Built from the config and filled in place: from_pretrained(from_tf=True) fails with a
    # meta-device error under torch 2.13. SDPA attention exports to plain ONNX ops (MatMul, Add, Softmax)
    # that add the padding mask; eager attention's masked_fill becomes a Where per layer, which took 12%
    # of the int8 model's time (with SDPA both fp32 and int8 score real reviews about 7% faster; the
    # probabilities are the same to 1e-7 in fp32).
    model = AutoModelForSequenceClassification.from_config(tf_model.config, attn_implementation="sdpa")
    load_tf2_model_in_pytorch_model(model, tf_model)  # raises if any PyTorch weight has no TF counterpart
    return model.eval()


def export_onnx(pt_model: torch.nn.Module, path: str | Path) -> None:
    """torch.onnx.export with dynamic batch and sequence axes; logits out."""
    import torch

    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # dynamo=False: the TorchScript-based exporter, which needs no onnxscript and handles this model.
        torch.onnx.export(pt_model, example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}})


def settings(preproc: Any, tokenizer_file: str, folder: str | Path) -> dict:
    """What the ONNX backends need to tokenize like the predictor does, without unpickling its preproc
    (`preproc`: the ktrain predictor's preprocessor)."""
    tok = preproc.tok
    return {
        "maxlen": int(preproc.maxlen),
        "truncation": truncation.saved_settings(folder)[1],  # which tokens of a long review: train.py --truncation
        **windows.saved_reading(folder).record(),  # or windows over all of it: --long-reviews, data/windows.py
        "classes": list(preproc.get_classes()),
        "tokenizer": tokenizer_file,
        "lowercase": bool(getattr(tok, "do_lower_case", False)),  # done by tokenizer.json's normalizer
        "pad_token_id": int(tok.pad_token_id),
        "inputs": ["input_ids", "attention_mask"],
        "opset": OPSET,
        "versions": packages.versions(("torch", "onnx", "onnxruntime", "transformers", "tensorflow", "ktrain"),
                                      python=False),
    }


def check_parity(predictor: Any, model_dir: str | Path, folder: str | Path, texts: Sequence[str],
                 batch_size: int = 8) -> dict:
    """Probabilities of the TF predictor in `model_dir` vs the fp32 (on FP32_CHECKED of `texts`) and int8 ONNX models
    in `folder` on `texts`."""
    import numpy as np
    from tqdm.auto import tqdm

    # Shortest first (in characters), in calls of 32: ktrain pads each call to its longest review (data/batching.py).
    texts = [texts[i] for i in batching.by_length([len(t) for t in texts])]
    with tqdm(total=len(texts), desc="TensorFlow", unit="review", leave=False) as bar:  # long reviews read as saved
        expected = backends.predict_like_saved_run(predictor, texts, model_dir, batch_size=32, done=bar.update)
    few = np.linspace(0, len(texts) - 1, min(len(texts), FP32_CHECKED)).round().astype(int)  # short to long
    report = {"n_reviews": len(texts)}
    for backend, rows in (("onnx", few), ("onnx-int8", np.arange(len(texts)))):
        proba = backends.OnnxBackend(folder, backend, batch_size=batch_size).predict_proba([texts[i] for i in rows])
        same = proba.argmax(1) == expected[rows].argmax(1)
        report[backend] = {"n_reviews": len(rows), "max_abs_diff": float(np.abs(proba - expected[rows]).max()),
                           "label_agreement": float(same.mean()), "same_label": int(same.sum())}
    return report


def int8_refused(same: int, n: int, min_agreement: float, significance: float = SIGNIFICANCE) -> np.bool_:
    """Whether `same` of `n` reviews with TensorFlow's label show that int8 keeps it on less than `min_agreement` of
    reviews: a one-sided binomial test. Int8 that keeps exactly `min_agreement` changes this many labels or more in
    under `significance` of checks, so a good export is rarely refused by chance; see refused_surely() for the
    other side."""
    from scipy.stats import binom

    return binom.sf(n - same - 1, n, 1 - min_agreement) < significance


def refused_surely(n: int, min_agreement: float, significance: float = SIGNIFICANCE, power: float = 0.95) -> float:
    """The largest agreement at which int8 is refused in at least `power` of checks of `n` reviews."""
    from scipy.stats import binom

    changed = next(k for k in range(n + 2) if k > n or int8_refused(n - k, n, min_agreement, significance))
    low, high = 0.0, 1.0  # agreement: bisect on P(at least `changed` labels changed) = power
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if binom.sf(changed - 1, n, 1 - middle) >= power else (low, middle)
    return low


def add_self_check(folder: Path, staging: Path) -> None:
    """Add the ONNX models' answers for the predictor's self-check reviews to its self_check.json (in `staging`), so
    `predict.py --check --backend onnx-int8` has int8's own answers to compare with (inference/selfcheck.py). Refuse
    (nothing written) when fp32 does not give the saved model's stored answers: this environment does not reproduce
    the saved model. A folder saved before self-checks has nothing to add to."""
    import numpy as np

    stored = selfcheck.stored(folder)
    if stored is None:
        return
    answers = {name: backends.OnnxBackend(staging, name).predict_proba(stored["reviews"])
               for name in backends.ONNX_FILES}
    gap = float(np.abs(answers["onnx"] - np.asarray(stored["proba"])).max())
    print(f"fp32 on the {len(stored['reviews'])} self-check reviews: largest difference {gap:.2e} from the answers "
          f"stored when the predictor was saved")
    if gap > FP32_TOLERANCE:
        differ = selfcheck.changed(stored["versions"], packages.versions(selfcheck.KTRAIN_PACKAGES))
        raise UserError(f"the fp32 ONNX model differs from the answers stored in {selfcheck.SELF_CHECK} when the "
                        f"predictor was saved by up to {gap:.2e} (more than {FP32_TOLERANCE:g}), so nothing was "
                        f"written: this environment does not reproduce the saved model ({selfcheck.named(differ)}).")
    (staging / selfcheck.SELF_CHECK).write_text(selfcheck.with_onnx(stored, answers))


def default_reviews(model_dir: str | Path) -> Path:
    """The test split the run in `model_dir` was trained with (its metrics.json says), if it is here;
    else the sample."""
    saved = RunConfig.saved(model_dir)
    if saved is None or saved.test is None:
        return SAMPLE_REVIEWS
    for path in (saved.test, ROOT / saved.test):
        if path.is_file():
            return path
    return SAMPLE_REVIEWS


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backends.check_predictor_folder(args.model)
    check_packages()
    reviews = args.reviews or default_reviews(args.model)
    texts = reading.read_texts(reviews, cli.text_columns(args.model))  # bad input is reported before TensorFlow loads
    if len(texts) > args.n:
        texts = [texts[i] for i in sorted(random.Random(0).sample(range(len(texts)), args.n))]
    started = time.time()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything needed is in the predictor folder
    import ktrain

    predictor = ktrain.load_predictor(str(args.model))
    folder = args.model.resolve()
    tokenizer_file = "tokenizer.json"
    # The files go into the folder only if the block finishes, all in one rename of the folder (files.atomic_files).
    with files.atomic_files(folder) as staging:
        print(f"exporting {folder} to ONNX (opset {OPSET})...")
        export_onnx(to_pytorch(predictor.model), staging / backends.ONNX_FILES["onnx"])
        print("quantizing to int8...")
        quantize.per_token_int8(staging / backends.ONNX_FILES["onnx"], staging / backends.ONNX_FILES["onnx-int8"])
        if not (folder / tokenizer_file).is_file():  # ktrain saves it for fast tokenizers; write it if not
            predictor.preproc.tok.backend_tokenizer.save(str(staging / tokenizer_file))
        info = settings(predictor.preproc, tokenizer_file, folder)
        (staging / backends.ONNX_SETTINGS).write_text(json.dumps(info, indent=2) + "\n")
        if not (staging / tokenizer_file).exists():
            shutil.copy(folder / tokenizer_file, staging / tokenizer_file)

        print(f"checking the ONNX models against the TensorFlow predictor on {len(texts)} reviews from {reviews}...")
        parity = check_parity(predictor, folder, staging, texts)
        fp32, int8 = parity["onnx"], parity["onnx-int8"]
        print(f"fp32: largest probability difference {fp32['max_abs_diff']:.2e} on {fp32['n_reviews']} reviews, "
              f"same label on {fp32['label_agreement']:.1%}")
        print(f"int8: largest probability difference {int8['max_abs_diff']:.2e}, "
              f"same label on {int8['label_agreement']:.1%} ({int8['same_label']} of {len(texts)})")
        if fp32["max_abs_diff"] > FP32_TOLERANCE:
            raise UserError(f"the fp32 ONNX model differs from the TensorFlow predictor by up to "
                            f"{fp32['max_abs_diff']:.2e} (more than {FP32_TOLERANCE:g}), so nothing was written; "
                            "check the installed versions against requirements-export.txt.")
        if int8_refused(int8["same_label"], len(texts), args.min_agreement):
            raise UserError(f"the int8 ONNX model gives the TensorFlow predictor's label on only "
                            f"{int8['same_label']} of {len(texts)} reviews ({int8['label_agreement']:.2%}): too few "
                            f"for --min-agreement {args.min_agreement:g} (int8 that keeps {args.min_agreement:.0%} "
                            f"would do this in under {SIGNIFICANCE:.0%} of checks), so nothing was written; "
                            "pass a lower --min-agreement to export it anyway.")
        if 0 < args.min_agreement < 1:
            print(f"(on {len(texts)} reviews, int8 keeping {args.min_agreement:.0%} of TensorFlow's labels is refused "
                  f"by chance in under {SIGNIFICANCE:.0%} of exports, and int8 keeping "
                  f"{refused_surely(len(texts), args.min_agreement):.1%} or less in at least 95%)")
        info["parity"] = parity
        (staging / backends.ONNX_SETTINGS).write_text(json.dumps(info, indent=2) + "\n")
        add_self_check(folder, staging)
        if (folder / tokenizer_file).exists():  # the folder keeps its own: the copy was for the check
            (staging / tokenizer_file).unlink()
    sizes = ", ".join(f"{name} {(folder / name).stat().st_size / 1e6:.1f} MB" for name in backends.ONNX_FILES.values())
    print(f"wrote {sizes} and {backends.ONNX_SETTINGS} to {folder} in {time.time() - started:.0f} s")

