"""One table of every quantization variant of issue 3, for each model (SmolLM2-135M-Instruct and
Gemma-3-270m), from the raw results of the two quantization benchmarks:

  benchmarks/techniques/quantize_llmc.py  llm-compressor checkpoints (RTN, AWQ, GPTQ, SmoothQuant + W8A8) on
                               transformers, and the same checkpoints on vLLM;
  benchmarks/techniques/quantize_rt.py    bitsandbytes, fp16/bf16 casts, ONNX Runtime, GGUF (llama.cpp).

Both evaluate on the first 8,192 tokens of WikiText-2 test (window 1024, stride 512) against the
model's transformers fp32 original, and time decode at batch 1 and 8 on one thread, each variant
interleaved with the original round by round; the × columns are ratios to that original, measured in
the same run. Usage:
    .venv/bin/python benchmarks/techniques/quantize_table.py [--model smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import RESULTS  # noqa: E402

SOURCES = {  # model -> ([llm-compressor results], [bitsandbytes/ONNX/GGUF eval and speed results]); later files
    # add to (and for the same variant replace) earlier ones
    "smollm2-135m": (["xeon/quantize_llmc.json", "zen4/quantize_llmc-w8a8-int8.json", "zen4/quantize_llmc-w8a8-auto.json"], ["xeon/quantize_rt-quiet-eval.json", "xeon/quantize_rt-quiet-speed.json",
                                              "xeon/quantize_rt-bnb-threshold-eval.json",
                                              "xeon/quantize_rt-bnb-threshold-speed.json",
                                              "zen4/quantize_rt-smollm2-per-token.json",
                                              "zen4/quantize_rt-smollm2-outliers.json",
                                              "zen4/quantize_rt-smollm2-static.json",
                                              "zen4/quantize_rt-smollm2-static-qkv.json"]),
    "gemma3-270m": (["xeon/quantize_llmc-gemma3-270m.json", "zen3/quantize_llmc-gemma3-270m-amd.json",
                     "zen4/quantize_llmc-gemma3-270m-w8a8-auto.json"],
                    ["xeon/quantize_rt-gemma3-270m-eval.json", "zen3/quantize_rt-gemma3-270m-eval-amd.json",
                     "zen3/quantize_rt-gemma3-270m-speed.json", "zen4/quantize_rt-gemma3-270m-per-token-eval.json",
                     "zen4/quantize_rt-gemma3-270m-per-token-speed.json", "zen4/quantize_rt-gemma3-270m-outliers.json",
                     "zen4/quantize_rt-gemma3-270m-static-eval.json", "zen4/quantize_rt-gemma3-270m-static-speed.json",
                     "zen4/quantize_rt-gemma3-270m-static-qkv.json"]),
}
LLMC_LABELS = {"rtn-w8": "RTN int8, per channel", "rtn-w4g128": "RTN int4, group 128", "rtn-w4g64": "RTN int4, group 64",
               "awq-w4g128": "AWQ W4A16, group 128", "awq-w4g128-all": "AWQ W4A16, group 128, all mappings",
               "gptq-w4g128": "GPTQ W4A16, group 128"}


# llm-compressor files measured before W8A8's keep_float="auto" default: their W8A8 variants had every
# linear in int8, what "-keep-none" names now
W8A8_ALL_INT8_FROM = {"xeon/quantize_llmc.json", "zen4/quantize_llmc-w8a8-int8.json", "xeon/quantize_llmc-gemma3-270m.json",
                      "zen3/quantize_llmc-gemma3-270m-amd.json"}


def _load(name: str) -> dict:
    path = RESULTS / name
    data = json.loads(path.read_text()) if path.exists() else {}
    return _renamed(data, _all_int8_name) if name in W8A8_ALL_INT8_FROM else data


def _all_int8_name(name: str) -> str:
    return name + "-keep-none" if "-w8a8-" in name and "-keep-" not in name else name


def _renamed(value, rename):
    """``value`` with every dict key passed through ``rename`` (variant names are keys at any depth)."""
    if isinstance(value, dict):
        return {rename(k): _renamed(v, rename) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, rename) for v in value]
    return value


def _merged(names: list[str]) -> dict:
    """The llm-compressor files of one model as one: make, eval and speed entries per variant, later files
    adding to earlier ones."""
    out: dict = {}
    for data in map(_load, names):
        for key, value in data.items():
            if key in ("make", "make_int8"):
                out.setdefault(key, {}).update(value)
            elif key in ("eval", "speed", "vllm", "eval_int8", "speed_int8") and isinstance(value, dict):
                merged = out.setdefault(key, {})
                merged.update({k: v for k, v in value.items() if k != "variants"})
                merged.setdefault("variants", {}).update(value.get("variants", {}))
            else:
                out.setdefault(key, value)
    return out


def _machines(names: list[str]) -> str:
    seen = []
    for name in names:
        m = _load(name).get("machine") or {}
        if m:
            cpu = f"{m.get('cpu')} ({'AVX-512, VNNI' if 'avx512_vnni' in m.get('cpu_flags', []) else 'AVX2, no VNNI'})"
            seen.append(f"{name}: {cpu}")
    return "; ".join(seen)


# quantize_rt labels whose meaning a later default changed: bitsandbytes int8's outlier threshold
# was 6.0 (bitsandbytes' own default) at first, then 2.0
RELABEL = {"bnb int8": "bnb int8, threshold 6 (bitsandbytes' default)",
           "bnb int8, threshold 2": "bnb int8, threshold 2 (slipstream's default)"}
# ONNX int8 variants measured before outlier channels existed: none split out
OUTLIER_CHANNELS_FROM = {"zen4/quantize_rt-smollm2-outliers.json", "zen4/quantize_rt-gemma3-270m-outliers.json"}


# ONNX static int8 measured before its MatMul outputs stayed float32 and its down projections float32 by
# default: every weight MatMul in int8, each output requantized to uint8
STATIC_FLOAT_OUTPUTS_FROM = {"zen4/quantize_rt-smollm2-static.json", "zen4/quantize_rt-gemma3-270m-static-eval.json",
                             "zen4/quantize_rt-gemma3-270m-static-speed.json", "zen4/quantize_rt-gemma3-270m-static-qkv.json",
                             "zen4/quantize_rt-smollm2-static-qkv.json"}
# ... all of them while static int8 kept only the down projections in float by default (q/k/v joined them
# later): their labels as the defaults of now name them
STATIC_DOWN_ONLY_DEFAULT = {"ONNX int8 static": "ONNX int8 static, down_proj in float",
                            "ONNX int8 static, down_proj and q/k/v in float": "ONNX int8 static"}


def relabel(label: str, file: str) -> str:
    if label.startswith(("ONNX int8 dynamic", "ONNX int8 static", "SmoothQuant 0.8, then ONNX int8")) \
            and file not in OUTLIER_CHANNELS_FROM | STATIC_FLOAT_OUTPUTS_FROM and not label.endswith("no outlier channels"):
        label += ", no outlier channels"
    if label.startswith("ONNX int8 static") and file not in STATIC_FLOAT_OUTPUTS_FROM:
        return label + ", every MatMul in int8, outputs requantized"
    if file in STATIC_FLOAT_OUTPUTS_FROM:
        return STATIC_DOWN_ONLY_DEFAULT.get(label, label)
    return RELABEL.get(label, label)


def _tag(file: str) -> str:
    """The same variant name measured before and after a default changed names two variants."""
    return "#static" if file in STATIC_FLOAT_OUTPUTS_FROM else "#outliers" if file in OUTLIER_CHANNELS_FROM else ""


def _label(model: str, name: str, made: dict | None = None) -> str:
    short = name.removeprefix(model + "-")
    if short.startswith("w8a8"):
        label = "SmoothQuant " + short.split("-sq")[1].split("-")[0] + " + W8A8 int8" if "-sq" in short else "W8A8 int8"
        kept = short.split("-keep-")[1:]
        if kept == ["none"]:
            return label + ", every linear in int8"
        if kept:
            return label + ", " + "/".join(k.removesuffix("_proj") for k in kept) + " in float"
        chosen = (made or {}).get("keep_float_auto")
        return label + (f", auto (the default): {'/'.join(k.removesuffix('_proj') for k in chosen) or 'none'} in float"
                        if chosen is not None else "")
    return LLMC_LABELS.get(short, short)


def llmc_rows(model: str, data: dict) -> tuple[dict, list[dict]]:
    """The original's row and one row per llm-compressor variant (transformers, then vLLM)."""
    ev, sp = data.get("eval", {}), data.get("speed", {}).get("variants", {})
    firsts = [v for v in sp.values() if v.get("original_decode_tok_s_b1")]
    original = {"perplexity": ev.get("reference", {}).get("perplexity"), "size_bytes": data.get("original_size_bytes"),
                "b1": median(v["original_decode_tok_s_b1"] for v in firsts) if firsts else None,
                "b8": median(v["original_decode_tok_s_b8"] for v in firsts) if firsts else None}
    rows = []
    for name, made in data.get("make", {}).items():
        e, s = ev.get("variants", {}).get(name, {}), sp.get(name, {})
        rows.append({"variant": _label(model, name), "engine": "transformers (compressed-tensors)",
                     "size_bytes": made["size_bytes"], "quantize_s": made["seconds"], "peak_rss": made["peak_rss_bytes"],
                     "ppl": e.get("perplexity"), "ratio": e.get("perplexity_ratio"), "kl": e.get("kl_mean"),
                     "greedy": s.get("greedy"), "b1": s.get("decode_tok_s_b1"), "x1": s.get("speedup_b1"),
                     "b8": s.get("decode_tok_s_b8"), "x8": s.get("speedup_b8")})
    # W8A8 through the engine's int8 products (a file with make_int8 / eval_int8 / speed_int8)
    sp8 = data.get("speed_int8", {}).get("variants", {})
    for name, made in data.get("make_int8", {}).items():
        e, s = data.get("eval_int8", {}).get("variants", {}).get(name, {}), sp8.get(name, {})
        rows.append({"variant": _label(model, name, made), "engine": "transformers (int8 products, oneDNN)",
                     "size_bytes": made["size_bytes"], "quantize_s": made["seconds"], "peak_rss": made["peak_rss_bytes"],
                     "ppl": e.get("perplexity"), "ratio": e.get("perplexity_ratio"), "kl": e.get("kl_mean"),
                     "greedy": s.get("greedy"), "b1": s.get("decode_tok_s_b1"), "x1": s.get("speedup_b1"),
                     "b8": s.get("decode_tok_s_b8"), "x8": s.get("speedup_b8")})
    for name, v in data.get("vllm", {}).get("variants", {}).items():
        label = "original" if name == model else _label(model, name)
        if not v.get("runs"):
            rows.append({"variant": label, "engine": "vLLM: refused", "note": v.get("why", "")})
            continue
        rows.append({"variant": label, "engine": f"vLLM ({v['info']['compute_type']})", "same_checkpoint": True,
                     "greedy": v.get("greedy"),
                     "b1": v["decode_tok_s_b1"], "x1": v["ratio_b1"], "b8": v["decode_tok_s_b8"], "x8": v["ratio_b8"]})
    return original, rows


def rt_rows(model: str, runs: list[dict]) -> tuple[dict, list[dict]]:
    """The original's speed and one row per variant; each speed ratio is to the original of the same
    speed run (a later run replaces an earlier one's figures for the variants it measured)."""
    variants: dict[str, dict] = {}
    speed: dict[str, dict] = {}  # variant name -> {"b1": ..., "x1": ..., "b8": ..., "x8": ...}
    original: dict = {}

    def rate(rounds: list[dict], batch: int) -> list[float]:
        if batch == 1:
            return [r["decode_tokens_per_s"] for r in rounds]
        return [t["output_tokens_per_s"]["median"] for r in rounds for t in r["throughput"] if t["batch_size"] == batch]

    for run in runs:
        tag = _tag(run.get("_file", ""))
        for label, v in run.get("variants", {}).items():
            label = relabel(label, run.get("_file", ""))
            variants.setdefault(label, {}).update({k: x for k, x in v.items() if x is not None})
            if "name" in v:
                variants[label]["_speed_key"] = v["name"] + tag
        by_name = (run.get("speed") or {}).get("runs", {})
        base = by_name.get(model, [])
        for name, rounds in by_name.items():
            figures = {}
            for b in (1, 8):
                mine, theirs = rate(rounds, b), rate(base, b)
                if mine and len(mine) == len(theirs):
                    figures[f"b{b}"], figures[f"x{b}"] = median(mine), median(a / o for a, o in zip(mine, theirs))
            if name == model:
                original.setdefault("b1", figures.get("b1"))  # the first speed run's original
                original.setdefault("b8", figures.get("b8"))
            speed[name + (tag if name != model else "")] = figures | {"engine": rounds[0]["engine"]["engine"]}
        # a full run (--stage all) keeps comparison.compare's rows: medians over its interleaved rounds
        for row in (run.get("comparison") or {}).get("rows", []):
            figures = {"b1": row["decode_tokens_per_s"], "x1": row["speedup"], "b8": row.get("batch_tokens_per_s"),
                       "x8": row.get("batch_speedup"), "engine": row["engine"]}
            if row["name"] == model:
                original.setdefault("b1", figures["b1"])
                original.setdefault("b8", figures["b8"])
            else:
                speed[row["name"] + tag] = figures
    rows = []
    for label, v in variants.items():
        if "name" not in v:  # refused before any work
            rows.append({"variant": label, "engine": "refused", "note": v.get("refused", "")})
            continue
        e, sp = v.get("evaluation") or {}, speed.get(v.get("_speed_key", v["name"]), {})
        if e.get("reference_metrics"):
            original["perplexity"] = e["reference_metrics"]["perplexity"]
        rows.append({"variant": label, "size_bytes": v["size_bytes"], "quantize_s": v.get("quantize_seconds"),
                     "peak_rss": v.get("quantize_peak_rss_bytes"), "ppl": e.get("perplexity"),
                     "ratio": e.get("perplexity_ratio"), "kl": e.get("kl_mean"),
                     "engine": sp.get("engine") or (e.get("engine") or {}).get("engine", "—"), "greedy": v.get("greedy"),
                     **{k: sp.get(k) for k in ("b1", "x1", "b8", "x8")}})
    return original, rows


def _greedy(g: dict | None) -> str:
    return f"{g['identical']}/{g['prompts']}" if g and "identical" in g else "—"


def _f(x, fmt: str, none: str = "—") -> str:
    return none if x is None else format(x, fmt)


def table(models: list[str]) -> str:
    lines = ["| model | variant | engine | size MB | WikiText-2 ppl | ppl Δ | KL | greedy = original "
             "| decode tok/s b1 (× original) | b8 (× original) | quantize s | quantize peak RSS MB |", "|" + "---|" * 12]
    notes = []
    for model in models:
        llmc_files, rt_files = SOURCES[model]
        llmc = _merged(llmc_files)
        notes.append(f"- {model}, measured on: {_machines(llmc_files + rt_files)}")
        rt = [r | {"_file": name} for name, r in zip(rt_files, map(_load, rt_files)) if r]
        if not llmc and not rt:
            lines.append(f"| {model} | (no results yet) |" + " |" * 10)
            continue
        o1, rows1 = llmc_rows(model, llmc) if llmc else ({}, [])
        o2, rows2 = rt_rows(model, rt) if rt else ({}, [])
        size = llmc.get("original_size_bytes") or next((r.get("original_size_bytes") for r in rt), None)
        lines.append(f"| {model} | original fp32 | transformers | {_f(size and size / 1e6, '.0f')} "
                     f"| {_f(o1.get('perplexity') or o2.get('perplexity'), '.3f')} | — | — | — "
                     f"| {_f(o1.get('b1'), '.1f')} / {_f(o2.get('b1'), '.1f')} | {_f(o1.get('b8'), '.1f')} / "
                     f"{_f(o2.get('b8'), '.1f')} | — | — |")
        for r in rows1 + rows2:
            if "note" in r:
                lines.append(f"| {model} | {r['variant']} | {r['engine']} | | | | | | {r['note']} | | | |")
                continue
            same = r.get("same_checkpoint")
            lines.append(
                f"| {model} | {r['variant']} | {r['engine']} | {'same' if same else _f(r['size_bytes'] / 1e6, '.0f')} "
                f"| {'same' if same else _f(r.get('ppl'), '.3f')} "
                f"| {'' if same else _f(r.get('ratio') and (r['ratio'] - 1) * 100, '+.2f') + ('%' if r.get('ratio') else '')} "
                f"| {'' if same else _f(r.get('kl'), '.4f')} | {_greedy(r.get('greedy'))} "
                f"| {_f(r.get('b1'), '.1f')} ({_f(r.get('x1'), '.2f')}×) | {_f(r.get('b8'), '.1f')} ({_f(r.get('x8'), '.2f')}×) "
                f"| {'' if same else _f(r.get('quantize_s'), '.0f')} "
                f"| {'' if same else _f(r.get('peak_rss') and r['peak_rss'] / 1e6, '.0f')} |")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    print(table(ap.parse_args().model))


if __name__ == "__main__":
    main()
