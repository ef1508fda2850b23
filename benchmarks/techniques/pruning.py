"""Pruning and distillation benchmark (issue 8) on SmolLM2-135M-Instruct.

Variants (transformers checkpoints, each then converted to CTranslate2 at the unpruned model's
precision so every row runs on the same engine):
  magnitude 50%, Wanda 50%, SparseGPT 50%, SparseGPT 2:4 (unstructured: saved dense);
  structured (20% of decoder layers, 25% of MLP channels); structured + distillation (30 minutes
  budget of wall-clock CPU training on WikiText-2 *valid*).

Measured side by side with slipstream.comparison (benchmark rounds interleaved): parameters, size,
decode tokens/s at batch 1 on CTranslate2, WikiText-2 test perplexity (first --eval-tokens tokens),
and ARC-Easy accuracy (first --arc-limit questions). Then the issue's targets are checked.

Usage (two stages; `make` may run long in the background, `measure` reuses what it built):
    SLIPSTREAM_HOME=/tmp/home-prune OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/techniques/pruning.py make
    SLIPSTREAM_HOME=/tmp/home-prune nice -n 10 .venv/bin/python benchmarks/techniques/pruning.py measure \
        --eval-tokens 8192 --arc-limit 200 --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from slipstream.benchmark.run import BenchSettings
from slipstream.comparison import compare
from slipstream.evaluation.run import EvalSettings, evaluate_many
from slipstream.machine import describe_machine
from slipstream.models.intake import import_model
from slipstream.pipeline import build
from slipstream.store import Store
from slipstream.store.manifest import Manifest
from slipstream.techniques.prune.recipes import PRUNE_THEN_DISTILL, STRUCTURED
from slipstream.techniques.registry import make_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path  # noqa: E402

MODEL = "smollm2-135m"
CALIBRATION = {"samples": 32, "sequence_length": 512}
SGPT_CALIBRATION = {"samples": 16, "sequence_length": 512}  # fewer, to keep the run short on a shared machine
METHODS: dict[str, list] = {
    "magnitude 50%": [("prune-unstructured", {"method": "magnitude", "sparsity": 0.5})],
    "Wanda 50%": [("prune-unstructured", {"method": "wanda", "sparsity": 0.5} | CALIBRATION)],
    "SparseGPT 50%": [("prune-unstructured", {"method": "sparsegpt", "sparsity": 0.5} | SGPT_CALIBRATION)],
    "SparseGPT 2:4": [("prune-unstructured", {"method": "sparsegpt", "sparsity": 0.5, "structure": "2:4"}
                       | SGPT_CALIBRATION)],
    "structured": [STRUCTURED],
    "structured + distill": list(PRUNE_THEN_DISTILL),
}
ORDER = ["structured + distill", "structured", "magnitude 50%", "Wanda 50%", "SparseGPT 50%", "SparseGPT 2:4"]


def steps(recipe: list) -> list:
    return [make_config(t, o) for t, o in recipe]


def make(store: Store, precision: str, only: list[str] | None) -> dict[str, tuple[str, str]]:
    """Method -> (transformers variant, CTranslate2 variant); builds whatever is missing."""
    if not store.exists(MODEL):
        import_model(MODEL, store=store)
    made = {"unpruned": (MODEL, build(MODEL, steps([("ctranslate2", {"quantization": precision})]), store=store).name)}
    for method in ORDER:
        if only and method not in only:
            continue
        start = time.time()
        hf = build(MODEL, steps(METHODS[method]), store=store)
        ct2 = build(hf.name, steps([("ctranslate2", {"quantization": precision})]), store=store)
        made[method] = (hf.name, ct2.name)
        print(f"{method}: {hf.name} -> {ct2.name} ({time.time() - start:.0f} s)", flush=True)
    return made


def facts(store: Store, name: str) -> dict:
    return Manifest.read(store.get(name).path).extra.get("facts", {})


def eval_settings(args: argparse.Namespace) -> tuple[EvalSettings, EvalSettings]:
    return (EvalSettings(window=1024, stride=512, max_tokens=args.eval_tokens),
            EvalSettings(task="arc_easy", limit=args.arc_limit))


def evaluate_ready(store: Store, args: argparse.Namespace) -> None:
    """Score every CTranslate2 variant already built (results are cached in the store, so `measure`
    reuses them); lets evaluation start while other variants are still being made."""
    ppl, arc = eval_settings(args)
    base = f"{MODEL}-ct2-{args.precision}"
    ready = [n for m in ORDER for n in [_ct2_name(m, args.precision)] if n and store.exists(n)]
    evaluate_many(ready, reference=base, settings=ppl, store=store)  # one pass: the base runs once per window
    print(f"perplexity: {', '.join(ready)}", flush=True)
    evaluate_many([base, *ready], reference=None, settings=arc, store=store)
    print("ARC-Easy done", flush=True)


def _ct2_name(method: str, precision: str) -> str:
    name = MODEL
    for step in steps(METHODS[method]):
        name = f"{name}-{step.slug()}"
    return f"{name}-ct2-{precision}"


def measure(store: Store, args: argparse.Namespace) -> dict:
    made = {"unpruned": (MODEL, f"{MODEL}-ct2-{args.precision}")}
    for method in ORDER:  # only what `make` has finished; the rest is reported missing
        ct2 = _ct2_name(method, args.precision)
        if store.exists(ct2):
            made[method] = (store.get(ct2).parent, ct2)
    missing = [m for m in ORDER if m not in made]
    base_ct2 = made["unpruned"][1]
    order = [m for m in ORDER if m in made]
    started = time.time()
    comparison = compare(
        base_ct2, [made[m][1] for m in order],
        eval_settings=eval_settings(args)[0],
        bench_settings=BenchSettings(output_tokens=64, batch_sizes=(1,), repeats=args.repeats, threads=args.threads),
        rounds=args.rounds, store=store)
    arc = {r.variant: r.metrics for r in evaluate_many(
        [made[m][1] for m in ["unpruned", *order]], reference=None,
        settings=eval_settings(args)[1], store=store)}
    rows = {r.name: r for r in comparison.rows}
    table = []
    for method in ["unpruned", *order]:
        hf, ct2 = made[method]
        r = rows[ct2]
        f = facts(store, hf) if method != "unpruned" else {}
        last = facts(store, hf) if method == "structured + distill" else {}
        table.append({
            "method": method, "hf_variant": hf, "ct2_variant": ct2, "parameters": store.get(hf).parameters,
            "size_bytes": r.size_bytes, "size_ratio": round(r.size_ratio, 4),
            "measured_sparsity": f.get("sparsity"), "engines_note": f.get("engines"),
            "decode_tokens_per_s": round(r.decode_tokens_per_s, 2), "speedup": round(r.speedup, 3),
            "speedup_range": [round(x, 3) for x in r.speedup_range],
            "perplexity": round(r.perplexity, 4), "kl_mean": r.kl_mean,
            "arc_easy_acc": arc[ct2].get("acc"), "arc_easy_acc_norm": arc[ct2].get("acc_norm"),
            "distillation": {k: v for k, v in last.items() if k != "loss_curve"} if last else None,
        })
    by = {t["method"]: t for t in table}
    ppl = {m: by[m]["perplexity"] for m in by}
    targets = {}
    if "structured + distill" in by:
        targets["structured+distill speed-up >= 1.3x"] = {"value": by["structured + distill"]["speedup"],
                                                          "met": by["structured + distill"]["speedup"] >= 1.3}
    if "structured" in by and "structured + distill" in by:
        p0, p1, p2 = ppl["unpruned"], ppl["structured"], ppl["structured + distill"]
        recovery = (p1 - p2) / (p1 - p0) if p1 > p0 else None
        targets["distillation recovers >= half the perplexity lost"] = {
            "value": recovery, "met": recovery is not None and recovery >= 0.5}
    for method in ("Wanda 50%", "SparseGPT 50%"):
        if method in by and "magnitude 50%" in by:
            targets[f"{method} perplexity < magnitude 50%"] = {"value": [ppl[method], ppl["magnitude 50%"]],
                                                               "met": ppl[method] < ppl["magnitude 50%"]}
    return {"machine": describe_machine(), "load_average_at_end": list(os.getloadavg()), "threads": args.threads,
            "precision": args.precision, "eval_tokens": args.eval_tokens, "arc_limit": args.arc_limit,
            "rounds": args.rounds, "rows": table, "targets": targets, "missing": missing, "comparison": comparison.to_dict(),
            "seconds": round(time.time() - started)}


def markdown(result: dict) -> str:
    lines = [f"CTranslate2 {result['precision']}, {result['threads']} thread(s), batch 1, {result['rounds']} interleaved "
             f"rounds; WikiText-2 test first {result['eval_tokens']} tokens; ARC-Easy first {result['arc_limit']} questions",
             "", "| method | parameters | size MB | size × | sparsity | tok/s | speed × | WikiText-2 ppl | ARC-Easy acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in result["rows"]:
        sparsity = "—" if t["measured_sparsity"] is None else f"{t['measured_sparsity']:.1%}"
        lines.append(f"| {t['method']} | {t['parameters'] / 1e6:.1f}M | {t['size_bytes'] / 1e6:.0f} | {t['size_ratio']:.2f} "
                     f"| {sparsity} | {t['decode_tokens_per_s']:.1f} | {t['speedup']:.2f} "
                     f"({t['speedup_range'][0]:.2f}–{t['speedup_range'][1]:.2f}) | {t['perplexity']:.2f} "
                     f"| {'—' if t['arc_easy_acc'] is None else format(t['arc_easy_acc'], '.3f')} |")
    if result["missing"]:
        lines += ["", f"Not measured (not built in time): {', '.join(result['missing'])}"]
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for name, t in result["targets"].items():
        lines.append(f"| {name} | {t['value']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["make", "eval", "measure"])
    ap.add_argument("--only", nargs="*", help="make: only these methods")
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--arc-limit", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=result_path("pruning.json"))
    args = ap.parse_args()
    store = Store()
    if args.stage == "make":
        make(store, args.precision, args.only)
        return
    if args.stage == "eval":
        evaluate_ready(store, args)
        return
    result = measure(store, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))


if __name__ == "__main__":
    main()
