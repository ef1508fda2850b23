"""Where ONNX Runtime's static int8 loses its accuracy: each quantized activation's share of the KL.

Quantizes an ONNX float32 variant from the store exactly as the onnx technique does (``--set`` for
its fields; static int8 at its defaults unless told otherwise: 16 outlier channels, the MLP down
projections and q/k/v in float32, ``--set keep_float=`` for every weight MatMul in int8), then rewrites the
QDQ graph so that every quantized activation (one ``QuantizeLinear``/``DequantizeLinear`` pair per
distinct MatMul input: q/k/v share one, gate/up share one) passes through a switch,

    y = x + g * (dequantize(quantize(x)) - x)        (g a scalar graph input: 1 quantized, 0 float)

so that one ONNX Runtime session measures the KL against the float32 graph for any subset of the
activations quantized (the weights stay int8 throughout). It reports, on the first ``--tokens`` tokens
of WikiText-2 test:

- KL with every activation quantized (the variant), and with none (the weights' share);
- per module kind (qkv, o, gate/up, down, head), KL with only that kind's activations quantized;
- per activation, the KL saved by leaving it alone in float (all others quantized);
- the KL as the activations that save most are left in float one after another.

Usage (prints a summary, writes --out):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/accuracy/onnx_static_sensitivity.py \\
        --fp32 smollm2-135m-onnx-fp32 --out benchmarks/results/<machine>/onnx_static_sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slipstream.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import float_reference, kl_top1, write_json  # noqa: E402


def module_names(fp32_model: Path, src: Path) -> dict[str, str]:
    """MatMul node name -> checkpoint module, for the weight MatMuls of the float32 graph."""
    import onnx
    from onnx import numpy_helper

    from slipstream.exporters.onnx import matmul_modules

    graph = onnx.load(str(fp32_model)).graph
    weights = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    firsts = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        b = producers.get(node.input[1])
        if b is not None and b.op_type == "Transpose" and b.input[0] in weights:
            w = numpy_helper.to_array(weights[b.input[0]])
            firsts[node.name] = (w.shape[::-1], w[0, :8])
        elif node.input[1] in weights:
            w = numpy_helper.to_array(weights[node.input[1]])
            firsts[node.name] = (w.shape, w[:8, 0])
    return matmul_modules(firsts, src)


def kind_of(module: str) -> str:
    last = module.rsplit(".", 1)[-1]
    return {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o", "gate_proj": "gate/up",
            "up_proj": "gate/up", "down_proj": "down", "lm_head": "head"}.get(last, last)


def gated(qdq: Path, out: Path, modules: dict[str, str]) -> list[dict[str, Any]]:
    """Rewrite the QDQ graph at ``qdq`` with one switch input per quantized activation; return them."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(qdq))
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    switches: list[dict[str, Any]] = []
    extra: list[Any] = []
    for n in list(graph.node):
        if n.op_type != "DequantizeLinear":
            continue
        q = producers.get(n.input[0])
        users = [u for u in consumers.get(n.output[0], []) if u.op_type == "MatMul"]
        if q is None or q.op_type != "QuantizeLinear" or not users:
            continue  # a weight's DequantizeLinear, or not in front of a MatMul
        mods = sorted({modules.get(u.name, u.name) for u in users})
        x, y, g = q.input[0], n.output[0], f"switch.{len(switches)}"
        extra += [helper.make_node("Sub", [y, x], [f"{g}.d"], name=f"{g}/Sub"),
                  helper.make_node("Mul", [f"{g}.d", g], [f"{g}.gd"], name=f"{g}/Mul"),
                  helper.make_node("Add", [x, f"{g}.gd"], [f"{g}.y"], name=f"{g}/Add")]
        for u in users:
            u.input[:] = [f"{g}.y" if i == y else i for i in u.input]
        graph.input.append(helper.make_tensor_value_info(g, TensorProto.FLOAT, []))
        layer = next((int(p) for m in mods for p in m.split(".") if p.isdigit()), -1)
        switches.append({"input": g, "modules": mods, "kind": kind_of(mods[0]), "layer": layer})
    graph.node.extend(extra)  # appended after their consumers: sort topologically before saving
    order, seen, names = [], set(i.name for i in graph.input) | {i.name for i in graph.initializer}, {}
    pending = list(graph.node)
    while pending:
        rest = []
        for node in pending:
            if all(i == "" or i in seen for i in node.input):
                order.append(node)
                seen.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or a missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(order)
    onnx.save(model, str(out), save_as_external_data=True, location=out.name + ".data")
    return switches


def main() -> None:
    import onnxruntime as ort

    from slipstream.engines.sampling import log_softmax
    from slipstream.exporters.onnx import MODEL_FILE, quantize
    from slipstream.techniques.registry import make_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", required=True, help="an onnx float32 variant in the store")
    ap.add_argument("--src", help="the transformers checkpoint it was exported from (default: its parent)")
    ap.add_argument("--set", nargs="*", default=[], help="ONNX config fields, KEY=VALUE (numbers as such)")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--kinds-only", action="store_true", help="skip the per-activation part (one pass each)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    store, fp32, src, seqs, ref = float_reference(args.fp32, args.src, args.tokens, 512)
    shape = json.loads((Path(fp32.path) / "slipstream.json").read_text())["extra"]["facts"]
    # typed by make_config, as on the command line
    config = make_config("onnx", {"quantization": "int8_static", **dict(item.split("=", 1) for item in args.set)})
    modules = module_names(Path(fp32.path) / MODEL_FILE, src)
    with tempfile.TemporaryDirectory(dir=store.home) as tmp:
        staged, qdq, switched = (Path(tmp) / n for n in ("float.onnx", "qdq.onnx", "switched.onnx"))
        shutil.copy2(Path(fp32.path) / MODEL_FILE, staged)
        start = time.perf_counter()
        facts = quantize(staged, qdq, config, src, shape)
        print(f"quantized ({config.slug()}) in {time.perf_counter() - start:.0f} s", flush=True)
        switches = gated(qdq, switched, modules)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(switched), options, providers=["CPUExecutionProvider"])
    layers, kv_heads, head_dim = shape["layers"], shape["kv_heads"], shape["head_dim"]
    empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
    past = {f"past.{i}.{kv}": empty for i in range(layers) for kv in ("key", "value")}

    def kl(on: set[int]) -> float:
        gates = {s["input"]: np.asarray(1.0 if i in on else 0.0, dtype=np.float32) for i, s in enumerate(switches)}
        out = []
        for seq in seqs:
            n = len(seq)
            feed = {"input_ids": np.asarray([seq], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64),
                    "position_ids": np.arange(n, dtype=np.int64)[None]} | past | gates
            out.append(log_softmax(session.run(["logits"], feed)[0][0]))
        return kl_top1(ref, out)[0]

    every = set(range(len(switches)))
    full, none = kl(every), kl(set())
    print(f"{len(switches)} quantized activations; KL all quantized {full:.4f}, none (weights only) {none:.4f}",
          flush=True)
    kinds = sorted({s["kind"] for s in switches})
    by_kind = {k: kl({i for i, s in enumerate(switches) if s["kind"] == k}) for k in kinds}
    for k, v in by_kind.items():
        print(f"  only {k:8s} quantized: KL {v:.4f}", flush=True)
    saved = []
    for i, s in enumerate([] if args.kinds_only else switches):
        saved.append(full - kl(every - {i}))
        s["kl_saved"] = saved[-1]
    order = sorted(range(len(saved)), key=lambda i: -saved[i])
    curve, off = [], set()
    for i in order[:24] if saved else []:
        off.add(i)
        curve.append({"left_float": len(off), "added": switches[i]["modules"], "kl": kl(every - off)})
        print(f"  float: {len(off):2d} (+{', '.join(switches[i]['modules'])}): KL {curve[-1]['kl']:.4f}", flush=True)
    record = {"machine": describe_machine(), "fp32": args.fp32, "config": config.slug(), "set": args.set,
              "tokens": sum(map(len, seqs)), "kl_all": full, "kl_weights_only": none, "by_kind": by_kind,
              "switches": switches, "greedy_float": curve, "facts": facts}
    write_json(args.out, record)


if __name__ == "__main__":
    main()
