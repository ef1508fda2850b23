"""OpenVINO on SmolLM2-135M-Instruct: do its float32 greedy tokens equal transformers', and what do NNCF's int8
and int4 weights cost in perplexity and gain in decode speed, beside ONNX Runtime dynamic int8 and the
transformers float32 original?

- The variants: ``openvino -q float32``, ``-q int8_asym`` and ``-q int4_asym -o ratio=0.8`` (groups of 128, which
  SmolLM2's 576-wide inputs take as 64), and ``onnx -q int8_dynamic`` (its defaults), each made through
  ``slipstream.optimize`` and timed.
- Greedy tokens: the float32 OpenVINO variant and the original on 4 WikiText-2 openings and 8 chat prompts,
  ``--greedy-tokens`` new tokens each, one prompt at a time; the prompts whose tokens differ are counted.
- ``slipstream.comparison.compare`` against the original: WikiText-2 *test* perplexity (first --eval-tokens
  tokens, window 1024, stride 512) and KL against the original on that text, then batch-1 decode tokens/s
  (128-token prompt, 64 new tokens) at --threads engine threads, the rounds interleaved, each speed-up the median
  of the per-round ratios.

Usage (writes benchmarks/results/<machine>/openvino_variants.json; about 10 minutes on 2 cores):
    SLIPSTREAM_HOME=/tmp/ov-home .venv/bin/python benchmarks/techniques/openvino_variants.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import first_divergence, greedy_prompts, result_path, write_json  # noqa: E402

MODEL = "smollm2-135m"
VARIANTS = (  # (name suffix, technique, options)
    ("ov-fp32", "openvino", {"quantization": "float32"}),
    ("ov-int8-asym", "openvino", {"quantization": "int8_asym"}),
    ("ov-int4-asym-g128-r0.8", "openvino", {"quantization": "int4_asym", "group_size": 128, "ratio": 0.8}),
    ("onnx-int8-dynamic", "onnx", {"quantization": "int8_dynamic"}),
)
GATE = 0.01  # the search's default: perplexity at most 1% above the original's


def make(store) -> dict[str, dict]:
    """Each variant's name -> how long it took to make and its facts (made once; kept in the store)."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store.manifest import Manifest

    if not store.exists(MODEL):
        import_model(MODEL, MODEL, store=store)
    made = {}
    for suffix, technique, options in VARIANTS:
        name = f"{MODEL}-{suffix}"
        if not store.exists(name):
            optimize(MODEL, technique, options, name=name, store=store)
        facts = Manifest.read(store.get(name).path).extra["facts"]
        made[name] = {"technique": technique, "options": options, "seconds": facts.get("seconds"),
                      "compressed_matrices": facts.get("compressed_matrices")}
        print(f"{name}: made in {facts.get('seconds', 0):.0f} s", flush=True)
    return made


def greedy(store, threads: int, tokens: int) -> dict:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    original = open_engine(MODEL, store=store, threads=threads)
    ov = open_engine(f"{MODEL}-ov-fp32", store=store, threads=threads)
    prompts = greedy_prompts(original.tokenizer, 4)
    params = SamplingParams(max_tokens=tokens)
    differ = []
    for i, prompt in enumerate(prompts):
        a = original.generate([prompt], params)[0].token_ids
        b = ov.generate([prompt], params)[0].token_ids
        if a != b:
            differ.append({"prompt": i, "first_divergence": first_divergence(a, b)})
    for engine in (original, ov):
        engine.close()
    return {"prompts": len(prompts), "new_tokens": tokens, "identical": len(prompts) - len(differ), "differ": differ}


def measure(args: argparse.Namespace) -> dict:
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.extras import version_of
    from slipstream.machine import describe_machine
    from slipstream.store import Store

    store = Store()
    started = time.time()
    made = make(store)
    agreement = greedy(store, args.threads, args.greedy_tokens)
    comparison = compare(MODEL, list(made),
                         eval_settings=EvalSettings(window=1024, stride=512, max_tokens=args.eval_tokens),
                         bench_settings=BenchSettings(output_tokens=64, batch_sizes=(1,), repeats=args.repeats,
                                                      threads=args.threads),
                         rounds=args.rounds, store=store)
    rows = [{"variant": r.name, "engine": r.engine, "compute_type": r.compute_type, "size_bytes": r.size_bytes,
             "perplexity": round(r.perplexity, 4), "perplexity_change": round(r.perplexity_change, 5),
             "kl_mean": r.kl_mean, "top1_agreement": r.top1_agreement,
             "decode_tokens_per_s": round(r.decode_tokens_per_s, 2), "speedup": round(r.speedup, 4),
             "speedup_range": [round(x, 4) for x in r.speedup_range], "peak_rss_bytes": r.peak_rss_bytes,
             "passes_1pct_gate": r.perplexity_change <= GATE, **made.get(r.name, {})}
            for r in comparison.rows]
    return {"machine": describe_machine(), "load_average_at_end": list(os.getloadavg()), "model": MODEL,
            "versions": {k: version_of(k) for k in ("openvino", "nncf", "onnxruntime", "torch")},
            "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "eval_tokens": args.eval_tokens,
            "greedy_float32": agreement, "rows": rows, "comparison": comparison.to_dict(),
            "seconds": round(time.time() - started)}


def markdown(result: dict) -> str:
    g = result["greedy_float32"]
    lines = [f"OpenVINO float32 greedy tokens equal transformers' on {g['identical']} of {g['prompts']} prompts "
             f"({g['new_tokens']} new tokens each)", "",
             "| variant | engine | size MB | WikiText-2 ppl | change | KL | decode tok/s | speed-up | 1% gate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        kl = "—" if r["kl_mean"] is None else f"{r['kl_mean']:.4f}"
        lines.append(f"| {r['variant']} | {r['engine']} | {r['size_bytes'] / 1e6:.0f} | {r['perplexity']:.3f} | "
                     f"{r['perplexity_change']:+.2%} | {kl} | {r['decode_tokens_per_s']:.1f} | {r['speedup']:.2f}x "
                     f"({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}) | "
                     f"{'pass' if r['passes_1pct_gate'] else 'FAIL'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=result_path("openvino_variants.json"))
    args = ap.parse_args()
    result = measure(args)
    write_json(args.out, result)
    print(markdown(result))
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
