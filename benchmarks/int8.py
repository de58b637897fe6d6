"""Which int8 quantization keeps the TensorFlow predictor's answers: label agreement, accuracy and speed per scheme.

    HF_HOME=/tmp/pretrained-distilbert-hf HF_HUB_OFFLINE=1 python benchmarks/int8.py --model /work/standin-predictor

Copies --model (it is not changed), exports the copy with src/export.py, scores --n seeded random real test
reviews with TensorFlow (the reference), ONNX fp32, and the fp32 model quantized by each scheme, and prints one
markdown table: same label as TensorFlow, accuracy, largest probability change, reviews/s (batch 32).
Then it quantizes one MatMul at a time to find the most sensitive ones, and tries leaving them in float32.
Needs a trained model: a random-weight one has every probability near 0.5.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
REAL_REVIEWS = ROOT.parent / "shared" / "data" / "imdb" / "test.xlsx"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR", required=True, help="a trained predictor (copied, not changed)")
    p.add_argument("--reviews", type=Path, metavar="PATH", default=REAL_REVIEWS, help="labelled reviews (Reviews, Sentiment)")
    p.add_argument("--n", type=int, default=400, help="reviews to score (default: 400)")
    p.add_argument("--sensitivity-n", type=int, default=100, help="reviews for the one-MatMul-at-a-time search (default: 100)")
    p.add_argument("--sensitivity", type=Path, metavar="PATH", help="the --json of an earlier run: reuse its ranking, "
                   "and try only per-channel MatMul quantization with the most sensitive 1-4 left in fp32")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def matmuls(fp32_path):
    """(name, has a constant weight) of each MatMul, and the names of all nodes."""
    import onnx

    model = onnx.load(str(fp32_path))
    weights = {i.name for i in model.graph.initializer}
    return ([(n.name, n.input[1] in weights) for n in model.graph.node if n.op_type == "MatMul"],
            [n.name for n in model.graph.node])


def quantize(fp32_path, out_path, **options):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, **options)


def scorer(folder, int8_file):
    """An onnx-int8 backend reading `int8_file` (with the folder's settings and tokenizer)."""
    import backends

    scheme = Path(tempfile.mkdtemp(prefix="int8-scheme-"))
    for name in (backends.ONNX_SETTINGS, json.loads((folder / backends.ONNX_SETTINGS).read_text())["tokenizer"]):
        os.symlink(folder / name, scheme / name)
    os.symlink(int8_file, scheme / backends.ONNX_FILES["onnx-int8"])
    return backends.OnnxBackend(scheme, "onnx-int8", batch_size=32)


def measure(model, texts, reference, truth):
    import numpy as np

    model.predict_proba(texts[:4])  # warm-up
    started = time.perf_counter()
    proba = model.predict_proba(texts)
    seconds = time.perf_counter() - started
    return {"agreement": float(np.mean(proba.argmax(1) == reference.argmax(1))),
            "accuracy": float(np.mean(proba.argmax(1) == truth)),
            "max_change": float(np.abs(proba - reference).max()),
            "reviews_per_s": len(texts) / seconds}


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import pandas as pd

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    folder = work / args.model.name
    shutil.copytree(args.model, folder)
    print(f"exporting a copy in {folder}...", file=sys.stderr)
    subprocess.run([sys.executable, str(ROOT / "src" / "export.py"), "--model", str(folder), "--min-agreement", "0"],
                   check=True, stdout=sys.stderr)
    frame = pd.read_excel(args.reviews).dropna(subset=["Reviews"]).sample(n=args.n, random_state=0)
    texts = [t.strip() for t in frame["Reviews"]]
    import backends

    classes = json.loads((folder / backends.ONNX_SETTINGS).read_text())["classes"]
    truth = np.array([classes.index(s) for s in frame["Sentiment"]])

    print(f"scoring {len(texts)} reviews with TensorFlow...", file=sys.stderr)
    reference = backends.KtrainBackend(folder).predict_proba(texts)
    rows = [{"scheme": "TensorFlow (reference)", "agreement": 1.0, "accuracy": float(np.mean(reference.argmax(1) == truth)),
             "max_change": 0.0, "reviews_per_s": float("nan")}]
    rows.append({"scheme": "ONNX fp32", **measure(backends.OnnxBackend(folder, "onnx"), texts, reference, truth)})

    fp32 = folder / backends.ONNX_FILES["onnx"]
    nodes, all_nodes = matmuls(fp32)
    activation_matmuls = [name for name, const in nodes if not const]  # attention's Q.K^T and weights.V
    schemes = {
        "dynamic, per tensor (export.py before)": {},
        "per channel": {"per_channel": True},
        "reduce_range": {"reduce_range": True},
        "per channel + reduce_range": {"per_channel": True, "reduce_range": True},
        "weights only (attention's activation MatMuls in fp32)": {"extra_options": {"MatMulConstBOnly": True}},
        "weights only, per channel": {"per_channel": True, "extra_options": {"MatMulConstBOnly": True}},
        "classifier in fp32": {"nodes_to_exclude": [n for n in all_nodes if "classifier" in n]},
        "embeddings (Gather) in fp32": {"nodes_to_exclude": [n for n in all_nodes if "Gather" in n]},
        "MatMul only (embeddings, classifier in fp32)": {"op_types_to_quantize": ["MatMul"]},
        "MatMul only, reduce_range": {"op_types_to_quantize": ["MatMul"], "reduce_range": True},
        "MatMul weights only, per channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True,
                                             "extra_options": {"MatMulConstBOnly": True}},
    }
    if args.sensitivity:  # only today's scheme and the best so far, for speeds measured in this run
        schemes = {k: v for k, v in schemes.items() if k in ("dynamic, per tensor (export.py before)", "MatMul weights only, per channel")}
    results = {}
    for name, options in schemes.items():
        print(f"scheme: {name}...", file=sys.stderr)
        path = work / f"int8-{len(results)}.onnx"
        quantize(fp32, path, **options)
        results[name] = path
        rows.append({"scheme": name, **measure(scorer(folder, path), texts, reference, truth)})

    # Sensitivity: quantize one MatMul at a time (the rest fp32); mean probability change on a few reviews.
    few = texts[:args.sensitivity_n]
    if args.sensitivity:
        sensitivity = json.loads(args.sensitivity.read_text())["sensitivity"]
    else:
        print(f"sensitivity of {len(nodes)} MatMuls...", file=sys.stderr)
        base = backends.OnnxBackend(folder, "onnx").predict_proba(few)
        sensitivity = {}
        for name, _ in nodes:
            path = work / "one.onnx"
            quantize(fp32, path, nodes_to_quantize=[name])
            sensitivity[name] = float(np.abs(scorer(folder, path).predict_proba(few) - base).mean())
    ranked = sorted(sensitivity, key=sensitivity.get, reverse=True)
    ranked = [n for n in ranked if n not in activation_matmuls]
    tries = [(k, True) for k in (1, 2, 3, 4)] if args.sensitivity else [(k, False) for k in (2, 4, 8)]
    for k, per_channel in tries:
        name = f"MatMul only{', per channel' if per_channel else ''}, {k} most sensitive weight MatMuls in fp32"
        print(f"scheme: {name}...", file=sys.stderr)
        path = work / f"int8-top{k}.onnx"
        keep = ranked[:k]
        quantize(fp32, path, op_types_to_quantize=["MatMul"], nodes_to_exclude=keep, per_channel=per_channel,
                 extra_options={"MatMulConstBOnly": True})
        rows.append({"scheme": name, "excluded": keep, **measure(scorer(folder, path), texts, reference, truth)})

    lines = [f"{len(texts)} real test reviews (seeded random sample of {args.reviews.name}), model {args.model.name}; "
             f"{os.cpu_count()} CPUs", "",
             "| scheme | same label as TensorFlow | accuracy | largest probability change | reviews/s (batch 32) |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['agreement']:.1%} | {r['accuracy']:.3f} | {r['max_change']:.3f} | {r['reviews_per_s']:.1f} |")
    lines += ["", "Most sensitive MatMuls (mean probability change when only it is quantized, "
              f"{len(few)} reviews):"] + [f"- {n}: {sensitivity[n]:.2e}" for n in ranked[:10]]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "sensitivity": sensitivity}, indent=2) + "\n")


if __name__ == "__main__":
    main()
