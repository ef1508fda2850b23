"""Outlier input channels kept in float32, the rest quantized (mixed precision by channel).

Int8 activations lose most where a few input channels carry values tens or hundreds of times the
others': one scale per token (dynamic) or per tensor (static) is then set by those channels, and
every other channel gets a few levels at most. In Llama-family models those channels are few and
fixed (the "massive activations" of Sun et al. 2024; LLM.int8's outlier features), so they can be
found once, on calibration text, and split out of each weight MatMul before quantization, as
QUIK (Ashkboos et al. 2023) and Atom (Zhao et al. 2024) do for 4- and 8-bit activations:

    y = x @ W  =  x[:, rest] @ W[rest, :]   (quantized: int8 weights and activations)
               +  x[:, out]  @ W[out, :]    (float32: k channels, a k x N product)

The quantized product keeps its full shape, with the outlier channels zeroed in the activations (one
``Mul`` by a 0/1 vector, cheaper in ONNX Runtime than gathering the other channels) and in the weight.

The channels are the ``k`` with the largest absolute value seen over the calibration samples, per
distinct MatMul input (the q/k/v projections share theirs, as do gate and up). The rewrite uses only
standard ONNX operators (``Gather`` along the last axis, ``Mul``, ``MatMul``, ``Add``) and keeps the quantized
MatMul's node name, so the quantizers that run after it (per-token dynamic, ONNX Runtime's static) take
the same node list as without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def matmul_inputs(path: Path, nodes: list[str]) -> dict[str, list[str]]:
    """Distinct activation input -> the MatMul nodes (of ``nodes``) that multiply it by a weight."""
    import onnx

    wanted = set(nodes)
    found: dict[str, list[str]] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.name in wanted:
            found.setdefault(node.input[0], []).append(node.name)
    return found


def channel_maxima(path: Path, inputs: list[str], feeds: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-channel max |x| of each tensor in ``inputs`` over the calibration ``feeds`` (one forward pass
    of the float graph each; only a [channels] vector per tensor is kept between samples)."""
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    for name in inputs:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe), save_as_external_data=True, location="probe.onnx.data")
        del model
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(probe), options, providers=["CPUExecutionProvider"])
        maxima: dict[str, Any] = {}
        for feed in feeds:
            for name, value in zip(inputs, session.run(inputs, feed)):
                top = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
                maxima[name] = top if name not in maxima else np.maximum(maxima[name], top)
        del session
    if len(maxima) != len(inputs):
        raise ValueError("calibration produced no samples")
    return maxima


def outlier_channels(maxima: Any, k: int) -> Any:
    """The ``k`` channels with the largest calibration maxima, in ascending order."""
    import numpy as np

    k = min(k, len(maxima) - 1)
    return np.sort(np.argsort(-maxima, kind="stable")[:k]).astype(np.int64)


def split_outliers(path: Path, out: Path, groups: dict[str, list[str]], channels: dict[str, Any],
                   external: bool = False) -> int:
    """Rewrite each MatMul in ``groups`` (input -> nodes; second input a stored [K, N] weight) as the
    quantizable product over the channels not in ``channels[input]`` plus a float32 product over those
    channels; save at ``out``; return the number of outlier channels split out in all."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from slipstream.exporters.onnx_per_token import save_rewritten

    model = onnx.load(str(path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    by_node = {n: x for x, names in groups.items() for n in names}
    new_nodes: list[Any] = []
    added: list[Any] = []
    gathered: set[str] = set()
    split = 0
    for node in graph.node:
        x = by_node.get(node.name)
        if x is None or not len(channels.get(x, ())):
            new_nodes.append(node)
            continue
        w = node.input[1]
        if w not in weights or len(weights[w].dims) != 2:
            raise ValueError(f"{node.name}: second input {w!r} is not a stored matrix")
        out_idx = channels[x]
        p = f"{x}.oc"
        if x not in gathered:
            keep = np.ones(weights[w].dims[0], dtype=np.float32)
            keep[out_idx] = 0.0
            added += [numpy_helper.from_array(out_idx, f"{p}.out_idx"), numpy_helper.from_array(keep, f"{p}.keep")]
            new_nodes += [helper.make_node("Gather", [x, f"{p}.out_idx"], [f"{p}.out"], axis=-1, name=f"{p}/GatherOut"),
                          helper.make_node("Mul", [x, f"{p}.keep"], [f"{p}.rest"], name=f"{p}/ZeroOutliers")]
            gathered.add(x)
            split += len(out_idx)
        array = numpy_helper.to_array(weights[w])
        rest = array.copy()
        rest[out_idx] = 0.0  # so that the quantized weight's column scales ignore these rows too
        n = node.name
        added += [numpy_helper.from_array(rest, f"{w}.rest"),
                  numpy_helper.from_array(np.ascontiguousarray(array[out_idx]), f"{w}.outliers")]
        y = node.output[0]
        node.input[0], node.input[1] = f"{p}.rest", f"{w}.rest"
        node.output[0] = f"{n}.rest_out"
        new_nodes += [node,
                      helper.make_node("MatMul", [f"{p}.out", f"{w}.outliers"], [f"{n}.outlier_out"],
                                       name=f"{n}/Outliers"),
                      helper.make_node("Add", [f"{n}.rest_out", f"{n}.outlier_out"], [y], name=f"{n}/AddOutliers")]
    graph.initializer.extend(added)
    save_rewritten(model, new_nodes, out, external)  # the whole float weights, now split, go
    return split
