"""Time DistilBERT training on CPU through the project's own ktrain path: steps per configuration, or
whole epochs with and without length-grouped batches (--padding).

    python benchmarks/train_speed.py                 # the default set, about 12 min on 2 cores
    python benchmarks/train_speed.py --lock /tmp/cpu.lock --data ../shared/data/imdb/train.xlsx
    python benchmarks/train_speed.py --models small --maxlens 128 --configs glibc,tcmalloc --steps 4
    python benchmarks/train_speed.py --padding --vocab VOCAB.TXT   # grouped against fixed padding, about 1 h

Each (model, maxlen, configuration) runs in its own Python process, so the allocator and environment
can differ and `getrusage` gives that run's system time, page faults and peak memory. A run is the
tutorial's recipe from training/learning.py (texts_from_df, text_classifier, get_learner, fit_onecycle) on
real reviews; the first --warmup steps (graph tracing, XLA compilation) are not timed.

Models (random weights: the Hugging Face Hub is not needed, and speed does not depend on the weights):
  full   DistilBERT's shape: 768 wide, 6 layers, 12 heads, 3072 hidden, 30,522-word embedding
         (67.0M parameters with the classifier head)
  small  the same layout at 384 wide, 1536 hidden (22.7M)
Configurations (--configs; default glibc,tcmalloc,bf16,pytorch,pytorch-bf16):
  glibc       the plain recipe: float32, the system allocator (IMDB_FAST_MALLOC=0)
  tcmalloc    float32, tcmalloc preloaded (what src/train.py does where tcmalloc is installed)
  bf16        tcmalloc and mixed bfloat16 precision: what src/train.py does by default on a CPU
              with bfloat16 instructions (--precision auto)
  xla         + the training step compiled with XLA (jit_compile)         } tried; slower here,
  inter-op-1  + TF_NUM_INTEROP_THREADS=1                                  } so not used
  onednn-off  + TF_ENABLE_ONEDNN_OPTS=0                                   }
  bf16-xla    bf16 + XLA                                                  }
  pytorch     the same model, data and steps under the Hugging Face Trainer in PyTorch
              (pip install -r benchmarks/requirements-pytorch.txt; skipped without torch)
  pytorch-bf16  the same, with the Trainer's bf16=True (autocast to bfloat16)

--padding: one training epoch over the same --reviews real training reviews (a fixed stratified sample), full
DistilBERT shape, --maxlen 400 (these two flags take their first value), --batch-size 6 unless given, in float32
unless --precision says otherwise, by each arm in turn, --rounds times (the arms share the machine's load alike):
  fixed    ktrain's batches, every review padded to maxlen (train.py --padding fixed)
  grouped  length-grouped batches, each padded to its longest review rounded up to a bucket (train.py's default)
  pytorch  the Hugging Face Trainer in PyTorch with group_by_length=True and DataCollatorWithPadding (each batch
           padded to its longest review): what a PyTorch user would pick
An epoch's time is from the end of its first step (TensorFlow traces the step there) to the end of its last.
Then the test-split evaluation: learning.predict_proba (length-sorted batches) against predictor.predict (every
review padded to maxlen), in turn in one process, on the same --eval-reviews real test reviews.
For realistic lengths give --vocab a vocab.txt of BERT's uncased word pieces (the pretrained stand-in's,
../shared/pretrained/build.sh, is one); without it the vocabulary is the 30,000 commonest words of the reviews.
"""

import argparse
import fcntl
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

MODELS = {
    "small": dict(dim=384, n_layers=6, n_heads=12, hidden_dim=1536, vocab_size=30522),
    "full": dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522),
}
CONFIGS = {  # name: environment changes ("tcmalloc": its path; None: unset)
    "glibc": {"IMDB_FAST_MALLOC": "0", "LD_PRELOAD": None},
    "tcmalloc": {"LD_PRELOAD": "tcmalloc"},
    "bf16": {"LD_PRELOAD": "tcmalloc", "BENCH_PRECISION": "bfloat16"},  # train.py's default on a CPU with bfloat16
    # Tried on top of tcmalloc and found slower here (docs/performance.md, "Tried, and not kept"):
    "xla": {"LD_PRELOAD": "tcmalloc", "BENCH_XLA": "1"},
    "inter-op-1": {"LD_PRELOAD": "tcmalloc", "TF_NUM_INTEROP_THREADS": "1"},
    "onednn-off": {"LD_PRELOAD": "tcmalloc", "TF_ENABLE_ONEDNN_OPTS": "0"},
    "bf16-xla": {"LD_PRELOAD": "tcmalloc", "BENCH_PRECISION": "bfloat16", "BENCH_XLA": "1"},
    "pytorch": {"LD_PRELOAD": "tcmalloc", "USE_TF": "0"},  # needs benchmarks/requirements-pytorch.txt
    "pytorch-bf16": {"LD_PRELOAD": "tcmalloc", "USE_TF": "0", "BENCH_PRECISION": "bfloat16"},
}
REAL_DATA = ROOT / "data" / "train.xlsx"  # where src/train.py downloads the training split
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "imdb-distilbert-bench-hf"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="small,full", help="comma-separated: small, full (default: both)")
    p.add_argument("--maxlens", help="comma-separated token lengths (default: 128,400; 400 with --padding)")
    p.add_argument("--configs", default="glibc,tcmalloc,bf16,pytorch,pytorch-bf16",
                   help=f"comma-separated, of: {', '.join(CONFIGS)}")
    p.add_argument("--batch-size", type=int, help="reviews per step (default: 16; 6 with --padding)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per run (default: 4)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--data", type=Path, help=f"a split with Reviews and Sentiment columns "
                   f"(default: {REAL_DATA} if present, else data/sample/train.xlsx)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"where the random models are kept (default: {DEFAULT_CACHE})")
    p.add_argument("--lock", type=Path, help="hold an flock(1)-style lock on this file during each measurement, "
                   "so that other heavy work on a shared machine waits (e.g. /tmp/cpu.lock)")
    p.add_argument("--json", type=Path, help="also write the configuration and all results here")
    p.add_argument("--padding", action="store_true",
                   help="compare whole epochs with and without length-grouped batches "
                   "(see above) instead of timing steps")
    p.add_argument("--reviews", type=int, default=600, help="--padding: training reviews in the epoch (default: 600)")
    p.add_argument("--eval-reviews", type=int, default=600, help="--padding: test reviews evaluated (default: 600)")
    p.add_argument("--eval-data", type=Path, help="--padding: the test split (default: ../shared/data/imdb/test.xlsx "
                   "if present, else data/sample/test.xlsx)")
    p.add_argument("--rounds", type=int, default=2, help="--padding: times each arm runs (default: 2)")
    p.add_argument("--arms", default="fixed,grouped,pytorch",
                   help="--padding: comma-separated arms (default: all three)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="--padding: training arithmetic of every arm (default: float32)")
    p.add_argument("--vocab", type=Path, help="--padding: a vocab.txt for the random model (see above)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one measurement (JSON spec)
    args = p.parse_args()
    args.batch_size = args.batch_size or (6 if args.padding else 16)
    args.maxlens = args.maxlens or ("400" if args.padding else "128,400")
    return args


# --- in the child process: one measurement -----------------------------------------------------


def measure(spec):
    import tensorflow as tf

    from imdb_distilbert import compat  # noqa: F401  (first: before TensorFlow)
    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import learning

    reviews = dataset.read_split(spec["data"])
    n_train = spec["batch_size"] * (spec["warmup"] + spec["steps"])
    train_df, val_df = reviews[:n_train], reviews[n_train:n_train + spec["batch_size"]]
    learning.set_seed(0)
    train, val, preproc = learning.preprocess(train_df, val_df, spec["maxlen"])
    precision = os.environ.get("BENCH_PRECISION", "float32")
    learner = learning.build_learner(train, val, preproc, spec["batch_size"], precision)
    if os.environ.get("BENCH_XLA"):
        learner.model.jit_compile = True  # XLA-compile the training step

    marks = []  # (wall, rusage) at the end of each training step

    class StepClock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))

    learning.fit(learner, 1e-4, 1, callbacks=[StepClock()])
    threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}  # 0: TensorFlow's default
    return summarize(marks, spec, learner.model.count_params(), threads=threads,
                     jit_compile=bool(learner.model.jit_compile))


def measure_epoch(spec):
    """--padding, a TensorFlow arm: one epoch of the project's training path, padded spec["arm"]'s way."""
    import tensorflow as tf

    from imdb_distilbert import compat  # noqa: F401  (first: before TensorFlow)
    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import learning

    reviews = dataset.read_split(spec["data"])
    size, maxlen = spec["batch_size"], spec["maxlen"]
    learning.set_seed(0)
    train, val, preproc = learning.preprocess(reviews, reviews[:size], maxlen, padding=spec["arm"], seed=0)
    learner = learning.build_learner(train, val, preproc, size, spec["precision"])
    marks = []

    class StepClock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    learning.fit(learner, 1e-4, 1, callbacks=[StepClock()])
    if spec["arm"] == "grouped":
        shapes = [(len(batch), train.width(batch)) for batch in train.training_batches(0)]  # what the epoch ran
    else:
        shapes = [(min(size, len(reviews) - start), maxlen) for start in range(0, len(reviews), size)]
    traces = learner.model.train_tf_function.experimental_get_tracing_count()
    return epoch_summary(marks, shapes, reviews_lengths(preproc, reviews), maxlen, traces=traces)


def reviews_lengths(preproc, reviews):
    """Tokens of each review with [CLS] and [SEP], uncut."""
    from imdb_distilbert.data import dataset

    tokenizer = preproc.get_tokenizer()
    return [len(ids) for ids in tokenizer(list(reviews[dataset.TEXT]))["input_ids"]]


def epoch_summary(marks, shapes, lengths, maxlen, **extra):
    """An epoch's seconds (steps 2 to the last), its tokens (padding included) and distinct batch shapes;
    `lengths`: the reviews' tokens before the cut at `maxlen`."""
    import numpy as np

    tokens = sum(n * width for n, width in shapes)
    return {"steps": len(marks), "epoch_s": marks[-1] - marks[0], "tokens": tokens,
            "real_tokens": int(np.minimum(lengths, maxlen).sum()), "shapes": len(set(shapes)),
            "widths": sorted({width for _, width in shapes}), "mean_tokens": float(np.mean(lengths)), **extra}


def measure_pytorch_epoch(spec):
    """--padding, the PyTorch arm: the Hugging Face Trainer with group_by_length=True and per-batch padding."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from imdb_distilbert.data import dataset

    reviews = dataset.read_split(spec["data"])
    tokenizer = AutoTokenizer.from_pretrained("distilbert-base-uncased")
    encoded = tokenizer(list(reviews[dataset.TEXT]), truncation=True, max_length=spec["maxlen"])  # no padding yet
    labels = (reviews[dataset.LABEL] == "pos").astype(int).tolist()
    train = [{"input_ids": ids, "attention_mask": mask, "labels": y}
             for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)]
    pad, shapes, marks = DataCollatorWithPadding(tokenizer), [], []

    def collate(features):  # pads each batch to its longest review; records the shape the model sees
        batch = pad(features)
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained("distilbert-base-uncased", num_labels=2)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(tmp, per_device_train_batch_size=spec["batch_size"], num_train_epochs=1,
                                 learning_rate=1e-4, group_by_length=True, save_strategy="no", report_to=[],
                                 use_cpu=True, seed=0, disable_tqdm=True, bf16=spec["precision"] == "bfloat16")
        Trainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[StepClock()]).train()
    lengths = [len(ids) for ids in tokenizer(list(reviews[dataset.TEXT]))["input_ids"]]
    return epoch_summary(marks, shapes, lengths, spec["maxlen"], threads=torch.get_num_threads())


def measure_evaluation(spec):
    """--padding: the test-split evaluation, learning.predict_proba against predictor.predict, in turn, rounds times."""
    import ktrain
    import numpy as np

    from imdb_distilbert import compat  # noqa: F401
    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import learning

    texts = list(dataset.read_split(spec["eval_data"])[dataset.TEXT])
    small = dataset.read_split(spec["data"])[:16]
    learning.set_seed(0)
    train, val, preproc = learning.preprocess(small, small, spec["maxlen"], padding="fixed")
    learner = learning.build_learner(train, val, preproc, 16, "float32")  # evaluation computes in float32
    predictor = ktrain.get_predictor(learner.model, preproc)
    ours = lambda: learning.predict_proba(learner.model, preproc, texts)  # noqa: E731
    theirs = lambda: predictor.predict(texts, return_proba=True)  # noqa: E731
    predictor.predict(texts[:8]), learning.predict_proba(learner.model, preproc, texts[:8])  # warm-up: tracing
    seconds, cpu, difference = {"predictor": [], "grouped": []}, {"predictor": [], "grouped": []}, 0.0
    for _ in range(spec["rounds"]):
        for name, run in (("predictor", theirs), ("grouped", ours)):
            started, used = time.perf_counter(), sum(os.times()[:2])
            proba = run()
            seconds[name].append(time.perf_counter() - started)
            cpu[name].append(sum(os.times()[:2]) - used)  # user + system CPU seconds of this process
            if name == "predictor":
                reference = proba
        difference = max(difference, float(np.abs(proba - reference).max()))
    padded = preproc.preprocess_test(texts, verbose=0)  # as the predictor pads: to the longest review, at most maxlen
    data = learning.LengthGroupedDataset(padded, spec["maxlen"])
    data.batch_size = 32  # the predictor's batch size
    return {"seconds": seconds, "cpu_seconds": cpu, "largest_difference": difference, "reviews": len(texts),
            "tokens": {"predictor": padded.x.shape[0] * padded.x.shape[2],
                       "grouped": data.tokens(data.evaluation_batches())},
            "real_tokens": int(data.lengths.sum())}


def summarize(marks, spec, params, **extra):
    """Per-step figures over the timed steps, from (wall time, rusage) marks taken at the end of each step."""
    from imdb_distilbert import compat

    (t0, r0), (t1, r1) = marks[spec["warmup"] - 1], marks[-1]
    steps = len(marks) - spec["warmup"]
    return {
        "params": params,
        "steps": steps,
        "s_per_step": (t1 - t0) / steps,
        "reviews_per_s": steps * spec["batch_size"] / (t1 - t0),
        "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
        "cpu_s_per_step": (r1.ru_stime - r0.ru_stime + r1.ru_utime - r0.ru_utime) / steps,
        "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "peak_rss_gb": r1.ru_maxrss / 2**20,  # Linux reports KiB
        "malloc": compat.malloc_in_use(),
        **extra,
    }


def measure_pytorch(spec):
    """The same model, data and step count under the Hugging Face Trainer in PyTorch, for comparison."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from imdb_distilbert.data import dataset

    reviews = dataset.read_split(spec["data"])[:spec["batch_size"] * (spec["warmup"] + spec["steps"])]
    tokenizer = AutoTokenizer.from_pretrained("distilbert-base-uncased")
    encoded = tokenizer(list(reviews[dataset.TEXT]), truncation=True, padding="max_length", max_length=spec["maxlen"])
    labels = (reviews[dataset.LABEL] == "pos").astype(int).tolist()
    train = [{"input_ids": ids, "attention_mask": mask, "labels": y}
             for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained("distilbert-base-uncased", num_labels=2)
    marks = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(tmp, per_device_train_batch_size=spec["batch_size"], num_train_epochs=1,
                                 learning_rate=1e-4, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                                 disable_tqdm=True, bf16=os.environ.get("BENCH_PRECISION") == "bfloat16")
        Trainer(model=model, args=args, train_dataset=train, callbacks=[StepClock()]).train()
    return summarize(marks, spec, sum(p.numel() for p in model.parameters()),
                     threads={"torch": torch.get_num_threads()}, jit_compile=False)


# --- in the parent: set up, run each configuration, report ---------------------------------------


def install_models(cache, names):
    """Random-weight models in the Hugging Face cache layout, one HF_HOME each (made once, then reused)."""
    homes = {}
    for name in names:
        home = cache / name
        if not list(home.glob("hub/models--*/snapshots/*/model.safetensors")):
            print(f"building the random {name} model in {home} ...", flush=True)
            code = ("import sys, tiny_distilbert; "
                    f"tiny_distilbert.install(sys.argv[1], **{MODELS[name]!r})")
            subprocess.run([sys.executable, "-c", code, str(home)], check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, stdout=subprocess.DEVNULL)
        homes[name] = home
    return homes


def benchmark_data(path, n, folder, name="reviews.csv"):
    """The first-sampled `n` real reviews (both classes, shuffled), as a CSV the children read quickly."""
    import pandas as pd

    from imdb_distilbert.data import dataset

    reviews = dataset.read_split(path)
    if len(reviews) < n:  # a small file (data/sample): use its reviews more than once; the cost is the same
        reviews = pd.concat([reviews] * -(-n // len(reviews)), ignore_index=True)
    reviews = dataset.sample(reviews, n, seed=0)
    out = folder / name
    reviews.to_csv(out, index=False)
    return out


def child_env(config, home):
    """The environment of one configuration's run, or None when it cannot run here."""
    from imdb_distilbert import compat

    if config.startswith("pytorch") and importlib.util.find_spec("torch") is None:
        return None
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key, value in CONFIGS[config].items():
        if value == "tcmalloc":
            library = compat.fast_malloc_library()
            if library is None:
                return None
            value = library
            env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_one(spec, env, lock=None):
    with tempfile.NamedTemporaryFile(suffix=".json") as out, open(lock or os.devnull, "a") as held:
        if lock:
            fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        load = os.getloadavg()[0]
        spec = {**spec, "out": out.name}
        started = time.time()
        result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-2000:] + result.stderr[-3000:], file=sys.stderr)
            return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
        return {**json.loads(Path(out.name).read_text()), "run_s": time.time() - started, "load_before": load}


def machine():
    from importlib import metadata

    def cpu_model():
        try:
            return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                        if line.startswith("model name"))
        except (OSError, StopIteration):
            return platform.processor()

    names = ["tensorflow", "tf_keras", "ktrain", "transformers", "numpy", "torch", "accelerate"]
    versions = {name: metadata.version(name) for name in names if importlib.util.find_spec(name)}
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": os.getloadavg(), **versions}


def table(rows, baseline="glibc"):
    head = ("| model | maxlen | config | s/step | reviews/s | speed-up | system s/step | CPU s/step "
            "| minor faults/step | peak memory |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    base = {(r["model"], r["maxlen"]): r["s_per_step"] for r in rows if r["config"] == baseline and "s_per_step" in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['maxlen']} | {r['config']} | failed: {r['error']} |||||||")
            continue
        ref = base.get((r["model"], r["maxlen"]))
        speedup = f"{ref / r['s_per_step']:.2f}x" if ref else "-"
        lines.append(f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['maxlen']} | {r['config']} "
                     f"| {r['s_per_step']:.2f} "
                     f"| {r['reviews_per_s']:.1f} | {speedup} | {r['sys_s_per_step']:.2f} | {r['cpu_s_per_step']:.2f} "
                     f"| {r['minor_faults_per_step']:,.0f} | {r['peak_rss_gb']:.1f} GB |")
    return "\n".join(lines)


def main():
    args = parse_args()
    if args.child:
        spec = json.loads(args.child)
        kind = spec.get("arm") or spec["config"]
        measure_one = {"fixed": measure_epoch, "grouped": measure_epoch, "pytorch": measure_pytorch_epoch,
                       "evaluation": measure_evaluation}.get(kind) if "arm" in spec else None
        measure_one = measure_one or (measure_pytorch if kind.startswith("pytorch") else measure)
        Path(spec["out"]).write_text(json.dumps(measure_one(spec)))
        return
    if args.padding:
        return padding_main(args)
    models, configs = args.models.split(","), args.configs.split(",")
    maxlens = [int(m) for m in args.maxlens.split(",")]
    unknown = [m for m in models if m not in MODELS] + [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"error: unknown model or configuration {', '.join(unknown)}; see --help.")
    data = args.data or (REAL_DATA if REAL_DATA.exists() else ROOT / "data" / "sample" / "train.xlsx")
    args.cache.mkdir(parents=True, exist_ok=True)
    homes = install_models(args.cache, models)
    n_reviews = args.batch_size * (args.warmup + args.steps + 1)
    info = {**machine(), "data": str(data), "batch_size": args.batch_size, "warmup_steps": args.warmup,
            "timed_steps": args.steps}
    print(json.dumps(info, indent=1), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = benchmark_data(data, n_reviews, Path(tmp))
        for model in models:
            for maxlen in maxlens:
                for config in configs:
                    env = child_env(config, homes[model])
                    if env is None:
                        print(f"skipping {config}: it needs tcmalloc (apt-get install libtcmalloc-minimal4) "
                              "or, for pytorch, pip install -r benchmarks/requirements-pytorch.txt")
                        continue
                    spec = dict(config=config, data=str(csv), maxlen=maxlen, batch_size=args.batch_size,
                                steps=args.steps, warmup=args.warmup)
                    print(f"{model} maxlen {maxlen} {config} ...", end=" ", flush=True)
                    row = {"model": model, "maxlen": maxlen, "config": config, **run_one(spec, env, args.lock)}
                    print(f"{row['s_per_step']:.2f} s/step" if "s_per_step" in row else row["error"], flush=True)
                    rows.append(row)
    info["load_average_after"] = os.getloadavg()
    print()
    print(table(rows))
    print(f"\n{info['cpus']} x {info['cpu']}; Python {info['python']}, TensorFlow {info['tensorflow']}, "
          f"ktrain {info['ktrain']}, transformers {info['transformers']}; batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; load average before {info['load_average'][0]:.2f}, "
          f"after {info['load_average_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": rows}, indent=1) + "\n")


def install_vocab_model(cache, vocab, reviews):
    """The full-size random model with the word pieces of `vocab` (a vocab.txt), or without it the 30,000 commonest
    words of `reviews` (as benchmarks/inference.py), so reviews split into a realistic number of tokens."""
    import hashlib

    words = [w for w in vocab.read_text().split("\n") if w and not w.startswith("[")] if vocab else None
    if words is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from inference import common_words

        words = common_words(reviews)
    home = cache / ("full-" + hashlib.sha1("\n".join(words).encode()).hexdigest()[:10])
    if not list(home.glob("hub/models--*/snapshots/*/model.safetensors")):
        print(f"building the random full-size model with a {len(words)}-word vocabulary in {home} ...", flush=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / "words.json").write_text(json.dumps(words))
        code = ("import json, sys, tiny_distilbert; "
                f"tiny_distilbert.install(sys.argv[1], extra_words=json.load(open(sys.argv[2])), **{MODELS['full']!r})")
        subprocess.run([sys.executable, "-c", code, str(home), str(home / "words.json")], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, stdout=subprocess.DEVNULL)
    return home


def padding_main(args):
    """--padding: the arms in turn, --rounds times, then the evaluation; a table of epochs and one of evaluation."""
    from imdb_distilbert.data import dataset

    arms = args.arms.split(",")
    if set(arms) - {"fixed", "grouped", "pytorch"}:
        sys.exit(f"error: unknown arm in --arms {args.arms}; the arms are fixed, grouped, pytorch.")
    data = args.data or (REAL_DATA if REAL_DATA.exists() else ROOT / "data" / "sample" / "train.xlsx")
    shared_test = ROOT.parent / "shared" / "data" / "imdb" / "test.xlsx"
    eval_data = args.eval_data or (shared_test if shared_test.exists() else ROOT / "data" / "sample" / "test.xlsx")
    maxlen = int(args.maxlens.split(",")[0])
    args.cache.mkdir(parents=True, exist_ok=True)
    info = {**machine(), "data": str(data), "eval_data": str(eval_data), "reviews": args.reviews,
            "eval_reviews": args.eval_reviews, "batch_size": args.batch_size, "maxlen": maxlen,
            "precision": args.precision, "vocab": str(args.vocab) if args.vocab else "common words"}
    print(json.dumps(info, indent=1), flush=True)
    rows, evaluation = [], None
    with tempfile.TemporaryDirectory() as tmp:
        csv = benchmark_data(data, args.reviews, Path(tmp), "train.csv")
        eval_csv = benchmark_data(eval_data, args.eval_reviews, Path(tmp), "test.csv")
        home = install_vocab_model(args.cache, args.vocab, list(dataset.read_split(csv)[dataset.TEXT]))
        spec = dict(data=str(csv), eval_data=str(eval_csv), maxlen=maxlen, batch_size=args.batch_size,
                    precision=args.precision, rounds=args.rounds)
        for round_ in range(1, args.rounds + 1):
            for arm in arms:
                env = child_env("pytorch" if arm == "pytorch" else "tcmalloc", home) or child_env("glibc", home)
                if arm == "pytorch" and importlib.util.find_spec("torch") is None:
                    print("skipping pytorch: pip install -r benchmarks/requirements-pytorch.txt")
                    continue
                print(f"round {round_}: {arm} ...", end=" ", flush=True)
                row = {"arm": arm, "round": round_, **run_one({**spec, "arm": arm}, env, args.lock)}
                print(f"{row['epoch_s']:.0f} s" if "epoch_s" in row else row["error"], flush=True)
                rows.append(row)
        print("evaluation ...", end=" ", flush=True)
        evaluation = run_one({**spec, "arm": "evaluation"}, child_env("tcmalloc", home) or child_env("glibc", home),
                             args.lock)
        print("done" if "seconds" in evaluation else evaluation["error"], flush=True)
    info["load_average_after"] = os.getloadavg()
    print()
    print(padding_tables(rows, evaluation, info))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": rows, "evaluation": evaluation}, indent=1) + "\n")


def padding_tables(rows, evaluation, info):
    """Markdown: each arm's epochs (seconds per round, tokens, shapes, traces), the ratios, and the evaluation."""
    ok = [r for r in rows if "epoch_s" in r]
    total = {arm: sum(r["epoch_s"] for r in ok if r["arm"] == arm) for arm in dict.fromkeys(r["arm"] for r in ok)}
    epoch = {(r["arm"], r["round"]): r["epoch_s"] for r in ok}

    def ratio_of(a, b):
        """a's time over b's, and round by round, over the rounds both finished (a failed run is left out of both)."""
        both = sorted({n for arm, n in epoch if arm == a} & {n for arm, n in epoch if arm == b})
        per_round = [epoch[a, n] / epoch[b, n] for n in both]
        return (sum(epoch[a, n] for n in both) / sum(epoch[b, n] for n in both) if both else None), per_round
    fixed_tokens = info["reviews"] * info["maxlen"]
    lines = ["| arm | epoch seconds, round by round | reviews/s | time against fixed "
             "| tokens per epoch (share of fixed) "
             "| distinct batch shapes | widths | train-step traces |", "|---|---|---|---|---|---|---|---|"]
    for arm, seconds in total.items():
        mine = [r for r in ok if r["arm"] == arm]
        against_fixed = ratio_of(arm, "fixed")[0] if "fixed" in total else None
        ratio = f"{against_fixed:.2f}x" if against_fixed else "-"
        widths, rounds = mine[0]["widths"], " / ".join(f"{r['epoch_s']:.0f}" for r in mine)
        lines.append(f"| {arm} | {rounds} "
                     f"| {(mine[0]['steps'] - 1) * info['batch_size'] * len(mine) / seconds:.2f} | {ratio} "
                     f"| {mine[0]['tokens']:,} ({mine[0]['tokens'] / fixed_tokens:.3f}) | {mine[0]['shapes']} "
                     f"| {widths[0]}-{widths[-1]} ({len(widths)}) | {mine[0].get('traces', 'n/a (eager)')} |")
    for a, b in (("fixed", "grouped"), ("pytorch", "grouped")):
        if a in total and b in total:
            ratio, per_round = ratio_of(a, b)
            if ratio is None:
                continue
            lines.append(f"\n{b} is {ratio:.2f}x as fast as {a} "
                         f"(round by round: {', '.join(f'{x:.2f}x' for x in per_round)})")
    if ok:
        lines.append(f"\nreal tokens: {ok[0]['real_tokens']:,} ({ok[0]['real_tokens'] / fixed_tokens:.3f} of fixed); "
                     f"mean {ok[0]['mean_tokens']:.0f} tokens per review before the cut at {info['maxlen']}")
    if evaluation and "seconds" in evaluation:
        s, t = evaluation["seconds"], evaluation["tokens"]
        n = evaluation["reviews"]
        cpu = evaluation.get("cpu_seconds", {})
        lines += ["", "| test-split evaluation | seconds, round by round | reviews/s | speed-up "
                  "| CPU seconds, round by round "
                  "| tokens (share of predictor's) |", "|---|---|---|---|---|---|"]
        for name in ("predictor", "grouped"):
            lines.append(f"| {name} | {' / '.join(f'{x:.0f}' for x in s[name])} "
                         f"| {n * len(s[name]) / sum(s[name]):.2f} "
                         f"| {sum(s['predictor']) / sum(s[name]):.2f}x "
                         f"| {' / '.join(f'{x:.0f}' for x in cpu.get(name, [])) or '-'} "
                         f"| {t[name]:,} ({t[name] / t['predictor']:.3f}) |")
        lines.append("\nlargest probability difference, grouped against predictor.predict: "
                     f"{evaluation['largest_difference']:.1e}")
    lines.append(f"\n{info['cpus']} x {info['cpu']}; Python {info['python']}, TensorFlow {info['tensorflow']}, "
                 f"ktrain {info['ktrain']}, "
                 f"transformers {info['transformers']}, torch {info.get('torch', '-')}; {info['precision']}, batch "
                 f"{info['batch_size']}, maxlen {info['maxlen']}, {info['reviews']} training and "
                 f"{info['eval_reviews']} test reviews; "
                 f"load average before {info['load_average'][0]:.2f}, after {info['load_average_after'][0]:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
