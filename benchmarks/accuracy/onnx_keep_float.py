"""Where dynamic int8 loses its accuracy: KL against the float32 graph with different modules left in
float32 (the onnx technique's ``keep_float``), with one activation scale per tensor or per token.

ONNX Runtime's dynamic int8 (``--activations per_tensor``) quantizes each MatMul's input with one
scale per call, so over a prompt the token with the largest activation sets the scale for all of them;
slipstream's default (``per_token``) gives each token its own. This script takes an ONNX float32
variant from the store, quantizes it as the onnx technique does (per-channel int8 weights, 7-bit where
the CPU has no VNNI) once per ``--keep`` setting, and measures the mean KL and top-1 agreement against
the float32 graph on the first ``--tokens`` tokens of WikiText-2 test.

Usage (writes benchmarks/results/<machine>/onnx_keep_float.json and prints a markdown table):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/accuracy/onnx_keep_float.py \\
        --fp32 smollm2-135m-sq0.8-onnx-fp32 --keep "" lm_head down_proj down_proj,lm_head o_proj
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from slipstream.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import float_reference, kl_top1, result_path, write_json  # noqa: E402


def main() -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slipstream.engines.onnxruntime import OnnxRuntimeEngine
    from slipstream.exporters.onnx import MODEL_FILE, ONNX, weight_matmuls
    from slipstream.exporters.onnx_per_token import quantize_per_token

    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", required=True, help="an onnx float32 variant in the store")
    ap.add_argument("--src", help="the transformers checkpoint it was exported from (default: its parent)")
    ap.add_argument("--keep", nargs="+", default=["", "lm_head", "down_proj", "down_proj,lm_head"],
                    help="keep_float settings, comma-separated module names ('' = quantize every weight MatMul)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--activations", choices=["per_token", "per_tensor"], default="per_tensor")
    ap.add_argument("--out", type=Path, default=result_path("onnx_keep_float.json"))
    args = ap.parse_args()

    store, fp32, src, seqs, ref = float_reference(args.fp32, args.src, args.tokens, 1024)
    reduce_range = ONNX("int8_dynamic").resolved_reduce_range()
    rows = []
    for keep in args.keep:
        patterns = tuple(p for p in keep.split(",") if p)
        with tempfile.TemporaryDirectory(dir=store.home) as tmp:
            work = Path(tmp) / "variant"
            shutil.copytree(fp32.path, work, ignore=shutil.ignore_patterns(MODEL_FILE))
            staged = Path(tmp) / MODEL_FILE
            shutil.copy2(Path(fp32.path) / MODEL_FILE, staged)
            start = time.perf_counter()
            nodes, kept = weight_matmuls(staged, src=src, keep_float=patterns)
            if args.activations == "per_token":
                quantize_per_token(staged, work / MODEL_FILE, nodes, per_channel=True, reduce_range=reduce_range)
            else:
                quantize_dynamic(str(staged), str(work / MODEL_FILE), op_types_to_quantize=["MatMul"],
                                 nodes_to_quantize=nodes, per_channel=True, reduce_range=reduce_range,
                                 weight_type=QuantType.QInt8)
            seconds = time.perf_counter() - start
            size = (work / MODEL_FILE).stat().st_size
            kl, top1 = kl_top1(ref, OnnxRuntimeEngine(work, threads=1).logprobs(seqs))
        row = {"keep_float": list(patterns), "float_matmuls": len(kept), "quantized_matmuls": len(nodes),
               "model_bytes": size, "kl_mean": kl, "top1_agreement": top1, "quantize_seconds": seconds}
        rows.append(row)
        print(row, flush=True)
    record = {"machine": describe_machine(), "fp32": args.fp32, "src": str(src.name), "tokens": sum(map(len, seqs)),
              "reduce_range": reduce_range, "activations": args.activations, "rows": rows}
    write_json(args.out, record)
    print(f"\n{args.fp32}, activations {args.activations}, {sum(map(len, seqs))} WikiText-2 test tokens, "
          "against the float32 graph\n")
    print("| keep_float | MatMuls in float | model.onnx MB | KL | top-1 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {', '.join(r['keep_float']) or '(none)'} | {r['float_matmuls']} | {r['model_bytes'] / 1e6:.0f} "
              f"| {r['kl_mean']:.4f} | {r['top1_agreement']:.1%} |")


if __name__ == "__main__":
    main()
