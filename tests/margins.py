"""Run the tests over several seeds and kernels, and report the worst value each model-dependent check saw.

A tiny model trained with the same seed on another CPU ends up elsewhere (other float rounding in
TensorFlow's kernels), so a test that asserts an accuracy, a share or a label must hold for any
training, not for one. The tests check such values with conftest.at_least / at_most, which record
them when IMDB_MARGINS names a file; this script runs the suite (or the tests you name) once per
seed (IMDB_TEST_SEED: the tiny model's weights, training and shuffling) with TensorFlow's default
oneDNN kernels, once per --other-kernels seed with TF_ENABLE_ONEDNN_OPTS=0 (Eigen's kernels), and
once per --avx2 seed with oneDNN held to AVX2 (as on a CPU without AVX-512, such as AMD EPYC before
Zen 4), then prints each check's threshold and its worst value.

    .venv/bin/python tests/margins.py                  # seeds 1-5; 1-2 with Eigen's kernels; 3 with AVX2's
    .venv/bin/python tests/margins.py --seeds 3 --other-kernels "" --avx2 "" tests/test_train.py   # one quick run
    .venv/bin/python tests/margins.py --table-only --out margins    # the table of the runs already in margins/

By default it runs the test files that check what a trained model does (those that call at_least or
at_most): about 14 minutes per run on 2 cores, against 25 for the whole suite. The table (Markdown), \
every value (JSON) and each run's
output go to --out.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3,4,5", help="seeds to run with the default kernels (default: 1,2,3,4,5)")
    p.add_argument("--other-kernels", default="1,2", metavar="SEEDS",
                   help="seeds to run with TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's Eigen kernels "
                   "(default: 1,2; empty: none)")
    p.add_argument("--avx2", default="3", metavar="SEEDS",
                   help="seeds to run with oneDNN's AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2), "
                   "as on a CPU without AVX-512 (default: 3; empty: none)")
    p.add_argument("--out", type=Path, default=Path("margins"),
                   help="folder for margins.md and margins.json (default: margins/)")
    p.add_argument("--table-only", action="store_true",
                   help="run nothing: build the table from the runs already in --out (e.g. runs made in several goes)")
    p.add_argument("tests", nargs="*", help="pytest arguments (default: the test files that call at_least or at_most)")
    args = p.parse_args()
    if args.table_only:
        return report(args.out, *earlier_runs(args.out))
    runs = [(int(s), "oneDNN") for s in args.seeds.split(",") if s]
    runs += [(int(s), "Eigen (TF_ENABLE_ONEDNN_OPTS=0)") for s in args.other_kernels.split(",") if s]
    runs += [(int(s), "AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)") for s in args.avx2.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    values, outcomes = [], []
    for seed, kernels in runs:
        record = args.out / f"seed-{seed}-{kernels.split()[0]}.jsonl"
        record.unlink(missing_ok=True)
        env = {**os.environ, "IMDB_TEST_SEED": str(seed), "IMDB_MARGINS": str(record.resolve())}
        if kernels.startswith("Eigen"):
            env["TF_ENABLE_ONEDNN_OPTS"] = "0"
        tests = args.tests or checked_files()
        if kernels.startswith("AVX2"):
            env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
            tests = [*tests, "-k", f"not ({BFLOAT16_TESTS})"]
        started = time.time()
        print(f"seed {seed}, {kernels}: running the tests...", flush=True)
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=ROOT, env=env, capture_output=True, text=True)
        (args.out / f"seed-{seed}-{kernels.split()[0]}.log").write_text(result.stdout + result.stderr)
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        outcomes.append({"seed": seed, "kernels": kernels, "summary": summary, "failed": failed,
                         "minutes": round((time.time() - started) / 60, 1)})
        print(f"  {summary} ({outcomes[-1]['minutes']} min)" + "".join(f"\n  {line}" for line in failed), flush=True)
        if record.exists():
            values += [{**json.loads(line), "seed": seed, "kernels": kernels}
                       for line in record.read_text().splitlines()]
    return report(args.out, values, outcomes)


# Tests that ask for bfloat16 by name. On a CPU with bfloat16 instructions held to AVX2 by ONEDNN_MAX_CPU_ISA,
# TensorFlow still picks oneDNN's bfloat16 kernels (it asks the CPU) and oneDNN aborts the process; a real AVX2 CPU
# takes TensorFlow's own bfloat16 path. So AVX2 runs leave them out (--precision auto keeps float32 under the cap).
BFLOAT16_TESTS = "bfloat16 or grouped_evaluation_gives_the_predictors"


def checked_files():
    """The test files that assert what a trained model does (they call at_least or at_most)."""
    return [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests").glob("test_*.py"))
            if "at_least(" in path.read_text() or "at_most(" in path.read_text()]


KERNELS = {"oneDNN": "oneDNN", "Eigen": "Eigen (TF_ENABLE_ONEDNN_OPTS=0)", "AVX2": "AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)"}


def earlier_runs(out):
    """The values and outcomes of the runs whose seed-SEED-KERNELS.jsonl and .log files are in `out`."""
    values, outcomes = [], []
    for log in sorted(out.glob("seed-*.log")):
        _, seed, kernels = log.stem.split("-", 2)
        seed, kernels = int(seed), KERNELS[kernels]
        lines = log.read_text().splitlines()
        summary = next((line.strip("= ") for line in reversed(lines)
                        if " in " in line and ("passed" in line or "failed" in line)),
                       "(no summary)")
        outcomes.append({"seed": seed, "kernels": kernels, "summary": summary, "minutes": None,
                         "failed": [line for line in lines if line.startswith(("FAILED", "ERROR"))]})
        record = log.with_suffix(".jsonl")
        if record.exists():
            values += [{**json.loads(line), "seed": seed, "kernels": kernels}
                       for line in record.read_text().splitlines()]
    return values, outcomes


def report(out, values, outcomes):
    """Write margins.json and margins.md to `out`, print the table; 0 if every run passed."""
    table = summarize(values)
    (out / "margins.json").write_text(json.dumps({"runs": outcomes, "checks": table, "values": values}, indent=1))
    text = to_markdown(table, outcomes)
    (out / "margins.md").write_text(text)
    print(text)
    return 0 if all(not o["failed"] and " passed" in o["summary"] for o in outcomes) else 1


def summarize(values):
    """Per check: its threshold, the worst value over all runs (and which run), the best, and how many were seen."""
    checks = {}
    for v in values:
        checks.setdefault((v["name"], v["op"], v["threshold"]), []).append(v)
    table = []
    for (name, op, threshold), seen in sorted(checks.items()):
        pick = min if op == ">=" else max
        worst = pick(seen, key=lambda v: v["value"])
        best = (max if op == ">=" else min)(v["value"] for v in seen)
        table.append({"check": name, "op": op, "threshold": threshold, "worst": worst["value"], "best": best,
                      "worst_in": f"seed {worst['seed']}, {worst['kernels'].split()[0]}",
                      "values": len(seen),
                      "holds": all((v["value"] >= threshold) if op == ">=" else (v["value"] <= threshold)
                                   for v in seen)})
    return table


def to_markdown(table, outcomes):
    lines = ["| check | asserted | worst seen | best seen | worst in | values |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in table:
        flag = "" if row["holds"] else " **FAILS**"
        lines.append(f"| {row['check']} | {row['op']} {row['threshold']:g} | {row['worst']:.4g}{flag} "
                     f"| {row['best']:.4g} | {row['worst_in']} | {row['values']} |")
    lines += ["", "| seed | kernels | result | minutes |", "| --- | --- | --- | --- |"]
    lines += [f"| {o['seed']} | {o['kernels']} | {o['summary']} | {o['minutes'] or ''} |" for o in outcomes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
