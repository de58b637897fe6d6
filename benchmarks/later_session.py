"""How long a later Colab session takes to classify its first reviews, each way, in Colab-like environments.

    python benchmarks/later_session.py                      # full-size DistilBERT (random weights), maxlen 400
    python benchmarks/later_session.py --model models/distilbert-imdb --runs 3

The two ways of the notebook's *Classify new reviews* section, each in a fresh environment with Colab's
package versions (tests/colab_env.py), each timed from a new Python process to the first answers:

1. **The ktrain predictor.** The set-up cell's install (colab/__init__.py's setup(): pip install -r
   requirements-colab.txt, with no pip cache, as on a new runtime: it downloads from PyPI) in a Colab-like
   environment (Python 3.13, TensorFlow 2.20, transformers 5.15.0 before it); then what the notebook's cells
   do: import the package and ktrain, ktrain.load_predictor(), predict three reviews.
2. **Nothing to install.** Colab's own transformers 5.15.0 with a CPU torch (Python 3.11; every module compiled
   as on Colab), running the no-install cell's code: import pipeline, load the Hugging Face folder, classify.

Not included (not measurable here): fetching the project for the set-up cell (an upload or git clone), mounting
Drive and reading the model from it (both ways do that), and Colab's own CPU. The model is read from local disk.
Without --model, the predictor is built with DistilBERT's full shape and random weights (right for time and
memory) and exported with src/export_hf.py (needs requirements-export.txt).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

REVIEWS = ["this movie was really bad. acting was also bad. I will not watch again",
           "the movie was really great. I will see it again", "another great movie. must watch to everyone"]

KTRAIN = """
import time
started = time.perf_counter()
import json, os, sys
sys.path.insert(0, {src!r})
os.environ["HF_HUB_OFFLINE"] = "1"  # no Hub here; on Colab the predictor folder is enough too
from imdb_distilbert import compat
import ktrain
from imdb_distilbert.data.truncation import like_saved_run
imported = time.perf_counter()
predictor = ktrain.load_predictor({model!r})
loaded = time.perf_counter()
proba = predictor.predict(like_saved_run({reviews!r}, {model!r}, predictor.preproc.get_tokenizer()), return_proba=True)
done = time.perf_counter()
print(json.dumps({{"import": imported - started, "load": loaded - imported, "classify": done - loaded}}))
"""

NO_INSTALL = """
import time
started = time.perf_counter()
import json
from transformers import pipeline
imported = time.perf_counter()
classify = pipeline("text-classification", model={folder!r}, truncation=True, top_k=None)
loaded = time.perf_counter()
classify({reviews!r})
done = time.perf_counter()
print(json.dumps({{"import": imported - started, "load": loaded - imported, "classify": done - loaded}}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="a saved predictor (default: build a full-size random one)")
    p.add_argument("--maxlen", type=int, default=400,
                   help="maxlen of the predictor built without --model (default: 400)")
    p.add_argument("--runs", type=int, default=3,
                   help="new processes timed for each way's classifying part (default: 3)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return p.parse_args(argv)


def timed(command, **kwargs):
    """(seconds, CompletedProcess) of running `command` to its end."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))[:200]} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return time.perf_counter() - started, result


def classify_runs(python, code, runs, env=None):
    """Wall time of `runs` new processes running `code`, with the parts each one measured inside."""
    found = []
    for _ in range(runs):
        seconds, result = timed([python, "-c", code], env={**os.environ, **(env or {})})
        found.append({"total": seconds, **json.loads(result.stdout.strip().splitlines()[-1])})
    return found


def python_version(python):
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                          text=True, check=True).stdout.strip()


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main(argv=None):
    args = parse_args(argv)
    import colab_env
    from inference import prepare_model

    from imdb_distilbert.inference import predict

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-later-session-"))
    new_runtime = {"HF_HOME": str(work / "empty-hf-cache")}  # a new runtime's Hugging Face cache is empty
    model = prepare_model(args.model, args.maxlen, predict.read_texts(ROOT / "data" / "sample" / "test.xlsx"), work,
                          export=False)
    folder = work / "distilbert-imdb-hf"
    print(f"exporting {model} to a Hugging Face folder...", file=sys.stderr)
    subprocess.run([sys.executable, str(ROOT / "src" / "export_hf.py"), "--model", str(model), "--output", str(folder),
                    "--n", "8"], check=True, stdout=sys.stderr)

    print("building the Colab-like environment (Colab's versions, before the set-up cell)...", file=sys.stderr)
    python_a, version_a, before = colab_env.build_colab_like(work / "colab-like")
    print("the set-up cell's install, with no pip cache...", file=sys.stderr)
    setup = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); from imdb_distilbert import colab; colab.setup()"
    install, result = timed([python_a, "-c", setup], cwd=ROOT, env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
    print(result.stdout, file=sys.stderr)
    print("the ktrain predictor's cells...", file=sys.stderr)
    ktrain_runs = classify_runs(python_a, KTRAIN.format(src=str(ROOT / "src"), model=str(model), reviews=REVIEWS),
                                args.runs, {**new_runtime, "TF_CPP_MIN_LOG_LEVEL": "2"})

    print("building Colab's own set (transformers 5.15.0, CPU torch)...", file=sys.stderr)
    wheel = colab_env.cpu_torch_wheel(work / "wheels")
    if wheel is None:
        sys.exit("no CPU build of requirements-export.txt's torch on this machine")
    python_b, own = colab_env.build_colab_own(work / "colab-own", wheel, compile_bytecode=True)
    print("the no-install cell...", file=sys.stderr)
    own_runs = classify_runs(python_b, NO_INSTALL.format(folder=str(folder), reviews=REVIEWS), args.runs,
                             {**new_runtime, "HF_HUB_OFFLINE": "1"})

    after = colab_env.installed(python_a)
    a_total = install + median(ktrain_runs, "total")
    rows = [
        ("the ktrain predictor: set-up cell's install (no pip cache)", install, None, None, None),
        ("the ktrain predictor: its cells, in a new process", median(ktrain_runs, "total"),
         median(ktrain_runs, "import"), median(ktrain_runs, "load"), median(ktrain_runs, "classify")),
        ("**the ktrain predictor, in all**", a_total, None, None, None),
        ("**nothing to install: the no-install cell**, in a new process", median(own_runs, "total"),
         median(own_runs, "import"), median(own_runs, "load"), median(own_runs, "classify")),
    ]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPUs (load average "
             f"{load_before:.2f} before), {args.runs} runs of each process (median); model: "
             f"{'full-size DistilBERT, random weights' if args.model is None else args.model}, "
             f"maxlen {args.maxlen if args.model is None else 'as trained'}.",
             "", "| step | seconds | of which: imports | load the model | classify 3 reviews |",
             "| --- | --- | --- | --- | --- |"]
    for name, total, imported, loaded, classified in rows:
        parts = " | ".join("-" if v is None else f"{v:.1f}" for v in (imported, loaded, classified))
        lines.append(f"| {name} | {total:.1f} | {parts} |")
    lines += ["", f"Colab-like environment: Python {'.'.join(map(str, version_a))}, tensorflow {after['tensorflow']}, "
              f"transformers {before['transformers']} -> {after['transformers']} (set-up), "
              f"ktrain {after.get('ktrain')}.",
              f"Colab's own set: Python {python_version(python_b)}, transformers {own['transformers']}, tokenizers "
              f"{own['tokenizers']}, huggingface_hub {own['huggingface-hub']}, torch {own['torch']}."]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"install_seconds": install, "ktrain_runs": ktrain_runs,
                                         "no_install_runs": own_runs, "load_before": load_before}, indent=2) + "\n")


if __name__ == "__main__":
    main()
