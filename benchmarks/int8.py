"""Which int8 scheme keeps the TensorFlow predictor's answers, gives a review the same scores whatever its batch,
and how fast it is: one table per run, with the CPU it ran on.

    HF=$(../shared/pretrained/build.sh .venv/bin/python)          # the pretrained stand-in, offline
    HF_HOME=$HF HF_HUB_OFFLINE=1 python benchmarks/int8.py --model STANDIN_PREDICTOR [--speed]

Copies --model (a trained predictor; it is not changed), exports the copy with src/export.py, scores --n seeded
random real test reviews with TensorFlow (the reference), ONNX fp32 and each int8 scheme:
- dynamic: ONNX Runtime's quantize_dynamic as src/export.py did before (per-channel weights, one activation scale
  per model call, the first 2 layers' FFN output MatMul in float32);
- static: ONNX Runtime's quantize_static (QDQ, per-channel weights, activation ranges calibrated once on
  --calibration training reviews);
- per token: export/quantize.py, what src/export.py writes now.
Columns: same label as TensorFlow, accuracy, largest probability change, reviews/s (batch 32), and batch dependence
(the largest change of a probability between 24 reviews scored one at a time and in batches of 7 and 32).

--speed also times dynamic against per token side by side on DistilBERT's full shape at maxlen 400 (random weights,
benchmarks/inference.py's model: right for speed, not for labels), in alternating rounds.
Needs a trained --model: a random-weight one has every probability near 0.5.
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
TRAIN_REVIEWS = ROOT.parent / "shared" / "data" / "imdb" / "train.xlsx"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR", required=True, help="a trained predictor (copied, not changed)")
    p.add_argument("--reviews", type=Path, metavar="PATH", default=REAL_REVIEWS,
                   help="labelled reviews (Reviews, Sentiment)")
    p.add_argument("--n", type=int, default=400, help="reviews to score (default: 400)")
    p.add_argument("--calibration", type=int, default=200,
                   help="training reviews that calibrate the static scheme (default: 200)")
    p.add_argument("--speed", action="store_true", help="also time dynamic against per token, full shape, maxlen 400")
    p.add_argument("--speed-n", type=int, default=96, help="--speed: reviews per round (default: 96)")
    p.add_argument("--rounds", type=int, default=3, help="--speed: rounds per scheme (default: 3)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def cpu():
    """The CPU's model name and whether it has VNNI (int8 dot products without 16-bit intermediate sums)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU", None
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return name, bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def dynamic(fp32_path, out_path):
    """What src/export.py wrote before per-token int8."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "MatMul"]
    sensitive = [n for n in names if any(f"/layer.{i}/ffn/lin2/" in n for i in range(2))]
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     per_channel=True, nodes_to_exclude=sensitive, extra_options={"MatMulConstBOnly": True})


def static(fp32_path, out_path, backend, texts):
    """ONNX Runtime's static int8, its activation ranges calibrated on `texts` (one review per calibration call)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter([{"input_ids": np.array([ids], np.int64),
                                 "attention_mask": np.ones((1, len(ids)), np.int64)}
                                for ids in backend.encode(texts)])

        def get_next(self):
            return next(self.inputs, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["MatMul"], activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def scorer(folder, int8_file, batch_size=32):
    """An onnx-int8 backend reading `int8_file` (with the folder's settings and tokenizer)."""
    from imdb_distilbert.inference import backends

    scheme = Path(tempfile.mkdtemp(prefix="int8-scheme-"))
    for name in (backends.ONNX_SETTINGS, json.loads((folder / backends.ONNX_SETTINGS).read_text())["tokenizer"]):
        os.symlink(folder / name, scheme / name)
    os.symlink(int8_file, scheme / backends.ONNX_FILES["onnx-int8"])
    return backends.OnnxBackend(scheme, "onnx-int8", batch_size=batch_size)


def batch_dependence(model, texts):
    """Largest change of a probability of `texts` between scoring each alone and in batches of 7 and 32."""
    import numpy as np

    size = model.batch_size
    alone = np.concatenate([model.predict_proba([t]) for t in texts])
    change = 0.0
    for model.batch_size in (7, 32):
        change = max(change, float(np.abs(model.predict_proba(texts) - alone).max()))
    model.batch_size = size
    return change


def measure(model, texts, reference, truth):
    import numpy as np

    model.predict_proba(texts[:4])  # warm-up
    started = time.perf_counter()
    proba = model.predict_proba(texts)
    seconds = time.perf_counter() - started
    return {"agreement": float(np.mean(proba.argmax(1) == reference.argmax(1))),
            "accuracy": float(np.mean(proba.argmax(1) == truth)),
            "max_change": float(np.abs(proba - reference).max()),
            "reviews_per_s": len(texts) / seconds,
            "batch_dependence": batch_dependence(model, texts[:24])}


def speed(args, work):
    """Dynamic against per token on the full shape at maxlen 400: reviews/s of each round, in alternation."""
    import pandas as pd

    from imdb_distilbert.export import quantize
    from imdb_distilbert.inference import backends

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import inference

    texts = [t.strip() for t in pd.read_excel(args.reviews)["Reviews"].dropna().sample(n=args.speed_n, random_state=1)]
    model = inference.prepare_model(None, 400, [t.strip() for t in pd.read_excel(args.reviews)["Reviews"].dropna()],
                                    work)
    fp32 = model / backends.ONNX_FILES["onnx"]
    files = {"dynamic": work / "full-dynamic.onnx", "per token": work / "full-per-token.onnx"}
    dynamic(fp32, files["dynamic"])
    quantize.per_token_int8(fp32, files["per token"])
    scorers = {name: scorer(model, path) for name, path in files.items()}
    for s in scorers.values():
        s.predict_proba(texts[:4])
    rates = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, s in scorers.items():
            started = time.perf_counter()
            s.predict_proba(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    return rates


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import pandas as pd

    from imdb_distilbert.export import quantize
    from imdb_distilbert.inference import backends

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    folder = work / args.model.name
    shutil.copytree(args.model, folder, ignore=shutil.ignore_patterns("*.onnx", "onnx.json"))
    print(f"exporting a copy in {folder}...", file=sys.stderr)
    subprocess.run([sys.executable, str(ROOT / "src" / "export.py"), "--model", str(folder), "--min-agreement", "0",
                    "--n", "100"], check=True, stdout=sys.stderr)
    frame = pd.read_excel(args.reviews).dropna(subset=["Reviews"]).sample(n=args.n, random_state=0)
    texts = [t.strip() for t in frame["Reviews"]]
    classes = json.loads((folder / backends.ONNX_SETTINGS).read_text())["classes"]
    truth = np.array([classes.index(s) for s in frame["Sentiment"]])

    print(f"scoring {len(texts)} reviews with TensorFlow...", file=sys.stderr)
    reference = backends.KtrainBackend(folder).predict_proba(texts)
    rows = [{"scheme": "TensorFlow (reference)", "agreement": 1.0,
             "accuracy": float(np.mean(reference.argmax(1) == truth)),
             "max_change": 0.0, "reviews_per_s": float("nan"), "batch_dependence": float("nan")}]
    fp32_model = backends.OnnxBackend(folder, "onnx")
    rows.append({"scheme": "ONNX fp32", **measure(fp32_model, texts, reference, truth)})

    fp32 = folder / backends.ONNX_FILES["onnx"]
    training_reviews = TRAIN_REVIEWS if TRAIN_REVIEWS.is_file() else args.reviews
    calibration = [t.strip() for t in
                   pd.read_excel(training_reviews)["Reviews"].dropna().sample(n=args.calibration, random_state=2)]
    schemes = {
        "dynamic (src/export.py before)": lambda path: dynamic(fp32, path),
        f"static, QDQ, calibrated on {args.calibration} training reviews":
            lambda path: static(fp32, path, fp32_model, calibration),
        "per token, 7-bit weights (src/export.py now)": lambda path: quantize.per_token_int8(fp32, path),
    }
    for i, (name, make) in enumerate(schemes.items()):
        print(f"scheme: {name}...", file=sys.stderr)
        path = work / f"int8-{i}.onnx"
        make(path)
        rows.append({"scheme": name, **measure(scorer(folder, path), texts, reference, truth)})

    name, vnni = cpu()
    lines = [f"{len(texts)} real test reviews (seeded random sample of {args.reviews.name}), model {args.model.name}, "
             f"maxlen {json.loads((folder / backends.ONNX_SETTINGS).read_text())['maxlen']}; "
             f"{os.cpu_count()} x {name}, "
             f"{'with' if vnni else 'without'} VNNI", "",
             "| scheme | same label as TensorFlow | accuracy | largest probability change | reviews/s (batch 32) "
             "| batch dependence |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['agreement']:.2%} | {r['accuracy']:.4f} | {r['max_change']:.4f} "
                     f"| {r['reviews_per_s']:.1f} | {r['batch_dependence']:.1e} |")
    rates = speed(args, work) if args.speed else None
    if rates:
        lines += (["", f"Full shape (random weights), maxlen 400, {args.speed_n} real reviews, batch 32, "
                   "reviews/s by round (alternating):", ""]
                  + [f"- {k}: {' / '.join(f'{r:.1f}' for r in v)}" for k, v in rates.items()])
        lines.append(f"- per token / dynamic: {sum(rates['per token']) / sum(rates['dynamic']):.2f}x")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"cpu": name, "vnni": vnni, "rows": rows, "speed": rates}, indent=2) + "\n")


if __name__ == "__main__":
    main()
