"""Per-token int8 for the ONNX export: a review's scores depend only on the review, on any x86 CPU.

    quantize.per_token_int8("model.onnx", "model-int8.onnx")      # src/export.py calls it

Every MatMul with a weight (attention's q/k/v/out and the feed-forward layers) becomes an int8 one:
- weights: int8 with a scale per output column, in 7 bits (-64..64);
- activations: quantized when the model runs, each token with its own scale (the largest absolute value
  of its row), so nothing else in the call (other reviews, padding) changes a review's numbers.
Kept in float32: the embeddings, attention's two activation products (q.k and weights.v) and the classifier.
(Keeping the first layers' FFN output MatMul in float32 too, as the dynamic export did, bought nothing with
per-token activations and cost speed: docs/performance.md.)

Why 7-bit weights: on x86 CPUs without VNNI (AVX2, and AVX-512 before VNNI), ONNX Runtime multiplies uint8
activations by int8 weights with vpmaddubsw, which adds each pair of products in 16 bits and saturates
above 32,767: 255 x 127 x 2 does, 255 x 64 x 2 = 32,640 does not. With 7-bit weights the integer sums are
exact on every CPU, so the same file gives the same numbers on a laptop, a server and Spark's executors.

Why not ONNX Runtime's quantizers (measured in docs/performance.md): quantize_dynamic uses one activation
scale per model call, so a review's probabilities move with its batch-mates; quantize_static (scales
calibrated once) is batch-independent, but one fixed scale per tensor changed too many labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from onnx import NodeProto

ACTIVATION_ZERO = 128  # uint8 activations: round(x / s) + 128, within 1..255 since |x / s| <= 127
WEIGHT_MAX = 64  # 7-bit weights; see above


def per_token_int8(fp32_path: str | Path, int8_path: str | Path) -> None:
    """Write `int8_path`: the float32 model at `fp32_path` with its weight MatMuls in per-token int8."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    constants = {
        "int8/zero_point": np.array(ACTIVATION_ZERO, np.uint8),
        "int8/one": np.array(1.0, np.float32),
        "int8/per_step": np.array(1 / 127, np.float32),
        "int8/tiny": np.array(1e-12, np.float32),  # the scale of a row of zeros
    }
    nodes, replaced, quantized = [], set(), {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x, w, name = node.input[0], node.input[1], node.name
        if x not in quantized:  # once per input: q, k and v share theirs
            quantized[x] = quantize_rows(x, nodes, helper)
        q, scale = quantized[x]
        w_int8, w_scale = int8_columns(numpy_helper.to_array(weights[w]))
        constants[w + "/int8"], constants[w + "/scale"] = w_int8, w_scale
        replaced.add(w)
        # (q - 128) @ w_int8 * w_scale, with int32 sums (ONNX Runtime's MatMulIntegerToFloat), then * the row's scale.
        nodes.append(helper.make_node("MatMulIntegerToFloat",
                                      [q, w + "/int8", "int8/one", w + "/scale", "int8/zero_point"],
                                      [name + "/int8"], name + "/int8", domain="com.microsoft"))
        nodes.append(helper.make_node("Mul", [name + "/int8", scale], [node.output[0]], name + "/rescale"))

    used = {name for node in nodes for name in node.input}
    kept = [w for w in graph.initializer if w.name in used or w.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + [numpy_helper.from_array(value, name) for name, value in constants.items()])
    del graph.node[:]
    graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(int8_path))


def quantize_rows(x: str, nodes: list[NodeProto], helper: ModuleType) -> tuple[str, str]:
    """Nodes that quantize `x` ([..., K] float) to uint8 with one scale per row (token); returns (q, scale),
    the names of their outputs. The nodes are appended to `nodes`; `helper` is the onnx.helper module."""
    def add(op: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], output, **attributes))
        return output

    largest = add("ReduceMax", [x], x + "/max", axes=[-1], keepdims=1)
    smallest = add("ReduceMin", [x], x + "/min", axes=[-1], keepdims=1)
    size = add("Max", [largest, add("Neg", [smallest], x + "/-min"), "int8/tiny"], x + "/absmax")
    scale = add("Mul", [size, "int8/per_step"], x + "/scale")  # [..., 1]: largest |x| of the row maps to 127
    scaled = add("Mul", [x, add("Reciprocal", [scale], x + "/1/scale")], x + "/scaled")
    return add("QuantizeLinear", [scaled, "int8/one", "int8/zero_point"], x + "/uint8"), scale


def int8_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`w` ([K, N] float) as 7-bit integers in int8 and one float32 scale per column (output)."""
    scale = np.abs(w).max(axis=0) / WEIGHT_MAX
    scale[scale == 0] = 1
    return np.round(w / scale).astype(np.int8), scale.astype(np.float32)
