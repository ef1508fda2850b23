"""ONNX int8 with outlier input channels kept in float32: KL against the float32 graph by channel count.

Takes an ONNX float32 variant from the store and quantizes it exactly as the onnx technique does
(``slipstream.exporters.onnx.quantize``: per-token dynamic or ONNX Runtime's static int8, with
``outlier_channels`` split out on the calibration text, WikiText-2 *valid*) once per setting, then
measures mean KL and top-1 agreement against the float32 graph on the first ``--tokens`` tokens of
WikiText-2 *test*, and the int8 graph's size.

Usage (prints a markdown table, writes --out):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/accuracy/onnx_outliers.py \\
        --fp32 smollm2-135m-onnx-fp32 --quantization int8_dynamic --channels 0 8 16 32
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from slipstream.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import float_reference, kl_top1, write_json  # noqa: E402


def main() -> None:

    from slipstream.engines.onnxruntime import OnnxRuntimeEngine
    from slipstream.exporters.onnx import MODEL_FILE, quantize
    from slipstream.techniques.registry import make_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", required=True, help="an onnx float32 variant in the store")
    ap.add_argument("--src", help="the transformers checkpoint it was exported from (default: its parent)")
    ap.add_argument("--quantization", choices=["int8_dynamic", "int8_static"], default="int8_dynamic")
    ap.add_argument("--channels", type=int, nargs="+", default=[0, 8, 16, 32])
    ap.add_argument("--keep", default="", help="keep_float, comma-separated module names")
    ap.add_argument("--set", nargs="*", default=[], help="more ONNX config fields, KEY=VALUE (numbers as such)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    store, fp32, src, seqs, ref = float_reference(args.fp32, args.src, args.tokens, 1024)
    shape = json.loads((Path(fp32.path) / "slipstream.json").read_text())["extra"]["facts"]
    extra = dict(item.split("=", 1) for item in args.set)  # typed by make_config, as on the command line
    rows = []
    for k in args.channels:
        config = make_config("onnx", {"quantization": args.quantization, "keep_float": args.keep,
                                      "outlier_channels": k, **extra})
        with tempfile.TemporaryDirectory(dir=store.home) as tmp:
            work = Path(tmp) / "variant"
            shutil.copytree(fp32.path, work, ignore=shutil.ignore_patterns(MODEL_FILE))
            staged = Path(tmp) / MODEL_FILE
            shutil.copy2(Path(fp32.path) / MODEL_FILE, staged)
            start = time.perf_counter()
            facts = quantize(staged, work / MODEL_FILE, config, src, shape)
            seconds = time.perf_counter() - start
            size = (work / MODEL_FILE).stat().st_size
            kl, top1 = kl_top1(ref, OnnxRuntimeEngine(work, threads=1).logprobs(seqs))
        row = {"config": config.slug(), "outlier_channels": k, "model_bytes": size, "kl_mean": kl,
               "top1_agreement": top1, "quantize_seconds": seconds, "facts": facts}
        rows.append(row)
        print({key: row[key] for key in ("config", "kl_mean", "top1_agreement", "model_bytes", "quantize_seconds")},
              flush=True)
    record = {"machine": describe_machine(), "fp32": args.fp32, "src": src.name, "tokens": sum(map(len, seqs)),
              "quantization": args.quantization, "keep_float": args.keep, "set": args.set, "rows": rows}
    write_json(args.out, record)
    print(f"\n{args.fp32}, {args.quantization}, keep_float={args.keep or '(none)'}, {sum(map(len, seqs))} WikiText-2 test "
          "tokens, against the float32 graph\n")
    print("| outlier channels per input | model.onnx MB | KL | top-1 |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['outlier_channels']} | {r['model_bytes'] / 1e6:.0f} | {r['kl_mean']:.4f} | {r['top1_agreement']:.1%} |")


if __name__ == "__main__":
    main()
