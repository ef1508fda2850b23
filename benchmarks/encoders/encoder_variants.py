"""Sentence encoders and their variants: size, how far their embeddings moved, and how fast they embed.

For all-MiniLM-L6-v2 and all-mpnet-base-v2 (both bundled; `slipstream models import NAME`), each variant slipstream
can make of it here: CTranslate2 float32 and int8 (BERT only: CTranslate2 has no MPNet loader), ONNX Runtime
float32, dynamic int8 and static int8, a bfloat16 cast, and (MiniLM) a quarter of the MLP channels pruned then
distilled on the original's embeddings, then CTranslate2 int8.

- Accuracy: `slipstream evaluate --task embeddings` (512 FLORES-200 devtest English sentences against the original
  on transformers): mean, minimum and 5th-percentile cosine, and top-10 retrieval agreement.
- Speed: `slipstream bench` in its own process (peak RSS is that variant's alone), FLORES-200 English sentences one
  at a time (latency, sentences/s) and 32 per call, at --threads threads. The original and its variants are
  measured in interleaved rounds (original, variant 1, variant 2, ... repeated); each variant's ratio to the original
  is the median over rounds of that round's ratio, so drift on a shared machine cancels.
- The pick: the fastest variant at batch 1 whose mean cosine is at least 0.99, against the original on transformers.

Usage (writes benchmarks/results/<machine>/encoder_variants.json; about 25 minutes on 2 cores):
    SLIPSTREAM_HOME=/tmp/enc-home .venv/bin/python benchmarks/encoders/encoder_variants.py [--rounds 3] [--threads 2]
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

RECIPES: list[tuple[str, list[tuple[str, dict]]]] = [
    ("bf16", [("cast", {"dtype": "bfloat16"})]),
    ("ct2-float32", [("ctranslate2", {"quantization": "float32"})]),
    ("ct2-int8", [("ctranslate2", {"quantization": "int8"})]),
    ("onnx-fp32", [("onnx", {"quantization": "float32"})]),
    ("onnx-int8-dynamic", [("onnx", {"quantization": "int8_dynamic"})]),
    ("onnx-int8-static", [("onnx", {"quantization": "int8_static", "samples": 32})]),
    ("prune-m25-distill-ct2-int8", [
        ("prune-structured", {"layers": 0.0, "mlp": 0.25, "samples": 64, "sequence_length": 128}),
        ("distill", {"steps": 100, "batch_size": 16, "accumulation": 1, "sequence_length": 128,
                     "learning_rate": 5e-5, "warmup": 5}),
        ("ctranslate2", {"quantization": "int8"})]),
]
SLOW = {"prune-m25-distill-ct2-int8"}  # minutes of training: MiniLM only (mpnet is 5x the work)


def build(store, model: str, steps: list[tuple[str, dict]]) -> tuple[str | None, str | None]:
    from slipstream.errors import SlipstreamError
    from slipstream.pipeline import build as build_recipe
    from slipstream.techniques.registry import make_config

    try:
        return build_recipe(model, [make_config(t, o) for t, o in steps], store=store).name, None
    except SlipstreamError as exc:
        return None, str(exc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["all-minilm-l6-v2", "all-mpnet-base-v2"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=512)
    ap.add_argument("--out", type=Path, default=result_path("encoder_variants.json"))
    args = ap.parse_args()

    from slipstream.benchmark.run import BenchSettings, bench
    from slipstream.evaluation.run import evaluate
    from slipstream.machine import describe_machine
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store()
    settings = BenchSettings(batch_sizes=(1, 32), repeats=args.repeats, warmup=1, threads=args.threads)
    record = {"machine": describe_machine(), "threads": args.threads, "rounds": args.rounds,
              "sentences": args.sentences, "models": {}}
    if args.out.exists():  # a run of some of the models keeps the others' results (same machine only)
        import json

        earlier = json.loads(args.out.read_text())
        if earlier.get("machine", {}).get("cpu") == record["machine"].get("cpu"):
            record["models"] = {k: v for k, v in earlier.get("models", {}).items() if k not in args.models}
    for model in args.models:
        if not store.exists(model):
            import_model(model, store=store)
        rows: dict[str, dict] = {"original": {"name": model, "size_bytes": store.get(model).size_bytes}}
        for label, steps in RECIPES:
            if label in SLOW and model != "all-minilm-l6-v2":
                continue
            t = time.time()
            name, refused = build(store, model, steps)
            rows[label] = {"name": name, "refused": refused, "build_s": round(time.time() - t, 1)}
            if name:
                rows[label]["size_bytes"] = store.get(name).size_bytes
                report = evaluate(name, reference=model, task="embeddings", limit=args.sentences, store=store)
                rows[label]["accuracy"] = {k: report.metrics[k] for k in
                                           ("cosine_mean", "cosine_min", "cosine_p5", "retrieval_top10")}
            print(model, label, rows[label].get("accuracy") or refused, flush=True)
        measured = [k for k, r in rows.items() if r.get("name")]
        per_round: dict[str, list[dict]] = {k: [] for k in measured}
        for _ in range(args.rounds):  # interleaved: the original first, then every variant, again
            for label in measured:
                m = bench(rows[label]["name"], settings=settings, store=store).metrics
                per_round[label].append({"b1": m["latency"]["sentences_per_s"]["median"],
                                         "b32": m["throughput"][-1]["sentences_per_s"]["median"],
                                         "latency_p50_s": m["latency"]["latency_s"]["p50"],
                                         "peak_rss_bytes": m["memory"]["peak_rss_bytes"],
                                         "engine": m["engine"]["engine"], "compute_type": m["engine"]["compute_type"]})
        for label in measured:
            runs, base = per_round[label], per_round["original"]
            rows[label]["speed"] = {
                "sentences_per_s_b1": statistics.median(r["b1"] for r in runs),
                "sentences_per_s_b32": statistics.median(r["b32"] for r in runs),
                "latency_p50_ms": 1e3 * statistics.median(r["latency_p50_s"] for r in runs),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                "speedup_b1": statistics.median(r["b1"] / b["b1"] for r, b in zip(runs, base)),
                "speedup_b32": statistics.median(r["b32"] / b["b32"] for r, b in zip(runs, base)),
                "engine": runs[0]["engine"], "compute_type": runs[0]["compute_type"], "rounds": runs}
        passing = [k for k in measured if k != "original" and rows[k]["accuracy"]["cosine_mean"] >= 0.99]
        pick = max(passing, key=lambda k: rows[k]["speed"]["sentences_per_s_b1"]) if passing else None
        record["models"][model] = {"variants": rows, "pick": pick,
                                   "pick_speedup_b1": rows[pick]["speed"]["speedup_b1"] if pick else None,
                                   "pick_speedup_b32": rows[pick]["speed"]["speedup_b32"] if pick else None}
        write_json(args.out, record)
        print(f"{model}: pick {pick}", flush=True)
        for label, r in rows.items():
            s, a = r.get("speed"), r.get("accuracy")
            if s:
                print(f"  {label:28s} {r['size_bytes'] / 1e6:7.1f} MB  cos {a['cosine_mean'] if a else 1:.4f}  "
                      f"top10 {a['retrieval_top10'] if a else 1:.3f}  b1 {s['sentences_per_s_b1']:7.1f}/s "
                      f"({s['speedup_b1']:.2f}x)  b32 {s['sentences_per_s_b32']:7.1f}/s ({s['speedup_b32']:.2f}x)  "
                      f"RSS {s['peak_rss_bytes'] / 1e6:.0f} MB")
            else:
                print(f"  {label:28s} not made: {r['refused']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
