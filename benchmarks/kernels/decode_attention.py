"""Decode attention in a continuous batch: PyTorch's CPU attention against slipstream's C kernel
(``slipstream.engines.torch.kernels.decode_attention``), on the attention alone and in the engine's decode step.

1. Attention alone, at serving shapes: ``--rows`` rows of one new token each, SmolLM2's 9 query heads
   over 3 key/value heads of 64, ``--layers`` separate key/value buffers (so that, as in the model,
   they come from memory, not cache), each row attending to a random length between half and all of
   ``--width`` columns. Both give the same output (checked).
2. The engine's decode step (``TransformersStepper``, one thread): ``--rows`` rows of 70-token prompts
   after ``--decoded`` decode steps, timed over 8 steps, with the engine option ``decode_attention=torch``
   (PyTorch's kernel) and ``c`` (the C kernel), each in a fresh process.

Usage (prints and writes --out):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/kernels/decode_attention.py \\
        --model smollm2-135m-w8a8-sq0.8-gptq-keep-none --out benchmarks/results/<machine>/decode_attention-zen4.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import write_json  # noqa: E402

STEP = r"""
import json, sys, time, torch
from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
torch.set_num_threads(1)
model, rows, decoded, kernel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
engine = open_engine(model, engine="transformers", threads=1, decode_attention=kernel)
st = engine.stepper()
params = SamplingParams(max_tokens=100_000, ignore_eos=True)
for i in range(rows):
    st.add(i, list(range(100 + i, 170 + i)), params)
st.step()
for _ in range(decoded):
    st.step()
times = []
for _ in range(8):
    t = time.perf_counter(); st.step(); times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def attention_alone(rows: int, width: int, layers: int, repeats: int = 5) -> dict:
    import torch

    from slipstream.engines.torch.kernels import decode_attention as da

    torch.set_num_threads(1)
    heads, kv_heads, dim, cols = 9, 3, 64, max(256, width)
    g = torch.Generator().manual_seed(0)
    ks = [torch.randn(rows, kv_heads, cols, dim, generator=g) for _ in range(layers)]
    vs = [torch.randn(rows, kv_heads, cols, dim, generator=g) for _ in range(layers)]
    q = torch.randn(rows, heads, dim, generator=g)
    pos = torch.randint(width // 2, width, (rows,), generator=g)
    mask = torch.arange(width)[None, :] <= pos[:, None]
    lo, index = torch.zeros_like(pos), torch.arange(rows)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def torch_kernel(i):
        return sdpa(q[:, :, None], ks[i][:, :, :width], vs[i][:, :, :width], attn_mask=mask[:, None, None, :],
                    enable_gqa=True)[:, :, 0]

    def c_kernel(i):
        return da.decode_attention(q, ks[i], vs[i], index, lo, pos + 1, dim ** -0.5)

    assert torch.allclose(torch_kernel(0), c_kernel(0), atol=1e-5)
    out = {}
    for name, f in (("torch", torch_kernel), ("c", c_kernel)):
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(layers):
                f(i)
            best = min(best, time.perf_counter() - t)
        read = layers * 2 * int(pos.add(1).sum()) * kv_heads * dim * 4
        out[name] = {"ms_per_step": best * 1e3, "kv_gb_per_s": read / best / 1e9}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-w8a8-sq0.8-gptq-keep-none")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--widths", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--decoded", type=int, default=130)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from slipstream.machine import describe_machine

    alone = {w: attention_alone(args.rows, w, args.layers) for w in args.widths}
    for w, r in alone.items():
        print(f"attention alone, {args.rows} rows, up to {w} columns, {args.layers} layers: "
              f"torch {r['torch']['ms_per_step']:.1f} ms ({r['torch']['kv_gb_per_s']:.1f} GB/s), "
              f"C {r['c']['ms_per_step']:.1f} ms ({r['c']['kv_gb_per_s']:.1f} GB/s)", flush=True)
    steps = {}
    for kernel in ("torch", "c", "torch", "c"):
        done = subprocess.run([sys.executable, "-c", STEP, args.model, str(args.rows), str(args.decoded), kernel],
                              capture_output=True, text=True, check=True)
        steps.setdefault(kernel, []).append(json.loads(done.stdout.strip().splitlines()[-1]) * 1e3)
        print(f"engine decode step, {args.rows} rows after {args.decoded} tokens, {kernel}: {steps[kernel][-1]:.1f} ms",
              flush=True)
    record = {"machine": describe_machine(), "model": args.model, "rows": args.rows, "layers": args.layers,
              "decoded": args.decoded, "attention_alone": alone, "engine_step_ms": steps}
    write_json(args.out, record)


if __name__ == "__main__":
    main()
