"""Turn a ``slipstream compare --json`` run of W8A8 variants into rows of the issue-3 table.

The table (``quantize_table.py``) reads llm-compressor variants run through the transformers engine's
int8 products from ``make_int8`` / ``eval_int8`` / ``speed_int8`` entries; this writes them from one
``compare`` run (perplexity and KL against the base, decode speed in rounds interleaved with the base)
and each variant's manifest in the store (size, quantization time and peak memory, and for
``keep_float="auto"`` what it chose). Greedy agreement is not part of ``compare``: those cells stay empty.

Usage:
    SLIPSTREAM_HOME=/tmp/home .venv/bin/python benchmarks/techniques/compare_to_table.py \\
        benchmarks/results/<machine>/w8a8_auto/compare-smollm2.json --only smollm2-135m-w8a8-sq0.8-gptq \
        --out benchmarks/results/<machine>/quantize_llmc-w8a8-auto.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slipstream.machine import describe_machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("compare", type=Path, help="the JSON `slipstream compare --json` printed")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--about", default="")
    ap.add_argument("--only", nargs="*", help="only these variants (default: every row but the base)")
    args = ap.parse_args()

    from slipstream.store import Store

    store = Store()
    run = json.loads(args.compare.read_text())
    base = next(r for r in run["rows"] if r["name"] == run["base"])
    out = {"about": args.about or f"from {args.compare.name}", "machine": describe_machine(),
           "make_int8": {}, "eval_int8": {"settings": run["eval_settings"], "variants": {}},
           "speed_int8": {"engine": "transformers", "threads": run["bench_settings"]["threads"], "rounds": run["rounds"],
                          "prompt_tokens": run["bench_settings"]["prompt_tokens"],
                          "output_tokens": run["bench_settings"]["output_tokens"], "variants": {}}}
    for row in run["rows"]:
        if row["name"] == run["base"] or (args.only and row["name"] not in args.only):
            continue
        facts = store.manifest(row["name"]).extra["facts"]
        made = {"size_bytes": row["size_bytes"], "seconds": facts["seconds"], "peak_rss_bytes": facts["peak_rss_bytes"]}
        if "keep_float_auto" in facts:
            made["keep_float_auto"] = facts["keep_float_auto"]["keep"]
        out["make_int8"][row["name"]] = made
        out["eval_int8"]["variants"][row["name"]] = {
            "perplexity": row["perplexity"], "perplexity_ratio": 1 + row["perplexity_change"],
            "perplexity_ci95": row["perplexity_ci95"], "kl_mean": row["kl_mean"], "top1_agreement": row["top1_agreement"]}
        out["speed_int8"]["variants"][row["name"]] = {
            "decode_tok_s_b1": round(row["decode_tokens_per_s"], 2), "speedup_b1": round(row["speedup"], 3),
            "original_decode_tok_s_b1": round(base["decode_tokens_per_s"], 2),
            "decode_tok_s_b8": round(row["batch_tokens_per_s"], 2), "speedup_b8": round(row["batch_speedup"], 3),
            "original_decode_tok_s_b8": round(base["batch_tokens_per_s"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
