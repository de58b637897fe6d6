"""How fast can this CPU multiply matrices? The ceiling for DistilBERT's speed, in fp32 and int8.

    python benchmarks/matmul_peak.py          # needs onnx and onnxruntime (requirements-export.txt)

Times one large matrix product shaped like DistilBERT's feed-forward layer (8,192 tokens x 768 x 3,072)
with ONNX Runtime, in fp32 (MatMul) and int8 (MatMulInteger, uint8 x int8 as dynamic quantization
runs it), best of 5 after a warm-up, and prints the operations per second. Almost all of DistilBERT's
work is such products (about 85 million multiply-adds x 2 per token, plus attention), so these numbers
bound the reviews per second any backend can reach on this machine: see docs/performance.md.
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

M, K, N = 8192, 768, 3072  # tokens x hidden x feed-forward width


def session(kind):
    rng = np.random.default_rng(0)
    if kind == "fp32":
        weight, op = rng.standard_normal((K, N)).astype(np.float32), "MatMul"
        x_type, y_type, x = TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((M, K)).astype(np.float32)
    else:
        weight, op = rng.integers(-127, 128, (K, N)).astype(np.int8), "MatMulInteger"
        x_type, y_type, x = TensorProto.UINT8, TensorProto.INT32, rng.integers(0, 256, (M, K)).astype(np.uint8)
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], kind,
                              [helper.make_tensor_value_info("x", x_type, [M, K])],
                              [helper.make_tensor_value_info("y", y_type, [M, N])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: s.run(None, {"x": x})


def best_seconds(run, repeats=5):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(f"ONNX Runtime {ort.__version__}, one {M} x {K} x {N} matrix product:")
    for kind in ("fp32", "int8"):
        seconds = best_seconds(session(kind))
        print(f"  {kind}: {seconds * 1e3:.0f} ms, {2 * M * K * N / seconds / 1e9:.0f} G operations/s")


if __name__ == "__main__":
    main()
