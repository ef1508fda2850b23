"""Foundation benchmark (issue 2): SmolLM2-135M-Instruct and its CTranslate2 variants.

Measures, in one run on one machine:
  1. greedy agreement: CTranslate2 float32 vs transformers fp32 on the same prompts;
  2. WikiText-2 test perplexity, KL and top-1 agreement vs the original (sliding window 1024/512);
  3. decode speed at batch 1 and 8, interleaved over rounds (A B C D E, A B C D E, ...), at the
     thread counts given, with every ratio taken within a round.

Usage (writes benchmarks/results/<machine>/foundation-<threads>.json and prints markdown):
    SLIPSTREAM_HOME=/tmp/bench-home .venv/bin/python benchmarks/techniques/foundation.py --eval-tokens 32768 --rounds 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slipstream.benchmark.run import BenchSettings
from slipstream.comparison import compare
from slipstream.demo import MODEL, RECIPES
from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.evaluation.run import EvalSettings
from slipstream.machine import describe_machine
from slipstream.models.intake import import_model
from slipstream.pipeline import build
from slipstream.store import Store
from slipstream.techniques.registry import make_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import CHAT, first_divergence, greedy_prompts, results_dir  # noqa: E402



def greedy_agreement(store: Store, variant: str, max_tokens: int = 64) -> dict:
    reference = open_engine(MODEL, store=store)
    candidate = open_engine(variant, store=store)
    tok = reference.tokenizer
    prompts = greedy_prompts(tok, 16)
    params = SamplingParams(max_tokens=max_tokens)
    a, b = reference.generate(prompts, params), candidate.generate(prompts, params)
    first_diff = [first_divergence(x.token_ids, y.token_ids) for x, y in zip(a, b)]
    same = sum(d is None for d in first_diff)
    return {"prompts": len(prompts), "identical": same, "max_tokens": max_tokens,
            "first_divergence": [d for d in first_diff if d is not None],
            "sample": {"prompt": CHAT[0], "transformers": a[16].text, "ctranslate2": b[16].text}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()

    store = Store()
    if not store.exists(MODEL):
        import_model(MODEL, store=store)
    names = [build(MODEL, [make_config(t, o) for t, o in recipe], store=store).name for recipe in RECIPES]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    agreement = greedy_agreement(store, f"{MODEL}-ct2-float32")
    print(f"greedy agreement, CTranslate2 float32 vs transformers fp32: {agreement['identical']}/"
          f"{agreement['prompts']} prompts identical over {agreement['max_tokens']} tokens")
    for threads in args.threads:
        result = compare(
            MODEL, names,
            eval_settings=EvalSettings(window=1024, stride=512, max_tokens=args.eval_tokens),
            bench_settings=BenchSettings(output_tokens=64, batch_sizes=(1, 8), repeats=args.repeats, threads=threads),
            rounds=args.rounds, store=store,
        )
        record = {"machine": describe_machine(), "threads": threads, "greedy_agreement": agreement,
                  "comparison": result.to_dict(), "seconds": round(time.time() - started)}
        (args.out / f"foundation-threads{threads}.json").write_text(json.dumps(record, indent=2))
        print(f"\n### {threads} thread(s) per engine, {args.rounds} interleaved rounds\n")
        print(result.to_markdown())


if __name__ == "__main__":
    main()
