"""Export a saved predictor to ONNX (fp32, and int8 dynamically quantized) for fast CPU scoring.

    pip install -r requirements-export.txt           # once: PyTorch and onnx, for exporting only
    python src/export.py --model models/distilbert-imdb
    python src/predict.py --model models/distilbert-imdb --backend onnx-int8 "great film"

Writes model.onnx, model-int8.onnx and onnx.json (maxlen, classes, how to tokenize) into the
predictor folder, next to the tokenizer.json already there, then checks right away, on sample
reviews, that the ONNX models give the TensorFlow predictor's answers. The files are moved into the
folder only when the check passes: fp32 within 1e-4 of TensorFlow's probabilities, and int8 giving
TensorFlow's label on at least --min-agreement (99%) of the reviews. Scoring them later needs only requirements-onnx.txt.

How: TensorFlow's graph does not convert well (tf2onnx 1.17 does not know TF's GELU lowering, and
with an erf GELU needs about 25 GB for DistilBERT), so the same weights go into the PyTorch
model of the same architecture, which torch.onnx exports in seconds.
"""

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import backends
import truncation
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"
FP32_TOLERANCE = 1e-4  # largest difference in any probability allowed between TensorFlow and ONNX fp32
FP32_FFN_LAYERS = 2  # how many of the first layers keep their FFN output MatMul in float32 (quantize())
MIN_AGREEMENT = 0.99  # smallest share of the checked reviews on which int8 must give TensorFlow's label
OPSET = 17


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR", default=ROOT / "models" / "distilbert-imdb",
                   help="the predictor folder src/train.py saved (default: models/distilbert-imdb)")
    p.add_argument("--reviews", type=Path, metavar="PATH", default=SAMPLE_REVIEWS,
                   help="reviews for the parity check (.xlsx/.csv with a Reviews column, or .txt) "
                   "(default: data/sample/test.xlsx)")
    p.add_argument("--n", type=int, default=100, metavar="N", help="how many of them to check (default: 100, all of "
                   "data/sample/test.xlsx: with --min-agreement 0.99, one changed label is allowed)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="F",
                   help="refuse the export (write nothing) when the int8 model gives TensorFlow's label on a smaller "
                   f"share of the checked reviews than this (default: {MIN_AGREEMENT}; 0 accepts any)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    if not 0 <= args.min_agreement <= 1:
        p.error("--min-agreement must be between 0 and 1")
    return args


def check_packages():
    missing = [name for name in ("torch", "onnx", "onnxruntime", "tokenizers") if not installed(name)]
    if missing:
        raise UserError(f"exporting needs {', '.join(missing)}, which is not installed; "
                        "run `pip install -r requirements-export.txt` first.")


def installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def to_pytorch(tf_model):
    """The PyTorch model of the same architecture, holding the TF model's weights."""
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


def export_onnx(pt_model, path):
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


def quantize(fp32_path, int8_path, fp32_layers=FP32_FFN_LAYERS):
    """Dynamic int8 for the MatMuls: int8 weights with a scale per output channel, activations quantized
    on the fly per batch. Kept in float32: the embeddings, the classifier, and the FFN output MatMul
    (lin2) of the first `fp32_layers` layers, the most sensitive ones (benchmarks/int8.py: with one scale
    per tensor and everything quantized, a trained model changed 4% of its labels; see docs/performance.md)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [node.name for node in onnx.load(str(fp32_path)).graph.node if node.op_type == "MatMul"]
    sensitive = [name for name in names if any(f"/layer.{i}/ffn/lin2/" in name for i in range(fp32_layers))]
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     per_channel=True, nodes_to_exclude=sensitive, extra_options={"MatMulConstBOnly": True})


def settings(preproc, tokenizer_file, folder):
    """What the ONNX backends need to tokenize like the predictor does, without unpickling its preproc."""
    tok = preproc.tok
    return {
        "maxlen": int(preproc.maxlen),
        "truncation": truncation.saved_settings(folder)[1],  # which tokens of a long review: train.py --truncation
        "classes": list(preproc.get_classes()),
        "tokenizer": tokenizer_file,
        "lowercase": bool(getattr(tok, "do_lower_case", False)),  # done by tokenizer.json's normalizer
        "pad_token_id": int(tok.pad_token_id),
        "inputs": ["input_ids", "attention_mask"],
        "opset": OPSET,
        "versions": {name: metadata.version(name) for name in ("torch", "onnx", "onnxruntime", "transformers", "tensorflow", "ktrain")},
    }


def check_parity(predictor, model_dir, folder, texts, batch_size=8):
    """Probabilities of the TF predictor in `model_dir` vs the fp32 and int8 ONNX models in `folder` on `texts`."""
    import numpy as np

    cut = truncation.like_saved_run(texts, model_dir, predictor.preproc.get_tokenizer())
    expected = np.asarray(predictor.predict(cut, return_proba=True))
    report = {"n_reviews": len(texts)}
    for backend in ("onnx", "onnx-int8"):
        proba = backends.OnnxBackend(folder, backend, batch_size=batch_size).predict_proba(texts)
        report[backend] = {
            "max_abs_diff": float(np.abs(proba - expected).max()),
            "label_agreement": float(np.mean(proba.argmax(1) == expected.argmax(1))),
        }
    return report


def main(argv=None):
    args = parse_args(argv)
    backends.check_predictor_folder(args.model)
    check_packages()
    import predict

    texts = predict.read_texts(args.reviews)[:args.n]  # bad input is reported before TensorFlow loads
    started = time.time()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything needed is in the predictor folder
    import compat  # noqa: F401  (before TensorFlow)
    import ktrain

    predictor = ktrain.load_predictor(str(args.model))
    folder = args.model.resolve()
    for stale in folder.glob(".onnx-export-*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=folder))
    try:
        print(f"exporting {folder} to ONNX (opset {OPSET})...")
        export_onnx(to_pytorch(predictor.model), staging / backends.ONNX_FILES["onnx"])
        print("quantizing to int8...")
        quantize(staging / backends.ONNX_FILES["onnx"], staging / backends.ONNX_FILES["onnx-int8"])
        tokenizer_file = "tokenizer.json"
        if not (folder / tokenizer_file).is_file():  # ktrain saves it for fast tokenizers; write it if not
            predictor.preproc.tok.backend_tokenizer.save(str(staging / tokenizer_file))
        info = settings(predictor.preproc, tokenizer_file, folder)
        (staging / backends.ONNX_SETTINGS).write_text(json.dumps(info, indent=2) + "\n")
        if not (staging / tokenizer_file).exists():
            shutil.copy(folder / tokenizer_file, staging / tokenizer_file)

        print(f"checking the ONNX models against the TensorFlow predictor on {len(texts)} reviews from {args.reviews}...")
        parity = check_parity(predictor, folder, staging, texts)
        fp32, int8 = parity["onnx"], parity["onnx-int8"]
        print(f"fp32: largest probability difference {fp32['max_abs_diff']:.2e}, same label on {fp32['label_agreement']:.1%}")
        print(f"int8: largest probability difference {int8['max_abs_diff']:.2e}, same label on {int8['label_agreement']:.1%}")
        if fp32["max_abs_diff"] > FP32_TOLERANCE:
            raise UserError(f"the fp32 ONNX model differs from the TensorFlow predictor by up to {fp32['max_abs_diff']:.2e} "
                            f"(more than {FP32_TOLERANCE:g}), so nothing was written; check the installed versions "
                            "against requirements-export.txt.")
        if int8["label_agreement"] < args.min_agreement:
            same = round(int8["label_agreement"] * len(texts))
            raise UserError(f"the int8 ONNX model gives the TensorFlow predictor's label on only {same} of {len(texts)} reviews "
                            f"({int8['label_agreement']:.2%}, below --min-agreement {args.min_agreement:g}), so nothing was written; "
                            "pass a lower --min-agreement to export it anyway.")
        info["parity"] = parity
        (staging / backends.ONNX_SETTINGS).write_text(json.dumps(info, indent=2) + "\n")

        # Into place; onnx.json last, since the ONNX backends look for it first.
        for name in (*backends.ONNX_FILES.values(), tokenizer_file, backends.ONNX_SETTINGS):
            if name == tokenizer_file and (folder / name).exists():
                continue
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sizes = ", ".join(f"{name} {(folder / name).stat().st_size / 1e6:.1f} MB" for name in backends.ONNX_FILES.values())
    print(f"wrote {sizes} and {backends.ONNX_SETTINGS} to {folder} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    run_cli(main)
