"""How a decode step's matrix products scale with the rows in the batch, per GEMM (issue 7).

A continuous batch of R sequences multiplies every weight matrix by R rows per step. At one row the
product is bound by reading the weights from memory; with more rows the same bytes serve more work,
until the CPU's arithmetic becomes the limit. This script times all of a model's linear layers (its
real shapes and weights, one pass = one decode step's products) at several row counts, through
PyTorch's own product (MKL in PyTorch's CPU wheels), numpy's OpenBLAS (the transformers engine's
``gemm="openblas"``), oneDNN with reordered weights (``gemm="onednn"``) and, with ``--int8`` on a CPU
with VNNI, the W8A8 int8 path (``slipstream.engines.torch.kernels.int8_gemm``: every decoder matrix as int8 with one
scale per output channel, each row's activations quantized per token, the head in float32 through
oneDNN, as the engine runs a W8A8 checkpoint), interleaved, best of ``--repeats``; and reports the lower bound that
arithmetic alone puts on the step time (rows x 2 x parameters / the measured peak GFLOP/s of a large
product), so the ratio "step at R rows / step at one row" can be read against what is possible.

Usage (writes benchmarks/results/<machine>/gemm_rows.json and prints a markdown table):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 \\
        .venv/bin/python benchmarks/kernels/gemm_rows.py --model smollm2-135m --rows 1 2 4 8 16 32 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from slipstream.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path, write_json  # noqa: E402


def weights(model_dir: Path) -> list[np.ndarray]:
    """Every 2-D weight a decode step multiplies by ([out, in] float32), the output head included."""
    from safetensors.numpy import load_file

    mats = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        for name, w in load_file(f).items():
            if w.ndim == 2 and name.endswith(".weight") and "norm" not in name:
                mats[name] = w.astype(np.float32)
    cfg = json.loads((model_dir / "config.json").read_text())
    head = mats.pop("lm_head.weight", None)
    embed = next(v for k, v in mats.items() if k.endswith("embed_tokens.weight"))
    mats = {k: v for k, v in mats.items() if not k.endswith("embed_tokens.weight")}
    out = list(mats.values())
    out.append(head if head is not None and not cfg.get("tie_word_embeddings") else embed)  # the head reads it
    return out


def time_pass(fn, mats, rows: int, repeats: int, rng, prepared=None) -> float:
    xs = {w.shape[1]: rng.standard_normal((rows, w.shape[1])).astype(np.float32) for w in mats}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w, p in zip(mats, prepared or mats):
            fn(xs[w.shape[1]], p)
        best = min(best, time.perf_counter() - start)
    return best


def int8_layers(mats: list[np.ndarray]) -> list:
    """``mats`` as the engine runs a W8A8 checkpoint: int8 decoder layers, the head (last) in float32."""
    import types

    import torch

    from slipstream.engines.torch.kernels.int8_gemm import int8_forward

    out = []
    for w in mats[:-1]:
        t = torch.from_numpy(w)
        scale = t.abs().amax(1, keepdim=True) / 127
        layer = types.SimpleNamespace(
            _int8_packed=torch.ops.onednn.qlinear_prepack(torch.round(t / scale).to(torch.int8), None),
            _int8_channel_scale=scale.reshape(-1).contiguous(), _int8_zero_points=torch.zeros(len(w), dtype=torch.int64),
            _int8_shared=None, _int8_leads=True, bias=None)
        out.append(types.MethodType(int8_forward, layer))
    head = torch.ops.mkldnn._reorder_linear_weight(torch.from_numpy(mats[-1]))
    out.append(lambda x: torch.ops.mkldnn._linear_pointwise(x, head, None, "none", [], ""))
    return out


def peak_gflops(fn, repeats: int, rng) -> float:
    a = rng.standard_normal((512, 1024)).astype(np.float32)
    b = rng.standard_normal((1024, 1024)).astype(np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 512 * 1024 * 1024 / best / 1e9


def main() -> None:
    import torch

    from slipstream.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--int8", action="store_true", help="add the W8A8 int8 path (needs VNNI or AMX)")
    ap.add_argument("--out", type=Path, default=result_path("gemm_rows.json"))
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    mats = weights(Path(Store().get(args.model).path))
    params = sum(w.size for w in mats)
    backends = {
        "torch": (lambda x, w: torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w)),
                  lambda a, b: torch.from_numpy(a) @ torch.from_numpy(b)),
        "openblas": (lambda x, w: x @ w.T, lambda a, b: a @ b),
    }
    peaks = {name: peak_gflops(big, args.repeats, rng) for name, (_, big) in backends.items()}
    prepared: dict[str, list] = {}
    from slipstream.engines.torch.kernels import blas, int8_gemm

    if blas.onednn_available():
        backends["onednn"] = (lambda x, w: torch.ops.mkldnn._linear_pointwise(torch.from_numpy(x), w, None, "none",
                                                                               [], ""), None)
        prepared["onednn"] = [torch.ops.mkldnn._reorder_linear_weight(torch.from_numpy(w)) for w in mats]
    if args.int8:
        if int8_gemm.available() is not None:
            raise SystemExit(f"--int8: {int8_gemm.available()}")
        backends["w8a8-int8"] = (lambda x, layer: layer(torch.from_numpy(x)), None)
        prepared["w8a8-int8"] = int8_layers(mats)
    results: dict[str, dict[int, float]] = {name: {} for name in backends}
    with torch.inference_mode():
        for rows in args.rows:  # interleaved: every backend at each row count, one after the other
            for name, (fn, _) in backends.items():
                results[name][rows] = time_pass(fn, mats, rows, args.repeats, rng, prepared.get(name))
            print(rows, {n: round(r[rows] * 1e3, 1) for n, r in results.items()}, flush=True)
    peak = max(peaks.values())
    bound = {rows: rows * 2 * params / (peak * 1e9) for rows in args.rows}
    record = {"machine": describe_machine(), "model": args.model, "parameters_multiplied": params,
              "weight_bytes": params * 4, "threads": {"torch": torch.get_num_threads()},
              "peak_gflops": peaks, "seconds": results, "arithmetic_bound_s": bound}
    write_json(args.out, record)
    one = {n: r[args.rows[0]] for n, r in results.items()}
    print(f"\n{args.model}: {params / 1e6:.1f}M parameters multiplied per row per step; "
          f"peak of a 512x1024x1024 product: " + ", ".join(f"{n} {g:.0f} GFLOP/s" for n, g in peaks.items()))
    names = list(results)
    print("\n| rows | " + " | ".join(f"{n} ms (× its 1 row)" for n in names) + " | float32 arithmetic bound ms |")
    print("|---|" + "---|" * (len(names) + 1))
    for rows in args.rows:
        cells = [f"{results[n][rows] * 1e3:.1f} ({results[n][rows] / one[n]:.2f}×)" for n in names]
        print(f"| {rows} | " + " | ".join(cells) + f" | {bound[rows] * 1e3:.1f} |")


if __name__ == "__main__":
    main()
