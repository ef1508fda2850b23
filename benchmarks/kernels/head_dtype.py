"""A bfloat16 output head on the CPU (``head_dtype="bfloat16"``, :func:`slipstream.engines.torch.kernels.blas.use_bfloat16_head`):
what it costs in accuracy and what it saves in a continuous batch's decode step (issue 7).

Accuracy: WikiText-2 perplexity and KL to the original, with the variant's head in its own dtype and in
bfloat16, every engine scoring the same windows in one process (the same method as ``slipstream
evaluate``, which cannot give the two heads of one variant side by side). Speed: the stepper's decode
step at 1 and 16 rows (70-token prompts, then ``--decoded`` tokens), each head, interleaved.

Usage (prints and writes benchmarks/results/<machine>/head_dtype.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/kernels/head_dtype.py \\
        --model smollm2-135m-w8a8-sq0.8-gptq-keep-none --reference smollm2-135m --max-tokens 8192
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


def decode_step(engine, rows: int, decoded: int, kv_cache_dtype: str | None) -> float:
    from slipstream.engines.protocol import SamplingParams

    stepper = engine.stepper(kv_cache_dtype=kv_cache_dtype)
    for i in range(rows):
        stepper.add(i, list(range(100 + i, 170 + i)), SamplingParams(max_tokens=100_000, ignore_eos=True))
    for _ in range(decoded + 1):
        stepper.step()
    times = []
    for _ in range(9):
        start = time.perf_counter()
        stepper.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation.perplexity import (DivergenceAccumulator, NLLAccumulator, paired_change,
                                                  plan_windows, scored_rows)
    from slipstream.evaluation.tasks import get_task

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-w8a8-sq0.8-gptq-keep-none")
    ap.add_argument("--reference", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--decoded", type=int, default=80)
    ap.add_argument("--kv-cache-dtype", default=None, help="the steppers' cache dtype (default: the model's)")
    ap.add_argument("--out", type=Path, default=result_path("head_dtype.json"))
    args = ap.parse_args()

    ref = open_engine(args.reference, engine="transformers", threads=1)
    heads = {"model": open_engine(args.model, engine="transformers", threads=1),
             "bfloat16": open_engine(args.model, engine="transformers", threads=1, head_dtype="bfloat16")}
    assert heads["bfloat16"].head_dtype == "bfloat16"
    text = get_task("wikitext2").load()
    prefix = ref.tokenizer.bos_prefix()
    tokens = ref.tokenizer.encode(text, add_special_tokens=False)[: args.max_tokens]
    windows = plan_windows(len(tokens), args.window - len(prefix), args.stride)
    ref_nll = NLLAccumulator()
    nll = {k: NLLAccumulator() for k in heads}
    div = {k: DivergenceAccumulator() for k in heads}
    for w in windows:
        ids = tokens[w.begin: w.end]
        ref_rows, ref_lp = scored_rows(w, ref.logprobs([prefix + ids])[0][len(prefix):], ids)
        ref_nll.add(ref_lp)
        for k, engine in heads.items():
            rows, lp = scored_rows(w, engine.logprobs([prefix + ids])[0][len(prefix):], ids)
            nll[k].add(lp)
            div[k].add(ref_rows, rows)
    accuracy = {"reference": ref_nll.result()}
    for k in heads:
        accuracy[k] = nll[k].result() | div[k].result() | paired_change(nll[k], ref_nll)
        print(f"{k} head: perplexity {accuracy[k]['perplexity']:.3f} (original {accuracy['reference']['perplexity']:.3f}), "
              f"KL {accuracy[k]['kl_mean']:.4f}, top-1 {accuracy[k]['top1_agreement']:.4f}", flush=True)
    speed: dict[str, dict[int, list[float]]] = {k: {1: [], 16: []} for k in heads}
    for _ in range(2):  # interleaved rounds
        for rows in (1, 16):
            for k, engine in heads.items():
                speed[k][rows].append(decode_step(engine, rows, args.decoded, args.kv_cache_dtype))
    steps = {k: {rows: float(np.median(v)) for rows, v in by_rows.items()} for k, by_rows in speed.items()}
    for k in heads:
        print(f"{k} head: decode step {steps[k][1] * 1e3:.1f} ms at 1 row, {steps[k][16] * 1e3:.1f} ms at 16 "
              f"({steps[k][16] / steps[k][1]:.2f}x)", flush=True)
    record = {"machine": describe_machine(), "model": args.model, "reference": args.reference,
              "max_tokens": args.max_tokens, "window": args.window, "stride": args.stride,
              "kv_cache_dtype": args.kv_cache_dtype, "columns": 70 + args.decoded,
              "engines": {k: e.info().details for k, e in heads.items()}, "accuracy": accuracy, "decode_step_s": steps}
    write_json(args.out, record)


if __name__ == "__main__":
    main()
