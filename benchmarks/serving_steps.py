"""Where a serving step's time goes, engine only (no server): the decode step of a continuous batch at
the context lengths a serving run reaches, and the cost of prefilling one newcomer (issue 7).

The serving benchmark's time per output token at 16 streams is a decode step of 16 rows plus, every
few steps, the prefill of an arriving prompt. ``benchmarks/stepper_rows.py`` times decode steps right
after 70-token prompts; here rows also decode ``--decoded`` tokens first, so every step reads keys and
values of about 70 + ``--decoded`` columns per row, as late in a serving run's 128-token requests;
single prompts of several lengths are prefilled alone; and one newcomer joins the largest batch, its
prompt fused into the decode step's forward pass (the default) or prefilled in a pass of its own
(``SLIPSTREAM_FUSED_PREFILL=0``): what an arrival costs the rows already running.

Usage (prints and writes benchmarks/results/serving_steps.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/serving_steps.py \\
        --model smollm2-135m-w8a8-sq0.8-gptq --rows 1 16 --decoded 130
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from slipstream.machine import describe_machine


def main() -> None:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gemm", default="auto", choices=["auto", "torch", "openblas", "onednn"])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--decoded", type=int, default=130, help="tokens each row decodes before the timed steps")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 30, 70, 100], help="prefill lengths")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serving_steps.json")
    args = ap.parse_args()

    engine = open_engine(args.model, engine="transformers", threads=1, gemm=args.gemm)
    params = SamplingParams(max_tokens=100_000, ignore_eos=True)
    decode: dict[int, float] = {}
    def running(rows: int, fused: bool = True):
        stepper = engine.stepper(fused_prefill=fused)
        for i in range(rows):
            stepper.add(i, list(range(100 + i, 170 + i)), params)
        stepper.step()  # prefill
        for _ in range(args.decoded):
            stepper.step()
        return stepper

    for rows in args.rows:
        stepper = running(rows)
        times = []
        for _ in range(8):
            start = time.perf_counter()
            stepper.step()
            times.append(time.perf_counter() - start)
        decode[rows] = float(np.median(times))
        print(f"{rows} rows at {70 + args.decoded} columns: decode step {decode[rows] * 1e3:.1f} ms "
              f"({decode[rows] / decode[args.rows[0]]:.2f}x)", flush=True)
    prefill: dict[int, float] = {}
    for n in args.prompts:
        best = float("inf")
        for _ in range(4):
            stepper = engine.stepper()
            stepper.add(0, list(range(200, 200 + n)), params)
            start = time.perf_counter()
            stepper.step()
            best = min(best, time.perf_counter() - start)
        prefill[n] = best
        print(f"prefill of one {n}-token prompt: {best * 1e3:.1f} ms", flush=True)
    joined: dict[str, dict[int, float]] = {}
    rows = max(args.rows)
    for fused in (True, False):
        stepper = running(rows, fused)
        label = "fused" if fused else "separate"
        joined[label] = {}
        for n in args.prompts:
            times = []
            for trial in range(5):
                stepper.add(1000 + trial, list(range(300 + trial, 300 + trial + n)), params)
                start = time.perf_counter()
                stepper.step()
                times.append(time.perf_counter() - start)
                stepper.remove(1000 + trial)
            joined[label][n] = float(np.median(times))
            print(f"{rows} rows + one {n}-token newcomer, {label}: {joined[label][n] * 1e3:.1f} ms "
                  f"(decode step alone {decode[rows] * 1e3:.1f})", flush=True)
    record = {"machine": describe_machine(), "model": args.model, "engine": engine.info().details,
              "columns": 70 + args.decoded, "decode_step_s": decode, "prefill_s": prefill,
              "join_step_s": joined, "join_rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
