"""Gather everything a report shows: the comparison, cost, roofline share, latency samples."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slipstream.benchmark.cost import Price, Workload, cost
from slipstream.benchmark.roofline import machine_peaks, roofline, token_cost
from slipstream.comparison import Comparison
from slipstream.machine import describe_machine
from slipstream.pareto import pareto_front
from slipstream.report.search_table import SearchTable
from slipstream.store import Store, Variant


def architecture_config(variant: Variant) -> dict:
    """The transformers config of a variant (CTranslate2 variants keep it beside their tokenizer)."""
    for candidate in (variant.path / "config.json", variant.path / "tokenizer" / "config.json"):
        if candidate.exists():
            data = json.loads(candidate.read_text())
            if "hidden_size" in data:
                return data
    return {}


def enrich(comparison: Comparison, store: Store, price: Price, workload: Workload | None = None) -> dict[str, Any]:
    """The comparison's rows with cost and roofline added, the frontier, and latency samples."""
    bench = comparison.bench_settings
    context = bench["prompt_tokens"] + bench["output_tokens"] // 2
    rows, samples = [], {}
    for row in comparison.rows:
        record = store.get(row.name)
        r = asdict(row)
        r["cost"] = cost(row.batch_tokens_per_s, price, workload)
        r["cost_batch1"] = cost(row.decode_tokens_per_s, price, workload)
        config = architecture_config(record)
        if config:
            kv_bytes = 2 if ("16" in row.compute_type and "int16" not in row.compute_type) else 4
            peaks = machine_peaks(store.home, int(row.threads or 1))
            r["roofline"] = roofline(row.decode_tokens_per_s,
                                     token_cost(record.path, record.format, config, context, kv_bytes, record.parameters),
                                     peaks)
        results = [x for x in store.results(row.name, "benchmark")]
        if results:
            samples[row.name] = {"tpot": results[-1].metrics["latency"].get("samples", {}).get("tpot_s", []),
                                 "ttft": results[-1].metrics["latency"].get("samples", {}).get("ttft_s", [])}
        rows.append(r)
    front = pareto_front(rows, [lambda r: r["speedup"], lambda r: -r["perplexity_change"]])
    return {"rows": rows, "front": [r["name"] for r in front], "samples": samples, "price": asdict(price),
            "machine": describe_machine(),
            "settings": {"eval": comparison.eval_settings, "bench": bench, "rounds": comparison.rounds}}


def write_report(comparison: Comparison, out: Path, store: Store, price: Price, workload: Workload | None = None,
                 title: str | None = None, search: SearchTable | None = None) -> dict[str, Any]:
    """``search``: an automatic search's summary and candidates; its frontier (accuracy against the
    search objective) is the one highlighted."""
    from slipstream.report.html import render

    data = enrich(comparison, store, price, workload)
    if search is not None:
        data["search"] = search
        shown = {r["name"] for r in data["rows"]}
        data["front"] = [n for n in search.frontier if n in shown]
    data["title"] = title or f"slipstream: {comparison.base} and {len(comparison.rows) - 1} variant(s)"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(out)
    return data
