"""Dynamic int8 with one activation scale per token, written in standard ONNX operators.

ONNX Runtime's ``quantize_dynamic`` quantizes a MatMul's input with one scale for the whole tensor
(``DynamicQuantizeLinear``): in a prompt, a single token with outlier activations (the first token of
a Llama-family model carries activations hundreds of times the others') sets the step for every other
token (what that costs: docs/techniques.md#onnx-runtime). This rewrite gives each token (each row
of the MatMul's input) its own symmetric scale, the scheme of W8A8 checkpoints (SmoothQuant,
llm-compressor), and each weight column its own scale:

    s     = max(|x|, over the row) / 127                    one scale per token, [..., 1]
    x_q   = uint8(round(x / s) + 128)                       symmetric int8 stored offset by 128
    y     = float(MatMulInteger(x_q, W_q, 128)) * s * s_w   s_w: one scale per output column (or one)

The +128 offset with a scalar zero point keeps ONNX Runtime on its fast uint8 x int8 kernel (the same
MLAS GEMM its own dynamic int8 runs: VNNI where the CPU has it); MatMulInteger accepts only a scalar zero
point for its first input, which is why the activations are symmetric. Inputs shared by several
MatMuls (the q/k/v projections, gate/up) are quantized once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def quantize_weight(w: Any, per_channel: bool, reduce_range: bool) -> tuple[Any, Any]:
    """(int8 weight, float32 scale): symmetric, per output column ([K, N] -> N scales) or per tensor.
    ``reduce_range``: 7-bit weights (+-63), for x86 kernels without VNNI that add pairs in 16 bits."""
    import numpy as np

    qmax = 63 if reduce_range else 127
    top = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    scale = (np.maximum(top, np.finfo(np.float32).tiny) / qmax).astype(np.float32)
    q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
    return q, scale


def quantize_per_token(inp: Path, out: Path, nodes: list[str], *, per_channel: bool, reduce_range: bool,
                       external: bool = False) -> int:
    """Rewrite the MatMul nodes named in ``nodes`` (second input: a stored [K, N] weight) of the graph
    at ``inp`` as per-token dynamic int8, save it at ``out``; return how many were rewritten."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(inp))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    wanted = set(nodes)
    consts = [numpy_helper.from_array(np.array([-1], np.int64), "pt.axes"),
              numpy_helper.from_array(np.array(1 / 127, np.float32), "pt.inv127"),
              numpy_helper.from_array(np.array(1e-12, np.float32), "pt.eps"),
              numpy_helper.from_array(np.array(128, np.float32), "pt.offset"),
              numpy_helper.from_array(np.array(128, np.uint8), "pt.zero")]
    quantized_inputs: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, per-row scale)
    quantized_weights: dict[str, tuple[str, str]] = {}  # float weight -> (int8 weight, scale)
    new_nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if node.name not in wanted:
            new_nodes.append(node)
            continue
        x, w = node.input[0], node.input[1]
        if w not in weights or len(weights[w].dims) != 2:
            raise ValueError(f"{node.name}: second input {w!r} is not a stored matrix")
        if w not in quantized_weights:
            q, scale = quantize_weight(numpy_helper.to_array(weights[w]), per_channel, reduce_range)
            graph.initializer.extend([numpy_helper.from_array(q, f"{w}.int8"),
                                      numpy_helper.from_array(scale, f"{w}.scale")])
            quantized_weights[w] = (f"{w}.int8", f"{w}.scale")
        if x not in quantized_inputs:
            p = f"{x}.pt"
            new_nodes += [
                helper.make_node("Abs", [x], [f"{p}.abs"], name=f"{p}/Abs"),
                helper.make_node("ReduceMax", [f"{p}.abs", "pt.axes"], [f"{p}.max"], keepdims=1, name=f"{p}/ReduceMax"),
                helper.make_node("Max", [f"{p}.max", "pt.eps"], [f"{p}.max1"], name=f"{p}/Max"),
                helper.make_node("Mul", [f"{p}.max1", "pt.inv127"], [f"{p}.scale"], name=f"{p}/Scale"),
                helper.make_node("Div", [x, f"{p}.scale"], [f"{p}.div"], name=f"{p}/Div"),
                helper.make_node("Round", [f"{p}.div"], [f"{p}.round"], name=f"{p}/Round"),
                helper.make_node("Add", [f"{p}.round", "pt.offset"], [f"{p}.shift"], name=f"{p}/Offset"),
                helper.make_node("Cast", [f"{p}.shift"], [f"{p}.u8"], to=TensorProto.UINT8, name=f"{p}/Cast"),
            ]
            quantized_inputs[x] = (f"{p}.u8", f"{p}.scale")
        xq, xs = quantized_inputs[x]
        wq, ws = quantized_weights[w]
        n = node.name
        new_nodes += [
            helper.make_node("MatMulInteger", [xq, wq, "pt.zero"], [f"{n}.i32"], name=f"{n}/MatMulInteger"),
            helper.make_node("Cast", [f"{n}.i32"], [f"{n}.f32"], to=TensorProto.FLOAT, name=f"{n}/Cast"),
            helper.make_node("Mul", [f"{n}.f32", xs], [f"{n}.rows"], name=f"{n}/RowScale"),
            helper.make_node("Mul", [f"{n}.rows", ws], [node.output[0]], name=f"{n}/ColumnScale"),
        ]
        rewritten += 1
    if rewritten != len(wanted):
        missing = sorted(wanted - {n.name for n in graph.node})
        raise ValueError(f"MatMul nodes not in the graph: {missing[:5]}")
    graph.initializer.extend(consts)
    save_rewritten(model, new_nodes, out, external)  # the float weights now quantized are dropped
    return rewritten


def save_rewritten(model: Any, nodes: list[Any], out: Path, external: bool = False) -> None:
    """Give ``model``'s graph ``nodes`` in place of its own, drop the stored tensors no node reads any
    more (the weights a rewrite replaced), and save it at ``out``."""
    import onnx

    graph = model.graph
    used = {i for nd in nodes for i in nd.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out), save_as_external_data=external)
