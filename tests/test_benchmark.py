"""benchmarks/inference.py runs end to end on the tiny exported model (its numbers are not judged here)."""

import json

from conftest import ROOT, run_train


def test_inference_benchmark_prints_a_table(exported, tmp_path):
    result = run_train("--model", exported[0], "--reviews", ROOT / "data" / "sample" / "test.xlsx", "--n", 12,
                       "--latency-n", 2, "--json", tmp_path / "bench.json", script=ROOT / "benchmarks" / "inference.py")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"ktrain", "onnx", "onnx-int8"} <= set(rows)
    assert rows["onnx"][6].strip() == "100.0%" and float(rows["onnx"][7]) <= 1e-4  # agreement, largest difference
    assert "12 reviews from test.xlsx" in result.stdout and "distance from a tie" in result.stdout
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [r["backend"] for r in results] == ["ktrain", "onnx", "onnx-int8"]
    assert all(r["reviews"] == 12 and r["reviews_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in results)


def test_matmul_peak_prints_both_ceilings():
    result = run_train(script=ROOT / "benchmarks" / "matmul_peak.py")
    assert result.returncode == 0, result.stderr[-3000:]
    rates = {line.split(":")[0].strip(): float(line.split(",")[1].split()[0]) for line in result.stdout.splitlines()
             if line.strip().startswith(("fp32:", "int8:"))}
    assert set(rates) == {"fp32", "int8"} and all(rate > 0 for rate in rates.values())
