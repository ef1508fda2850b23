"""Where a serving step's time goes, engine only (no server): the decode step of a continuous batch at
the context lengths a serving run reaches, and the cost of prefilling one newcomer (issue 7).

The serving benchmark's time per output token at 16 streams is a decode step of 16 rows plus, every
few steps, the prefill of an arriving prompt. ``benchmarks/serving/stepper_rows.py`` times decode steps right
after 70-token prompts; here rows also decode ``--decoded`` tokens first, so every step reads keys and
values of about 70 + ``--decoded`` columns per row, as late in a serving run's 128-token requests;
single prompts of several lengths are prefilled alone; and one newcomer joins the largest batch, its
prompt fused into the decode step's forward pass (the default) or prefilled in a pass of its own
(engine option ``fused_prefill=off``): what an arrival costs the rows already running.

Usage (prints and writes benchmarks/results/<machine>/serving_steps.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/serving/serving_steps.py \\
        --model smollm2-135m-w8a8-sq0.8-gptq-keep-none --rows 1 16 --decoded 130
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
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--decoded", type=int, default=130, help="tokens each row decodes before the timed steps")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 30, 70, 100], help="prefill lengths")
    ap.add_argument("--replay", type=int, default=0, metavar="STREAMS",
                    help="also replay the serving benchmark's workload on the stepper alone: STREAMS closed-loop "
                         "streams of MT-bench chat prompts, 128 greedy tokens each, prefix reuse on")
    ap.add_argument("--out", type=Path, default=result_path("serving_steps.json"))
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
    if args.replay:
        replayed = replay(engine, args.replay)
        print(f"replay at {args.replay} streams: {replayed['tokens_per_s']:.1f} tokens/s, mean step "
              f"{replayed['mean_step_s'] * 1e3:.1f} ms, per-request TPOT p50 / p95 "
              f"{replayed['tpot_s']['p50'] * 1e3:.1f} / {replayed['tpot_s']['p95'] * 1e3:.1f} ms", flush=True)
    record = {"machine": describe_machine(), "model": args.model, "engine": engine.info().details,
              "columns": 70 + args.decoded, "decode_step_s": decode, "prefill_s": prefill,
              "join_step_s": joined, "join_rows": rows}
    if args.replay:
        record["replay"] = replayed
    write_json(args.out, record)


def replay(engine, streams: int, requests: int = 0, max_tokens: int = 128, kv_cache_dtype: str | None = None) -> dict:
    """The serving benchmark's 16-stream level without the server: each stream submits its next MT-bench
    chat prompt when its last one ends; TPOT per request as the benchmark measures it (first to last token)."""
    from slipstream.benchmark.workloads import load_prompts
    from slipstream.engines.protocol import SamplingParams

    prompts = [engine.tokenizer.chat([{"role": "user", "content": p}]) for p in load_prompts("mt-bench", 80)]
    requests = requests or 2 * streams
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    stepper = engine.stepper(prefix_cache_tokens=65536, kv_cache_dtype=kv_cache_dtype)
    started, first, last, count = {}, {}, {}, {}
    next_id, steps, step_time = 0, 0, 0.0

    def submit() -> None:
        nonlocal next_id
        stepper.add(next_id, prompts[next_id % len(prompts)], params)
        started[next_id], count[next_id] = time.perf_counter(), 0
        next_id += 1

    for _ in range(min(streams, requests)):
        submit()
    begin = time.perf_counter()
    while stepper.active:
        t0 = time.perf_counter()
        outs = stepper.step()
        now = time.perf_counter()
        steps, step_time = steps + 1, step_time + (now - t0)
        for o in outs:
            if o.token is not None:
                first.setdefault(o.seq_id, now)
                last[o.seq_id] = now
                count[o.seq_id] += 1
            if o.finish_reason and next_id < requests:
                submit()
    wall = time.perf_counter() - begin
    tpot = [(last[i] - first[i]) / (count[i] - 1) for i in count if count[i] > 1]
    return {"streams": streams, "requests": requests, "tokens_per_s": sum(count.values()) / wall,
            "mean_step_s": step_time / steps, "steps": steps,
            "tpot_s": {"p50": float(np.percentile(tpot, 50)), "p95": float(np.percentile(tpot, 95))}}


if __name__ == "__main__":
    main()
