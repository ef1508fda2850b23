"""Early exit on SmolLM2-135M-Instruct: how far is each late exit from the full model, and what do skipping the
last 1 and 2 decoder layers cost in perplexity and gain in decode speed?

- The KL curve: ``early-exit`` measures, on WikiText-2 *validation* (8 x 512 tokens, its defaults), the mean KL
  of the next-token distribution of every exit from the last ``--curve`` layers on against the full model's; the
  curve is read back from the variants' facts, with the exit ``max_kl`` would choose for a few bounds.
- The variants: ``early-exit -o layers=N-1`` and ``layers=N-2`` (transformers, float32), compared with the
  original by ``slipstream.comparison.compare``: WikiText-2 *test* perplexity (first --eval-tokens tokens,
  window 1024, stride 512) and KL against the original on that text, then batch-1 decode tokens/s, the rounds
  interleaved, each speed-up the median of the per-round ratios. A 1% perplexity gate is checked.

Usage (writes benchmarks/results/<machine>/early_exit.json; about 8 minutes on 2 idle cores, the variants and
perplexities kept in the store for a rerun):
    SLIPSTREAM_HOME=/tmp/ee-home .venv/bin/python benchmarks/techniques/early_exit.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import result_path, write_json  # noqa: E402

MODEL = "smollm2-135m"
BOUNDS = (0.01, 0.05, 0.1, 0.2, 0.5)  # max_kl values whose choice is reported from the curve
GATE = 0.01  # the search's default: perplexity at most 1% above the original's


def make(store, skips: list[int], curve: int) -> tuple[int, list]:
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize

    if not store.exists(MODEL):
        import_model(MODEL, MODEL, store=store)
    n = json.loads((store.get(MODEL).path / "config.json").read_text())["num_hidden_layers"]
    variants = []
    for skip in skips:
        options = {"layers": n - skip, "min_layers": n - curve}
        name = f"{MODEL}-exit-l{n - skip}"
        start = time.time()
        variant = store.get(name) if store.exists(name) else optimize(MODEL, "early-exit", options, name=name,
                                                                       store=store)
        print(f"{name}: {time.time() - start:.0f} s", flush=True)
        variants.append(variant)
    return n, variants


def measure(args: argparse.Namespace) -> dict:
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.machine import describe_machine
    from slipstream.store import Store
    from slipstream.store.manifest import Manifest

    store = Store()
    started = time.time()
    n, variants = make(store, args.skip, args.curve)
    facts = [Manifest.read(v.path).extra["facts"] for v in variants]
    curve = {int(k): v for k, v in facts[0]["kl_by_exit"].items()}
    comparison = compare(MODEL, [v.name for v in variants],
                         eval_settings=EvalSettings(window=1024, stride=512, max_tokens=args.eval_tokens),
                         bench_settings=BenchSettings(output_tokens=64, batch_sizes=(1,), repeats=args.repeats,
                                                      threads=args.threads),
                         rounds=args.rounds, store=store)
    rows = []
    base_parameters = store.get(MODEL).parameters
    for row in comparison.rows:
        exits = {v.name: f["exit"]["layers"] for v, f in zip(variants, facts)}
        layers = exits.get(row.name, n)
        rows.append({"variant": row.name, "layers": layers, "skipped": n - layers,
                     "calibration_kl": curve.get(layers), "parameters": store.get(row.name).parameters,
                     "size_bytes": row.size_bytes, "perplexity": round(row.perplexity, 4),
                     "perplexity_change": round(row.perplexity_change, 5), "kl_mean": row.kl_mean,
                     "top1_agreement": row.top1_agreement,
                     # the speed-up if decode time followed the weights each token reads (the LM head included)
                     "weights_bound": round(base_parameters / store.get(row.name).parameters, 4),
                     "decode_tokens_per_s": round(row.decode_tokens_per_s, 2), "speedup": round(row.speedup, 4),
                     "speedup_range": [round(x, 4) for x in row.speedup_range],
                     "passes_1pct_gate": row.perplexity_change <= GATE})
    choices = {f"{b:g}": min((k for k, v in curve.items() if k < n and v <= b), default=None) for b in BOUNDS}
    return {"machine": describe_machine(), "load_average_at_end": list(os.getloadavg()), "model": MODEL,
            "layers": n, "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
            "eval_tokens": args.eval_tokens, "calibration": facts[0]["calibration"],
            "kl_by_exit": {str(k): v for k, v in sorted(curve.items())}, "max_kl_choice": choices,
            "rows": rows, "comparison": comparison.to_dict(), "seconds": round(time.time() - started)}


def markdown(result: dict) -> str:
    n = result["layers"]
    lines = ["| exit after | KL on calibration text |", "|---|---|"]
    lines += [f"| {k} of {n} | {v:.4f} |" for k, v in result["kl_by_exit"].items()]
    lines += ["", "max_kl -> exit: " + ", ".join(f"{b}: {k if k else 'none (refused)'}"
                                                for b, k in result["max_kl_choice"].items()), "",
              ("| variant | layers | WikiText-2 ppl | change | KL (test text) | top-1 agreement | decode tok/s "
               "| speed-up (weights bound) | 1% gate |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        kl = "—" if r["kl_mean"] is None else f"{r['kl_mean']:.4f}"
        top1 = "—" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}"
        lines.append(f"| {r['variant']} | {r['layers']} | {r['perplexity']:.2f} | {r['perplexity_change']:+.2%} | {kl} "
                     f"| {top1} | {r['decode_tokens_per_s']:.1f} | {r['speedup']:.3f} ({r['speedup_range'][0]:.3f}-"
                     f"{r['speedup_range'][1]:.3f}; {r['weights_bound']:.3f}) "
                     f"| {'pass' if r['passes_1pct_gate'] else 'FAIL'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip", type=int, nargs="+", default=[1, 2], help="decoder layers to skip, one variant each")
    ap.add_argument("--curve", type=int, default=6, help="the KL curve covers exits from the last this many layers on")
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=result_path("early_exit.json"))
    args = ap.parse_args()
    result = measure(args)
    write_json(args.out, result)
    print(markdown(result))
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
