"""Snapshot what the command-line scripts write, and compare two snapshots: proof that a refactor changed no behaviour.

    python tests/snapshot_outputs.py snapshot /tmp/before /tmp/snap-before   # a checkout before the refactor
    python tests/snapshot_outputs.py snapshot /work/main /tmp/snap-after     # and after it
    python tests/snapshot_outputs.py compare /tmp/snap-before /tmp/snap-after

`snapshot ROOT OUT` runs the commands a user types (`python ROOT/src/<script>.py ...`, cwd ROOT, with the Python
running this file), set up as tests/conftest.py does: a fresh offline HF_HOME holding the tests' tiny random
DistilBERT (ROOT/tests/tiny_distilbert.py, seed 7), synthetic reviews (ROOT/tests/synthetic.py), IMDB_FAST_MALLOC=0.
It trains one tiny model (1 epoch), runs export.py and export_hf.py on it, predict.py with each backend (ktrain, onnx,
onnx-int8) on an .xlsx (to CSV), a .csv (to JSON lines), texts (to the terminal) and standard input (--json),
score_spark.py (onnx, 60 rows, local[2]) and serve.py on a free port (GET /, /health, POST /predict, /explain, two
errors, then SIGTERM), and writes every output and stdout into OUT. In text files the temporary work folder and ROOT
are written <WORK> and <ROOT>, so the snapshots of two checkouts compare. OUT/_logs holds stderr and timings, which
are not compared. It takes 3-5 minutes on 2 busy cores.

`compare A B` compares two snapshots file by file, prints a table and exits 1 on any difference. Files must have the
same bytes, or else: JSON and JSON lines the same once loaded, floats to 1e-6, IGNORED_FIELDS left out; CSV the same
cell by cell, floats to 1e-6; ONNX, safetensors and h5 weights the same structure and numbers to 1e-6; text the same
once MASKS (timings, a port) are applied.
"""

import argparse
import csv
import fnmatch
import http.client
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-6
TEXT_SUFFIXES = {".json", ".jsonl", ".txt", ".csv", ".md", ".html"}  # <WORK> and <ROOT> are put in these
LOGS = "_logs"  # stderr (progress bars, warnings with clock times) and timings: not compared

# JSON fields that differ between two runs of the same code: (file name, top-level key): why.
IGNORED_FIELDS = {
    ("metrics.json", "seconds"): "train.py's wall-clock time of each step",
    ("metrics.json", "peak_memory_mb"): "train.py's peak resident memory, which moves with the allocator and load",
}
# Lines dropped (replacement None) and parts of lines masked in text files, as they differ between two runs of the
# same code: (file names, regex, replacement, why).
MASKS = [
    ("*stdout.txt", r"^.*\| [\d.]+% \[\d+/\d+ [\d:]+<.*$", None, "train.py: ktrain's progress bar, timed redraws"),
    ("*stdout.txt", r"^\s*\d+/(\d+|Unknown) (\[|- ).*$", None, "train.py: Keras' progress bar, with timings and ETAs"),
    ("*stdout.txt", r"in \d+(\.\d+)? s\b", "in <S> s", "export.py, export_hf.py and serve.py say how long they took"),
    ("*stdout.txt", r"took [\d.]+ s: [\d.]+ s starting Spark, [\d.]+ s reading", "took <S>", "score_spark.py: timings"),
    ("*stdout.txt", r"http://127\.0\.0\.1:\d+/", "http://127.0.0.1:<PORT>/", "serve.py --port 0 takes a free port"),
    ("README.md", r"^\| training time \| [\d,]+ s \|$", "| training time | <S> s |",
     "export_hf.py's model card shows train.py's wall-clock time (metrics.json's seconds.total)"),
]
TEXTS = ["the movie was wonderful and the cast was superb", "a boring film with awful acting", "it"]


# ---------------------------------------------------------------------------------------------------- snapshot

def snapshot(root, out):
    root, out = Path(root).resolve(), Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; give a new folder")
    work = Path(tempfile.mkdtemp(prefix="snapshot-work-"))
    os.environ.update(HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    env = {**os.environ, "IMDB_FAST_MALLOC": "0", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("IMDB_DATA_URL", None)
    timings = {}

    def save(name, content):
        """Write `content` (text or bytes) to OUT/name, with the work folder and ROOT as placeholders in text."""
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes) and path.suffix in TEXT_SUFFIXES:
            content = content.decode("utf-8")
        if isinstance(content, str):
            content = content.replace(str(work), "<WORK>").replace(str(root), "<ROOT>").encode("utf-8")
        path.write_bytes(content)

    def copy_folder(folder, name, unless_as_in=None):
        """Every file of `folder` into OUT/name; with `unless_as_in`, only those not there with the same bytes,
        and the list of all its files in OUT/name.files.txt."""
        paths = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        for path in paths:
            same = unless_as_in and (unless_as_in / path).is_file() and (unless_as_in / path).read_bytes() == (
                folder / path).read_bytes()
            if not same:
                save(f"{name}/{path}", (folder / path).read_bytes())
        if unless_as_in:
            save(f"{name}.files.txt", "".join(f"{path}\n" for path in paths))

    def run(stdout_name, script, *args, input=None):
        """`python ROOT/src/<script>.py args` as a user types it; its stdout saved as OUT/stdout_name."""
        started = time.time()
        result = subprocess.run([sys.executable, str(root / "src" / f"{script}.py"), *map(str, args)], cwd=root,
                                env=env, input=input, capture_output=True, text=True, timeout=1800)
        timings[stdout_name] = round(time.time() - started, 1)
        save(f"{LOGS}/{Path(stdout_name.replace('stdout', 'stderr')).with_suffix('.txt')}", result.stderr)
        if result.returncode != 0:
            sys.exit(f"{script}.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        save(stdout_name, result.stdout)
        print(f"{timings[stdout_name]:6.1f} s  {script}.py -> {stdout_name}", flush=True)

    try:
        started = time.time()
        sys.path[:0] = [str(root / "tests")]
        import synthetic
        import tiny_distilbert

        tiny_distilbert.install(work / "hf", extra_words=synthetic.WORDS, seed=7)
        data = synthetic.write_splits(work / "data", 400, 200)
        timings["set-up"] = round(time.time() - started, 1)

        # train.py with conftest.py's TINY settings, but 1 epoch.
        predictor = work / "predictor"
        run("train/stdout.txt", "train", "--data-dir", data, "--output", predictor, "--maxlen", 32, "--batch-size", 8,
            "--lr", 2e-3, "--epochs", 1, "--seed", 7, "--precision", "float32")
        copy_folder(predictor, "train/predictor")

        # export.py on a copy, checked on 200 fresh synthetic reviews (as conftest.py's `exported`).
        exported = work / "exported"
        shutil.copytree(predictor, exported)
        (work / "parity.txt").write_text("\n".join(synthetic.reviews(200, seed=13)["Reviews"]) + "\n")
        run("export/stdout.txt", "export", "--model", exported, "--reviews", work / "parity.txt", "--n", 200)
        copy_folder(exported, "export/predictor", unless_as_in=predictor)  # the files export.py added or changed

        run("export_hf/stdout.txt", "export_hf", "--model", predictor, "--output", work / "hf-folder")
        copy_folder(work / "hf-folder", "export_hf/distilbert-imdb-hf")

        # predict.py: 50 synthetic reviews (more than one batch of 32) as .xlsx and .csv, texts, standard input.
        reviews = synthetic.reviews(50, seed=31)
        reviews.to_excel(work / "reviews.xlsx", index=False)
        reviews.to_csv(work / "reviews.csv", index=False)
        for backend in ("ktrain", "onnx", "onnx-int8"):
            model = ["--model", predictor if backend == "ktrain" else exported, "--backend", backend]
            for source, flags, suffix in (("xlsx", [], "csv"), ("csv", ["--json"], "jsonl")):
                target = work / f"{backend}-{source}.{suffix}"
                run(f"predict/{backend}-{source}.stdout.txt", "predict", *model, "--file", work / f"reviews.{source}",
                    *flags, "--out", target)
                save(f"predict/{backend}-{source}.{suffix}", target.read_bytes())
            run(f"predict/{backend}-terminal.stdout.txt", "predict", *model, *TEXTS[:2])
            run(f"predict/{backend}-stdin.stdout.jsonl", "predict", *model, "--json", "-",
                input="a wonderful film, superb acting\n\n  \nan awful boring mess\n")

        # score_spark.py: 60 synthetic reviews with an id, 3 of them without text, as Parquet.
        frame = synthetic.reviews(60, seed=41)
        frame.insert(0, "id", range(1000, 1060))
        frame.loc[[5, 17, 40], "Reviews"] = [None, "", "   \n "]
        frame.to_parquet(work / "spark-in.parquet", index=False)
        run("score_spark/stdout.txt", "score_spark", "--model", exported, "--backend", "onnx", "--input",
            work / "spark-in.parquet", "--output", work / "scored", "--master", "local[2]")
        save_spark_output(work / "scored", save)

        serve(root, work, exported, env, save, timings)
        timings["total"] = round(time.time() - started, 1)
        save(f"{LOGS}/timings.json", json.dumps(timings, indent=2) + "\n")
        print(f"{timings['total']:6.1f} s  snapshot of {root} in {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def save_spark_output(folder, save):
    """score_spark.py's Parquet folder as a CSV of its rows (in part order) and a JSON of its files and schema: the
    part files' names hold a random job id, and their bytes Spark's writer metadata."""
    import pandas as pd
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    save("score_spark/scored.csv", pd.concat([t.to_pandas() for t in tables], ignore_index=True).to_csv(index=False))
    names = sorted(re.sub(r"-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "-<JOB>", p.name) for p in folder.iterdir())
    save("score_spark/output.json", json.dumps({"files": names, "schema": str(tables[0].schema.remove_metadata()),
                                                "rows per part": [t.num_rows for t in tables]}, indent=2) + "\n")


def serve(root, work, model, env, save, timings):
    """serve.py on the exported folder (its default backend) on a free loopback port: its answers, then SIGTERM."""
    started = time.time()
    with open(work / "serve.stderr.txt", "w") as log:
        command = [sys.executable, str(root / "src" / "serve.py"), "--model", str(model), "--port", "0"]
        if re.search(r"\n\s+--explain\s", subprocess.run([sys.executable, str(root / "src" / "serve.py"), "--help"],
                                                       capture_output=True, text=True).stdout):
            command.append("--explain")  # explanations on an onnx backend are asked for since issue 31
        process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if re.search(r"serving on http://", line):
                    break
            else:
                sys.exit("serve.py did not start:\n" + "".join(lines)[-3000:])
            host, port = re.search(r"serving on http://([\d.]+):(\d+)/", lines[-1]).groups()
            requests = [("get-page.html", "GET", "/", None), ("get-health.json", "GET", "/health", None),
                        ("post-predict.json", "POST", "/predict", {"texts": TEXTS}),
                        ("post-predict-one.json", "POST", "/predict", {"texts": TEXTS[:1]}),
                        ("post-predict-empty.json", "POST", "/predict", {"texts": []}),
                        ("post-explain.json", "POST", "/explain", {"texts": TEXTS[:1]}),
                        ("get-missing.json", "GET", "/missing", None),
                        ("get-health-after.json", "GET", "/health", None)]
            answers = []
            for name, method, path, body in requests:
                connection = http.client.HTTPConnection(host, int(port), timeout=300)
                connection.request(method, path, body=None if body is None else json.dumps(body),
                                   headers={} if body is None else {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                connection.close()
                if name.endswith(".json"):
                    data = json.dumps(json.loads(data), indent=2, ensure_ascii=False) + "\n"
                save(f"serve/{name}", data)
                answers.append({"request": f"{method} {path}", "status": response.status,
                                "content-type": response.getheader("content-type"), "body": name})
            save("serve/responses.json", json.dumps(answers, indent=2) + "\n")
        finally:
            process.terminate()
            rest, _ = process.communicate(timeout=60)
    save(f"{LOGS}/serve/stderr.txt", (work / "serve.stderr.txt").read_text())
    save("serve/stdout.txt", "".join(lines) + rest + f"exit status {process.returncode}\n")
    timings["serve/stdout.txt"] = round(time.time() - started, 1)
    print(f"{timings['serve/stdout.txt']:6.1f} s  serve.py -> serve/", flush=True)


# ---------------------------------------------------------------------------------------------------- compare

def compare(a, b):
    a, b = Path(a), Path(b)
    for folder in (a, b):
        if not (folder / LOGS / "timings.json").is_file():
            sys.exit(f"{folder} is not a complete snapshot (it has no {LOGS}/timings.json)")
    names = sorted({p.relative_to(folder).as_posix() for folder in (a, b) for p in folder.rglob("*") if p.is_file()})
    logs = [name for name in names if name.startswith(LOGS + "/")]
    rows = [(f"{LOGS}/*", "ignored", f"{len(logs)} files: stderr (progress bars, clock times) and timings")]
    for name in sorted(set(names) - set(logs)):
        if not (a / name).is_file() or not (b / name).is_file():
            rows.append((name, "DIFFERS", f"only in {a if (a / name).is_file() else b}"))
        else:
            how, problems = compare_file(a / name, b / name)
            rows.append((name, "DIFFERS" if problems else "same", "; ".join(problems[:3]) if problems else how))
    width = max(len(name) for name, _, _ in rows)
    for name, result, detail in rows:
        print(f"{name:<{width}}  {result:<7}  {detail}")
    counts = {result: sum(r == result for _, r, _ in rows) for result in ("same", "DIFFERS")}
    print(f"\n{len(rows) - 1} files compared: {counts['same']} same, {counts['DIFFERS']} differ "
          f"({len(logs)} in {LOGS}/ not compared)")
    return 1 if counts["DIFFERS"] else 0


def compare_file(path_a, path_b):
    """(how they were compared, the differences found) for two files of the same name."""
    if path_a.read_bytes() == path_b.read_bytes():
        return "same bytes", []
    suffix, name = path_a.suffix, path_a.name
    if suffix == ".json":
        return "JSON, floats to 1e-6", compare_values(load_json(path_a), load_json(path_b), name)
    if suffix == ".jsonl":
        a, b = ([json.loads(line) for line in p.read_text().splitlines()] for p in (path_a, path_b))
        return "JSON lines, floats to 1e-6", compare_values(a, b, name)
    if suffix == ".csv":
        a, b = ([[number(cell) for cell in row] for row in csv.reader(io.StringIO(p.read_text("utf-8-sig")))]
                for p in (path_a, path_b))
        return "CSV cells, floats to 1e-6", compare_values(a, b, name)
    if suffix in (".onnx", ".safetensors", ".h5"):
        return "weights to 1e-6", compare_values(load_weights(path_a), load_weights(path_b), name)
    if suffix in TEXT_SUFFIXES:
        a, b = (mask(name, p.read_text()).splitlines() for p in (path_a, path_b))
        if a == b:
            return "text, MASKS applied", []
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return "text", [f"line {first + 1}: {(a + [''])[first][:60]!r} vs {(b + [''])[first][:60]!r}"]
    return "bytes", ["bytes differ"]


def mask(name, text):
    """The `text` of the file `name` with MASKS applied."""
    for names, pattern, replacement, _ in MASKS:
        if fnmatch.fnmatch(name, names):
            text = re.sub(pattern + ("\n?" if replacement is None else ""), replacement or "", text, flags=re.M)
    return text


def load_json(path):
    value = json.loads(path.read_text())
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if (path.name, k) not in IGNORED_FIELDS}
    return value


def number(cell):
    """A CSV cell as a float when it is a number (so that 0.5 and 0.5000001 compare to 1e-6), else its text."""
    try:
        return float(cell)
    except ValueError:
        return cell


def load_weights(path):
    """A weights file as nested dicts of numpy arrays and the rest it holds (graph, metadata, attributes)."""
    import numpy as np

    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        del model.graph.initializer[:]
        return {"graph without weights": model.SerializeToString(), "weights": weights}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return {"metadata": f.metadata(), "tensors": {k: f.get_tensor(k) for k in f.keys()}}
    import h5py

    found = {}

    def visit(name, item):
        found[name] = {"attrs": {k: np.asarray(v).tolist() for k, v in item.attrs.items()}}
        if isinstance(item, h5py.Dataset):
            found[name]["data"] = item[()]
    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return found


def compare_values(a, b, where, key=""):
    """The differences between two loaded values (dicts, lists, numpy arrays, numbers, strings), floats to 1e-6."""
    import numpy as np

    place = f"{where}{key}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{place}: keys {sorted(set(a) ^ set(b))[:5]} in only one"]
        return [d for k in a for d in compare_values(a[k], b[k], where, f"{key}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{place}: {len(a)} vs {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in compare_values(x, y, where, f"{key}[{i}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{place}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
        if a.dtype.kind not in "fc":
            return [] if np.array_equal(a, b) else [f"{place}: values differ"]
        worst = float(np.nanmax(np.abs(a - b), initial=0))
        same = worst <= TOLERANCE and np.array_equal(np.isnan(a), np.isnan(b))
        return [] if same else [f"{place}: differs by up to {worst:.2e}"]
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers and (isinstance(a, float) or isinstance(b, float)):
        if (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE:
            return []
    return [] if a == b else [f"{place}: {str(a)[:40]!r} vs {str(b)[:40]!r}"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    take = commands.add_parser("snapshot", help="run the CLIs of the checkout ROOT and write their outputs to OUT")
    take.add_argument("root", type=Path, metavar="ROOT")
    take.add_argument("out", type=Path, metavar="OUT")
    check = commands.add_parser("compare", help="compare two snapshots; exit status 1 on any difference")
    check.add_argument("a", type=Path, metavar="A")
    check.add_argument("b", type=Path, metavar="B")
    args = p.parse_args(argv)
    return snapshot(args.root, args.out) if args.command == "snapshot" else compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
