"""Prompt-lookup decoding on SmolLM2-135M-Instruct at batch 1: does the output stay plain greedy decoding's, how
many drafts are accepted, and what does it gain, on an input-grounded workload and on chat?

- Input-grounded: 8 chat requests that ask the model to rewrite or correct a passage (WikiText-2 test paragraphs,
  80-140 words), the output drawing on the input as summarising and editing do.
- Chat: the first 8 MT-bench first turns.
Each request through the chat template, greedy, up to 128 new tokens (stopping where the model stops). Engines:
transformers (float32, the original) and llama.cpp (a Q8_0 GGUF), each plain and with `prompt_lookup` drafts of up
to 8 tokens (3-gram match), at --threads threads. Plain and lookup runs alternate per request, three rounds; the
speed-up is the median of the per-round ratios of total tokens over total seconds. Every lookup output is compared
token for token with the plain one.

With ``--rows N [M ...]``, the transformers engine's continuous batch as well: the same requests through a
stepper N rows at a time (a finished row's place taken by the next request), plain and with prompt lookup
(drafting while the batch holds at most ``prompt_lookup_max_batch`` rows, default 4), output tokens per second
over the whole set.

Usage (writes benchmarks/results/<machine>/prompt_lookup.json; about 10 minutes on 2 cores):
    SLIPSTREAM_HOME=/tmp/pl-home .venv/bin/python benchmarks/serving/prompt_lookup.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import result_path, write_json  # noqa: E402

MODEL = "smollm2-135m"
ASKS = ["Rewrite the following passage in plain English, keeping every fact:",
        "Correct any errors in the following text and return the corrected text:",
        "Copy the following passage, replacing every number with words:",
        "Summarise the following passage, quoting its key sentences:"]


def grounded(n: int) -> list[str]:
    from slipstream.evaluation.data import text_set

    passages = [p.strip() for p in text_set("wikitext2").split("\n") if 80 <= len(p.split()) <= 140]
    return [f"{ASKS[i % len(ASKS)]}\n\n{passages[i * 7]}" for i in range(n)]


def chat(n: int) -> list[str]:
    from slipstream.benchmark.workloads import load_prompts

    return load_prompts("mt-bench")[:n]


def run(engine, prompts, params) -> tuple[list[list[int]], float, int]:
    t = time.perf_counter()
    outs = [engine.generate([p], params)[0].token_ids for p in prompts]
    return outs, time.perf_counter() - t, sum(map(len, outs))


def stepped(engine, prompts, params, rows: int) -> tuple[list[list[int]], float, int]:
    """The prompts through ``engine``'s continuous batch, ``rows`` at a time: each one's tokens, seconds, tokens."""
    stepper = engine.stepper()
    out = [[] for _ in prompts]
    queue = list(range(len(prompts)))
    t = time.perf_counter()
    while queue or stepper.active:
        while queue and stepper.active < rows:
            i = queue.pop(0)
            stepper.add(i, prompts[i], params)
        for o in stepper.step():
            if o.token is not None:
                out[o.seq_id].append(o.token)
    return out, time.perf_counter() - t, sum(map(len, out))


def rounds_of(measure, plain, lookup, rounds: int) -> dict:
    """``measure(engine)`` (outputs, seconds, tokens) on the plain engine and the lookup one, alternating, for
    ``rounds`` rounds: whether the outputs matched, the median speeds and speed-up, and the drafts' statistics."""
    lookup.lookup_stats.__init__()
    runs, identical = [], True
    for _ in range(rounds):
        a, ta, na = measure(plain)
        b, tb, nb = measure(lookup)
        identical &= a == b
        runs.append({"plain_tokens_per_s": na / ta, "lookup_tokens_per_s": nb / tb,
                     "speedup": (nb / tb) / (na / ta), "tokens": na})
    stats = lookup.lookup_stats.to_dict()
    return {"identical": identical, "speedup": statistics.median(r["speedup"] for r in runs),
            "plain_tokens_per_s": statistics.median(r["plain_tokens_per_s"] for r in runs),
            "lookup_tokens_per_s": statistics.median(r["lookup_tokens_per_s"] for r in runs),
            "acceptance_rate": stats["acceptance_rate"], "tokens_per_step": stats["tokens_per_step"],
            "rounds": runs, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--draft", type=int, default=8)
    ap.add_argument("--rows", type=int, nargs="*", default=[], help="continuous batches of N rows (transformers)")
    ap.add_argument("--skip-batch-1", action="store_true", help="only the continuous batches")
    ap.add_argument("--out", type=Path, default=result_path("prompt_lookup.json"))
    args = ap.parse_args()

    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.evaluation.generation import prompt_ids
    from slipstream.machine import describe_machine
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store()
    if not store.exists(MODEL):
        import_model(MODEL, store=store)
    gguf = f"{MODEL}-gguf-q8_0"
    if not store.exists(gguf):
        optimize(MODEL, "gguf", {"quantization": "Q8_0"}, name=gguf, store=store)
    params = SamplingParams(max_tokens=args.max_tokens)
    record = {"machine": describe_machine(), "threads": args.threads, "rounds": args.rounds, "draft": args.draft,
              "max_tokens": args.max_tokens, "results": {}}
    for label, variant in () if args.skip_batch_1 else (("transformers float32", MODEL), ("llama.cpp Q8_0", gguf)):
        plain = open_engine(variant, store=store, threads=args.threads)
        lookup = open_engine(variant, store=store, threads=args.threads, prompt_lookup=args.draft)
        for workload, texts in (("input-grounded", grounded(args.requests)), ("chat", chat(args.requests))):
            prompts = [prompt_ids(plain, t, chat=None) for t in texts]
            run(plain, prompts[:1], params.with_(max_tokens=8))  # warm-up
            run(lookup, prompts[:1], params.with_(max_tokens=8))
            row = rounds_of(lambda engine: run(engine, prompts, params), plain, lookup, args.rounds)
            record["results"][f"{label} / {workload}"] = row
            print(f"{label:22s} {workload:15s} identical={row['identical']} {row['plain_tokens_per_s']:6.1f} -> "
                  f"{row['lookup_tokens_per_s']:6.1f} tok/s ({row['speedup']:.2f}x), acceptance "
                  f"{row['acceptance_rate']:.2f}, {row['tokens_per_step']} tokens per pass", flush=True)
            write_json(args.out, record)
        plain.close()
        lookup.close()
    if args.rows:
        record["continuous"] = {}
        plain = open_engine(MODEL, store=store, threads=args.threads)
        lookup = open_engine(MODEL, store=store, threads=args.threads, prompt_lookup=args.draft)
        for workload, texts in (("input-grounded", grounded(args.requests)), ("chat", chat(args.requests))):
            prompts = [prompt_ids(plain, t, chat=None) for t in texts]
            for rows in args.rows:
                stepped(plain, prompts[:2], params.with_(max_tokens=4), rows)  # warm-up
                stepped(lookup, prompts[:2], params.with_(max_tokens=4), rows)
                row = rounds_of(lambda engine: stepped(engine, prompts, params, rows), plain, lookup, args.rounds)
                record["continuous"][f"{workload} / {rows} rows"] = row
                print(f"continuous batch {rows:2d} rows {workload:15s} identical={row['identical']} "
                      f"{row['plain_tokens_per_s']:6.1f} -> {row['lookup_tokens_per_s']:6.1f} tok/s "
                      f"({row['speedup']:.2f}x), acceptance {row['acceptance_rate']:.2f}", flush=True)
                write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
