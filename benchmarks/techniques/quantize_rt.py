"""Quantization benchmark (issue 3): bitsandbytes, fp16/bf16 casts, ONNX Runtime and GGUF (llama.cpp)
variants of SmolLM2-135M-Instruct against the original (transformers fp32), in one run.

For each variant: size on disk, quantization time and peak memory (recorded by ``optimize``),
WikiText-2 test perplexity change and KL vs the original (``evaluate_many``, first ``--eval-tokens``
tokens, window 1024 / stride 512), greedy agreement with the original on a few prompts, and decode
speed at batch 1 and 8 on its own engine, interleaved with the original over ``--rounds`` rounds
(``comparison.compare``), each ratio taken within a round.

Usage (the full run; writes benchmarks/results/<machine>/quantize_rt.json and prints markdown):
    SLIPSTREAM_HOME=/tmp/home-quant-rt OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/techniques/quantize_rt.py \
        --eval-tokens 8192 --rounds 2 --repeats 2 --threads 1
On a loaded machine run it in stages (``--stage eval``, ``--stage speed``, ``--only LABEL ...``, separate
``--out`` files) and merge them with ``--report FILE ... --out benchmarks/results/<machine>/quantize_rt.json``.
BENCHMARKS.md#quantization names the runs and result files behind its figures.
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
from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.errors import Unsupported
from slipstream.evaluation.run import EvalSettings, evaluate_many
from slipstream.machine import describe_machine
from slipstream.models.intake import import_model
from slipstream.pipeline import optimize
from slipstream.store import Store
from slipstream.techniques.registry import make_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import CHAT, first_divergence, greedy_prompts, results_dir, write_json  # noqa: E402

MODEL = "smollm2-135m"  # --model: any model in the store (the bundled gemma3-270m is the second architecture)

VARIANTS = [  # (label, technique, options[, steps before it: [(technique, options), ...]])
    ("bnb nf4", "bitsandbytes", {"quant_type": "nf4"}),
    ("bnb int8", "bitsandbytes", {"quant_type": "int8", "int8_threshold": 6.0}),  # bitsandbytes' default
    ("bnb int8, threshold 2", "bitsandbytes", {"quant_type": "int8"}),  # slipstream's default
    ("fp16 cast", "cast", {"dtype": "float16"}),
    ("bf16 cast", "cast", {"dtype": "bfloat16"}),
    ("ONNX fp32", "onnx", {"quantization": "float32"}),
    # one activation scale per token; 16 outlier channels per input in float (slipstream's default)
    ("ONNX int8 dynamic", "onnx", {"quantization": "int8_dynamic"}),
    ("ONNX int8 dynamic, no outlier channels", "onnx", {"quantization": "int8_dynamic", "outlier_channels": 0}),
    ("ONNX int8 dynamic, per-tensor activations", "onnx", {"quantization": "int8_dynamic", "activations": "per_tensor"}),
    ("SmoothQuant 0.8, then ONNX int8 dynamic, down_proj and lm_head in float", "onnx",
     {"quantization": "int8_dynamic", "keep_float": ["down_proj", "lm_head"]}, [("smoothquant", {"alpha": 0.8})]),
    # int8 inputs, float32 outputs, the MLP down projections and q/k/v in float (slipstream's default;
    # older result files kept the down projections alone in float: quantize_table.py relabels them)
    ("ONNX int8 static", "onnx", {"quantization": "int8_static", "samples": 32, "sequence_length": 256}),
    ("ONNX int8 static, down_proj in float", "onnx",
     {"quantization": "int8_static", "samples": 32, "sequence_length": 256, "keep_float": ["down_proj"]}),
    ("ONNX int8 static, every MatMul in int8", "onnx",
     {"quantization": "int8_static", "samples": 32, "sequence_length": 256, "keep_float": []}),
    ("ONNX int8 blockwise", "onnx", {"quantization": "int8_blockwise"}),
    ("GGUF Q8_0", "gguf", {"quantization": "Q8_0"}),
    ("GGUF Q5_K_M", "gguf", {"quantization": "Q5_K_M"}),
    ("GGUF Q4_K_M", "gguf", {"quantization": "Q4_K_M"}),
    # the foundation's engine, for the speed comparison of issue 3 item 7 (its Gemma 3 cannot be scored
    # past the 512-token sliding window, so its accuracy on Gemma is measured apart, with --window 512)
    ("CTranslate2 int8", "ctranslate2", {"quantization": "int8"}),
]


def prompts(tokenizer) -> list[list[int]]:
    return greedy_prompts(tokenizer, 4, [CHAT[i] for i in (0, 1, 2, 4)])


def greedy_agreement(store: Store, names: list[str], max_tokens: int, threads: int) -> dict[str, dict]:
    """Tokens each variant generates greedily vs the original's, prompt by prompt."""
    reference = open_engine(MODEL, store=store, threads=threads)
    ids = prompts(reference.tokenizer)
    params = SamplingParams(max_tokens=max_tokens)
    ref = [c.token_ids for c in reference.generate(ids, params)] if names else []
    reference.close()
    out = {}
    for name in names:
        engine = open_engine(name, store=store, threads=threads)
        got = [c.token_ids for c in engine.generate(ids, params)]
        engine.close()
        first = [first_divergence(a, b) for a, b in zip(ref, got)]
        matched = sum(min(len(a), len(b)) if n is None else n for a, b, n in zip(ref, got, first))
        out[name] = {"prompts": len(ids), "max_tokens": max_tokens, "identical": sum(n is None for n in first),
                     "matched_prefix_tokens": matched, "reference_tokens": sum(len(a) for a in ref),
                     "first_divergence": first}
        print(f"  greedy {name}: {out[name]['identical']}/{len(ids)} identical", flush=True)
    return out


def weight_error(store: Store, name: str) -> dict:
    """Relative RMS error of each quantized GGUF tensor type vs the original fp32 weights."""
    import gguf
    import numpy as np

    from slipstream.exporters.gguf import ARCHITECTURES, _permute, _tensors, read_config

    src = Path(store.get(MODEL).path)
    cfg = read_config(src)
    arch = ARCHITECTURES[cfg["model_type"]]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.GEMMA3,
                                     cfg["num_hidden_layers"])
    original = {}
    for key, w in _tensors(src):
        new = names.get_name(key, try_suffixes=(".weight",))
        if new:
            w = w.astype(np.float32)
            if arch == "llama" and key.endswith("q_proj.weight"):
                w = _permute(w, cfg["num_attention_heads"])
            elif arch == "llama" and key.endswith("k_proj.weight"):
                w = _permute(w, cfg["num_key_value_heads"])
            original[new] = w
    by_type: dict[str, list[float]] = {}
    for t in gguf.GGUFReader(str(Path(store.get(name).path) / "model.gguf")).tensors:
        if t.name not in original or t.tensor_type.name in ("F32", "F16"):
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(original[t.name].shape)
        ref = original[t.name]
        by_type.setdefault(t.tensor_type.name, []).append(float(np.sqrt(((w - ref) ** 2).mean() / (ref ** 2).mean())))
    return {k: {"tensors": len(v), "relative_rms_error": float(np.mean(v))} for k, v in sorted(by_type.items())}


def report(paths: list[Path], out: Path) -> None:
    """Merge result files (eval stages over disjoint variant sets, speed stages) into ``out`` and print
    one markdown table. Speed ratios are those measured within a speed run, against its own original."""
    runs = [json.loads(p.read_text()) for p in paths]
    variants: dict[str, dict] = {}
    ratios: dict[str, dict] = {}
    decode: dict[str, list[float]] = {}
    engines: dict[str, str] = {}
    speed_run: dict[str, str] = {}
    bases: list[str] = []
    for run in runs:
        for label, v in run.get("variants", {}).items():
            variants.setdefault(label, {}).update({k: x for k, x in v.items() if x is not None})
        sp = run.get("speed") or {}
        for name, ms in sp.get("runs", {}).items():
            decode[name] = [m["decode_tokens_per_s"] for m in ms]
            engines[name] = f"{ms[0]['engine']['engine']} / {ms[0]['engine']['compute_type']}"
        base = decode.get(MODEL)
        if sp.get("runs"):
            bases.append(f"{_join(base)} (run {chr(65 + len(bases))})")
        for name in sp.get("runs", {}):
            speed_run[name] = chr(64 + len(bases))
            pairs = [a / b for a, b in zip(decode[name], base or [])]
            if pairs:
                ratios[name] = {"median": sorted(pairs)[len(pairs) // 2] if len(pairs) % 2 else
                                sum(sorted(pairs)[len(pairs) // 2 - 1 : len(pairs) // 2 + 1]) / 2,
                                "min": min(pairs), "max": max(pairs), "rounds": len(pairs), "per_round": pairs}
    out.write_text(json.dumps({"model": MODEL, "variants": variants, "decode_tokens_per_s": decode,
                               "speed_ratios": ratios, "sources": [str(p) for p in paths]}, indent=2))
    print("| variant | engine / compute | size MB | quantize s | quantize peak RSS MB | ppl | ppl Δ | KL "
          "| top-1 | greedy identical | greedy tokens matched | tok/s b1 per round | speed × per round |")
    print("|" + "---|" * 13)
    ref = next((v["evaluation"]["reference_metrics"] for v in variants.values() if v.get("evaluation")), None)
    if ref:
        print(f"| original | transformers / float32 | {runs[0].get('original_size_bytes', 0) / 1e6:.0f} | — | — | "
              f"{ref['perplexity']:.3f} | — | — | — | — | — | "
              f"{'; '.join(bases)} | 1.00 |")
    for label, v in variants.items():
        e = v.get("evaluation") or {}
        g = v.get("greedy") or {}
        r = ratios.get(v["name"])
        cells = [label, engines.get(v["name"]) or (e.get("engine") or {}).get("engine", "—"),
                 f"{v['size_bytes'] / 1e6:.0f}", f"{v['quantize_seconds']:.0f}",
                 f"{(v.get('quantize_peak_rss_bytes') or 0) / 1e6:.0f}",
                 f"{e['perplexity']:.3f}" if e else "—",
                 f"{(e['perplexity'] / ref['perplexity'] - 1) * 100:+.2f}%" if e else "—",
                 f"{e['kl_mean']:.4f}" if e else "—", f"{e['top1_agreement'] * 100:.1f}%" if e else "—",
                 f"{g['identical']}/{g['prompts']}" if g else "—",
                 f"{g['matched_prefix_tokens']}/{g['reference_tokens']}" if g else "—",
                 _join(decode.get(v["name"])) + (f" (run {speed_run[v['name']]})" if v["name"] in speed_run else ""),
                 ", ".join(f"{x:.2f}" for x in r["per_round"]) if r else "—"]
        print("| " + " | ".join(cells) + " |")


def _join(values: list[float] | None) -> str:
    return ", ".join(f"{x:.1f}" for x in values) if values else "—"


def speed(store: Store, record: dict, names: list[str], args, save) -> None:
    """Decode speed only: the original and each variant in turn, every round, ratios within a round."""
    from statistics import median

    from slipstream.benchmark.run import bench

    settings = BenchSettings(output_tokens=64, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
                             threads=args.threads)
    order = [MODEL, *names]
    runs: dict[str, list[dict]] = {n: [] for n in order}
    for r in range(args.rounds):
        for name in order:
            metrics = bench(name, settings=settings, store=store, use_cache=False).metrics
            runs[name].append(metrics)
            print(f"  round {r + 1} {name}: {metrics['latency']['decode_tokens_per_s']['median']:.1f} tok/s",
                  flush=True)
        record["speed"] = {"settings": settings.__dict__, "rounds": r + 1, "runs": {
            n: [{"decode_tokens_per_s": m["latency"]["decode_tokens_per_s"]["median"], "engine": m["engine"],
                 "throughput": m["throughput"], "peak_rss_bytes": m["memory"]["peak_rss_bytes"]} for m in ms]
            for n, ms in runs.items() if ms}}
        save()
    decode = {n: [m["latency"]["decode_tokens_per_s"]["median"] for m in ms] for n, ms in runs.items()}
    record["speed"]["ratios"] = {n: {"median": median(a / b for a, b in zip(decode[n], decode[MODEL])),
                                     "min": min(a / b for a, b in zip(decode[n], decode[MODEL])),
                                     "max": max(a / b for a, b in zip(decode[n], decode[MODEL]))}
                                 for n in order}
    record["load_at_end"] = os.getloadavg()
    save()
    for n in order:
        print(n, decode[n], record["speed"]["ratios"][n])


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--group", type=int, default=8, help="variants opened at once for evaluation (memory)")
    ap.add_argument("--only", nargs="*", help="labels to run (default: all)")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/<machine>/quantize_rt[-MODEL].json")
    ap.add_argument("--stage", choices=["all", "speed", "eval"], default="all",
                    help="speed: only the interleaved decode benchmark; eval: greedy agreement and evaluation only")
    ap.add_argument("--report", type=Path, nargs="+", help="merge these result files into --out and print")
    args = ap.parse_args()
    MODEL = args.model
    args.out = args.out or results_dir() / (
        "quantize_rt.json" if MODEL == "smollm2-135m" else f"quantize_rt-{MODEL}.json")
    if args.report:
        return report(args.report, args.out)

    store = Store()
    previous = json.loads(args.out.read_text()).get("variants", {}) if args.out.exists() else {}
    if not store.exists(MODEL):
        import_model(MODEL, store=store)
    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only]
    started, load_start = time.time(), os.getloadavg()
    record: dict = {"machine": describe_machine(), "threads": args.threads, "load_at_start": load_start,
                    "model": MODEL, "variants": {}}

    def save() -> None:
        write_json(args.out, record)

    names: dict[str, str] = {}
    for label, technique, options, *before in chosen:
        parent, seconds, peak, refused = MODEL, 0.0, 0, None
        # a recipe's earlier steps (e.g. smoothquant) first, each a variant of the one before
        for step, step_options in [*(before[0] if before else []), (technique, options)]:
            config = make_config(step, step_options)
            name = f"{parent}-{config.slug()}"
            if not store.exists(name):
                print(f"making {label}: {name} ...", flush=True)
                try:
                    optimize(parent, config, name=name, store=store)
                except Unsupported as exc:  # e.g. float16 for Gemma: recorded, not run
                    refused = exc
                    break
            facts = store.manifest(name).extra.get("facts", {})
            seconds, peak, parent = seconds + (facts.get("seconds") or 0), max(peak, facts.get("peak_rss_bytes") or 0), name
        if refused is not None:
            record["variants"][label] = {"refused": str(refused), "technique": config.to_dict()}
            print(f"  refused: {refused}", flush=True)
            continue
        names[label] = name
        variant = store.get(name)
        record["variants"][label] = {
            "name": name, "created": variant.created, "technique": config.to_dict(), "size_bytes": variant.size_bytes,
            "quantize_seconds": seconds or None, "quantize_peak_rss_bytes": peak or None,
            "facts": {k: v for k, v in facts.items() if k not in ("seconds", "peak_rss_bytes")}}
        if before:
            record["variants"][label]["before"] = [make_config(t, o).to_dict() for t, o in before[0]]
        if technique == "gguf" and options["quantization"].startswith("Q"):
            record["variants"][label]["weight_error"] = weight_error(store, name)
    record["original_size_bytes"] = store.get(MODEL).size_bytes
    save()

    if args.stage == "speed":
        return speed(store, record, list(names.values()), args, save)

    print("greedy agreement ...", flush=True)
    todo = []
    for label, name in names.items():  # reuse a previous run's result for the very same variant
        old = previous.get(label, {})
        if old.get("greedy") and old.get("name") == name and old.get("created") == store.get(name).created \
                and old["greedy"].get("max_tokens") == args.greedy_tokens:
            record["variants"][label]["greedy"] = old["greedy"]
        else:
            todo.append(name)
    for name, result in greedy_agreement(store, todo, args.greedy_tokens, args.threads).items():
        label = next(k for k, v in names.items() if v == name)
        record["variants"][label]["greedy"] = result
    save()

    settings = EvalSettings(task="wikitext2", window=1024, stride=512, max_tokens=args.eval_tokens,
                            threads=args.threads)
    order = list(names.values())
    for i in range(0, len(order), args.group):  # a few engines open at a time; results are cached
        print(f"evaluating {order[i : i + args.group]} ...", flush=True)
        for r in evaluate_many(order[i : i + args.group], reference=MODEL, settings=settings, store=store):
            label = next(k for k, v in names.items() if v == r.variant)
            record["variants"][label]["evaluation"] = r.metrics | {"reference_metrics": r.reference_metrics}
        record["eval_settings"] = settings.__dict__
        save()
    if args.stage == "eval":
        return

    print("benchmarking (interleaved rounds) ...", flush=True)
    result = compare(MODEL, order, eval_settings=settings,
                     bench_settings=BenchSettings(output_tokens=64, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
                                                  threads=args.threads),
                     rounds=args.rounds, store=store)
    record["comparison"] = result.to_dict()
    record["load_at_end"] = os.getloadavg()
    record["seconds"] = round(time.time() - started)
    save()
    print(result.to_markdown())


if __name__ == "__main__":
    main()
