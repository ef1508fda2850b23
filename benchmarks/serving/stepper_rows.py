"""A continuous batch's decode step at 1, 4 and 16 rows, measured alone (no server), in the transformers
engine's stepper: what the serving target "p95 time per output token at 16 streams under 2x one
stream" asks of one engine on this CPU (issue 7).

Each row is a 70-token prompt; after its prefill, 15 decode steps are timed and the median of the
last 12 reported. ``--blas-threads`` gives numpy's OpenBLAS more threads than PyTorch's one (with
``--gemm openblas``), to see whether the products alone scaling with threads is enough.

Usage (prints one line per row count and writes benchmarks/results/<machine>/stepper_rows.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving/stepper_rows.py --gemm openblas --blas-threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from slipstream.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path, write_json  # noqa: E402


def main() -> None:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gemm", default="auto", choices=["auto", "torch", "openblas", "onednn"])
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    ap.add_argument("--blas-threads", type=int, help="numpy's BLAS threads (default: --threads)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", type=Path, default=result_path("stepper_rows.json"))
    args = ap.parse_args()

    # open_engine: the variant's own settings (a cast's compute dtype) apply
    engine = open_engine(args.model, engine="transformers", threads=args.threads, gemm=args.gemm)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    params = SamplingParams(max_tokens=10_000, ignore_eos=True)
    steps = {}
    for rows in args.rows:
        stepper = engine.stepper()
        for i in range(rows):
            stepper.add(i, list(range(100 + i, 170 + i)), params)
        stepper.step()  # prefill
        times = []
        for _ in range(15):
            start = time.perf_counter()
            stepper.step()
            times.append(time.perf_counter() - start)
        steps[rows] = float(np.median(times[3:]))
        print(f"{rows} rows: decode step {steps[rows] * 1e3:.1f} ms ({steps[rows] / steps[args.rows[0]]:.2f}x)", flush=True)
    record = {"machine": describe_machine(), "model": args.model, "engine": engine.info().details,
              "threads": args.threads, "blas_threads": args.blas_threads or args.threads, "step_s": steps}
    write_json(args.out, record)


if __name__ == "__main__":
    main()
