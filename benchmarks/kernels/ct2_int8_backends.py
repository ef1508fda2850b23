"""CTranslate2 int8 on this CPU through each of its backends: accuracy and decode speed.

CTranslate2 multiplies int8 with oneDNN on non-Intel CPUs (its default there) and with MKL on Intel
(``CT2_USE_MKL`` picks). Without VNNI, oneDNN's x86 int8 kernels add uint8 x int8 products in 16
bits, which saturate; this script measures what that costs on a real model: WikiText-2 perplexity
change, KL and top-1 agreement against the transformers fp32 original, and batch-1 decode tokens/s,
each backend in its own process (the variable is read when CTranslate2 loads).

Usage (writes benchmarks/results/<machine>/ct2_int8_backends.json):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/kernels/ct2_int8_backends.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from slipstream.machine import describe_machine, has_int8_dot_product

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path, write_json  # noqa: E402


def measure(variant: str, model: str, tokens: int) -> dict:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.evaluation.run import EvalSettings, evaluate_many
    from slipstream.store import Store

    store = Store()
    settings = EvalSettings(task="wikitext2", window=1024, stride=512, max_tokens=tokens, threads=1)
    report = evaluate_many([variant], reference=model, settings=settings, store=store, use_cache=False)[0]
    engine = open_engine(variant, store=store, threads=1)
    prompt = list(range(100, 228))
    params = SamplingParams(max_tokens=64, ignore_eos=True)
    engine.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        engine.generate([prompt], params)
        runs.append(64 / (time.perf_counter() - start))
    keep = ("perplexity", "perplexity_ratio", "perplexity_ratio_ci95", "kl_mean", "top1_agreement", "tokens")
    return {"metrics": {k: report.metrics.get(k) for k in keep}, "engine": report.metrics.get("engine"),
            "decode_tok_s_b1": sorted(runs)[1], "decode_runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure in this process
    ap.add_argument("--out", type=Path, default=result_path("ct2_int8_backends.json"))
    args = ap.parse_args()
    variant = f"{args.model}-ct2-int8"
    if args.one:
        print(json.dumps(measure(variant, args.model, args.eval_tokens)))
        return
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store()
    if not store.exists(variant):
        optimize(args.model, "ctranslate2", {"quantization": "int8"}, name=variant, store=store)
    record = {"machine": describe_machine(), "vnni": has_int8_dot_product(), "model": args.model,
              "eval_tokens": args.eval_tokens, "backends": {}}
    for label, use_mkl in (("default (oneDNN off Intel)", None), ("CT2_USE_MKL=1", "1")):
        env = dict(os.environ)
        env.pop("CT2_USE_MKL", None)
        if use_mkl:
            env["CT2_USE_MKL"] = use_mkl
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--eval-tokens", str(args.eval_tokens),
                              "--one", "1"], env=env, capture_output=True, text=True, check=True).stdout
        record["backends"][label] = json.loads(out.strip().splitlines()[-1])
        print(label, record["backends"][label], flush=True)
    write_json(args.out, record)


if __name__ == "__main__":
    main()
