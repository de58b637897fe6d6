"""Time DistilBERT training steps on CPU through the project's own ktrain path, per configuration.

    python benchmarks/train_speed.py                 # the default set, about 12 min on 2 cores
    python benchmarks/train_speed.py --lock /tmp/cpu.lock --data ../shared/data/imdb/train.xlsx
    python benchmarks/train_speed.py --models small --maxlens 128 --configs glibc,tcmalloc --steps 4

Each (model, maxlen, configuration) runs in its own Python process, so the allocator and environment
can differ and `getrusage` gives that run's system time, page faults and peak memory. A run is the
tutorial's recipe from src/training.py (texts_from_df, text_classifier, get_learner, fit_onecycle) on
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
    p.add_argument("--maxlens", default="128,400", help="comma-separated token lengths (default: 128,400)")
    p.add_argument("--configs", default="glibc,tcmalloc,bf16,pytorch,pytorch-bf16", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    p.add_argument("--batch-size", type=int, default=16, help="reviews per step (default: 16)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per run (default: 4)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--data", type=Path, help=f"a split with Reviews and Sentiment columns "
                   f"(default: {REAL_DATA} if present, else data/sample/train.xlsx)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where the random models are kept (default: {DEFAULT_CACHE})")
    p.add_argument("--lock", type=Path, help="hold an flock(1)-style lock on this file during each measurement, "
                   "so that other heavy work on a shared machine waits (e.g. /tmp/cpu.lock)")
    p.add_argument("--json", type=Path, help="also write the configuration and all results here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one measurement (JSON spec)
    return p.parse_args()


# --- in the child process: one measurement -----------------------------------------------------


def measure(spec):
    import compat  # noqa: F401  (first: before TensorFlow)
    import dataset
    import training
    import tensorflow as tf

    reviews = dataset.read_split(spec["data"])
    n_train = spec["batch_size"] * (spec["warmup"] + spec["steps"])
    train_df, val_df = reviews[:n_train], reviews[n_train:n_train + spec["batch_size"]]
    training.set_seed(0)
    train, val, preproc = training.preprocess(train_df, val_df, spec["maxlen"])
    precision = os.environ.get("BENCH_PRECISION", "float32")
    learner = training.build_learner(train, val, preproc, spec["batch_size"], precision)
    if os.environ.get("BENCH_XLA"):
        learner.model.jit_compile = True  # XLA-compile the training step

    marks = []  # (wall, rusage) at the end of each training step

    class StepClock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))

    training.fit(learner, 1e-4, 1, callbacks=[StepClock()])
    threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}  # 0: TensorFlow's default
    return summarize(marks, spec, learner.model.count_params(), threads=threads,
                     jit_compile=bool(learner.model.jit_compile))


def summarize(marks, spec, params, **extra):
    """Per-step figures over the timed steps, from (wall time, rusage) marks taken at the end of each step."""
    import compat

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
    import dataset
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback,
                              TrainingArguments)

    reviews = dataset.read_split(spec["data"])[:spec["batch_size"] * (spec["warmup"] + spec["steps"])]
    tokenizer = AutoTokenizer.from_pretrained("distilbert-base-uncased")
    encoded = tokenizer(list(reviews[dataset.TEXT]), truncation=True, padding="max_length", max_length=spec["maxlen"])
    labels = (reviews[dataset.LABEL] == "pos").astype(int).tolist()
    train = [{"input_ids": ids, "attention_mask": mask, "labels": y}
             for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], labels)]
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


def benchmark_data(path, n, folder):
    """The first-sampled `n` real reviews (both classes, shuffled), as a CSV the children read quickly."""
    import dataset
    import pandas as pd

    reviews = dataset.read_split(path)
    if len(reviews) < n:  # a small file (data/sample): use its reviews more than once; the cost is the same
        reviews = pd.concat([reviews] * -(-n // len(reviews)), ignore_index=True)
    reviews = dataset.sample(reviews, n, seed=0)
    out = folder / "reviews.csv"
    reviews.to_csv(out, index=False)
    return out


def child_env(config, home):
    """The environment of one configuration's run, or None when it cannot run here."""
    import compat

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
            return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
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
        lines.append(f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['maxlen']} | {r['config']} | {r['s_per_step']:.2f} "
                     f"| {r['reviews_per_s']:.1f} | {speedup} | {r['sys_s_per_step']:.2f} | {r['cpu_s_per_step']:.2f} "
                     f"| {r['minor_faults_per_step']:,.0f} | {r['peak_rss_gb']:.1f} GB |")
    return "\n".join(lines)


def main():
    args = parse_args()
    if args.child:
        spec = json.loads(args.child)
        Path(spec["out"]).write_text(json.dumps((measure_pytorch if spec["config"].startswith("pytorch") else measure)(spec)))
        return
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
                    spec = dict(config=config, data=str(csv), maxlen=maxlen, batch_size=args.batch_size, steps=args.steps,
                                warmup=args.warmup)
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


if __name__ == "__main__":
    main()
