"""``slipstream compare``: one table of size, accuracy and speed, each with its ratio to the base.

Figures come from the registry when they were measured with the same settings; missing ones are
measured first (evaluation against the base, benchmark in a fresh process).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from slipstream.benchmark.run import BenchSettings, bench
from slipstream.evaluation.run import EvalSettings, evaluate, evaluate_many
from slipstream.progress import Progress
from slipstream.store import Store


@dataclass
class Row:
    name: str
    format: str
    technique: str
    engine: str
    compute_type: str
    threads: int | None
    size_bytes: int
    perplexity: float
    perplexity_ci95: tuple[float, float] | None
    kl_mean: float | None
    top1_agreement: float | None
    decode_tokens_per_s: float  # batch 1, median over runs
    batch_tokens_per_s: float  # the largest batch benchmarked
    batch_size: int
    ttft_p50_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    peak_rss_bytes: int
    # ratios to the base
    size_ratio: float = 1.0
    perplexity_change: float = 0.0  # relative: +0.01 is 1% worse
    speedup: float = 1.0
    batch_speedup: float = 1.0


@dataclass
class Comparison:
    base: str
    rows: list[Row]
    eval_settings: dict[str, Any]
    bench_settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "eval_settings": self.eval_settings, "bench_settings": self.bench_settings,
                "rows": [asdict(r) for r in self.rows]}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and formatted cells, shared by the terminal and markdown renderings."""
        bs = self.rows[0].batch_size if self.rows else 0
        headers = ["variant", "engine / compute", "size MB", "size ×", "WikiText-2 ppl", "ppl Δ", "KL",
                   "top-1", "tok/s b1", "speed ×", f"tok/s b{bs}", f"b{bs} ×", "TTFT p50 ms",
                   "TPOT p50/p95 ms", "peak RSS MB"]
        cells = []
        for r in self.rows:
            cells.append([
                r.name,
                f"{r.engine} / {r.compute_type}",
                f"{r.size_bytes / 1e6:.0f}",
                f"{r.size_ratio:.2f}",
                f"{r.perplexity:.3f}",
                "—" if r.name == self.base else f"{r.perplexity_change * 100:+.2f}%",
                _num(r.kl_mean, "{:.4f}"),
                _num(r.top1_agreement, "{:.1%}"),
                f"{r.decode_tokens_per_s:.1f}",
                f"{r.speedup:.2f}",
                f"{r.batch_tokens_per_s:.1f}",
                f"{r.batch_speedup:.2f}",
                f"{r.ttft_p50_s * 1e3:.0f}",
                f"{r.tpot_p50_s * 1e3:.1f} / {r.tpot_p95_s * 1e3:.1f}",
                f"{r.peak_rss_bytes / 1e6:.0f}",
            ])
        return headers, cells

    def to_markdown(self) -> str:
        headers, cells = self.table()
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def compare(
    base: str,
    variants: list[str],
    *,
    eval_settings: EvalSettings | None = None,
    bench_settings: BenchSettings | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Comparison:
    store = store or Store()
    eval_settings = eval_settings or EvalSettings()
    bench_settings = bench_settings or BenchSettings()
    names = [base] + [v for v in variants if v != base]
    # Variants first: each pass measures the base alongside and caches it, so the base costs nothing.
    reports = evaluate_many(names[1:], reference=base, settings=eval_settings, store=store, progress=progress)
    evals = {r.variant: r.metrics for r in reports}
    evals[base] = evaluate(base, reference=None, settings=eval_settings, store=store, progress=progress).metrics
    rows = []
    for name in names:
        record = store.get(name)
        metrics = evals[name]
        bm = bench(name, settings=bench_settings, store=store, progress=progress, use_cache=True).metrics
        largest = max(bm["throughput"], key=lambda t: t["batch_size"])
        engine = bm["engine"]
        rows.append(Row(
            name=name,
            format=record.format,
            technique=(record.technique or {}).get("technique", "original"),
            engine=engine["engine"],
            compute_type=engine["compute_type"],
            threads=engine.get("threads"),
            size_bytes=record.size_bytes,
            perplexity=metrics["perplexity"],
            perplexity_ci95=tuple(metrics.get("perplexity_ci95") or ()) or None,
            kl_mean=metrics.get("kl_mean"),
            top1_agreement=metrics.get("top1_agreement"),
            decode_tokens_per_s=bm["latency"]["decode_tokens_per_s"]["median"],
            batch_tokens_per_s=largest["output_tokens_per_s"]["median"],
            batch_size=largest["batch_size"],
            ttft_p50_s=bm["latency"]["ttft_s"]["p50"],
            tpot_p50_s=bm["latency"]["tpot_s"]["p50"],
            tpot_p95_s=bm["latency"]["tpot_s"]["p95"],
            peak_rss_bytes=bm["memory"]["peak_rss_bytes"],
        ))
    b = rows[0]
    for r in rows:
        r.size_ratio = r.size_bytes / b.size_bytes
        r.perplexity_change = r.perplexity / b.perplexity - 1
        r.speedup = r.decode_tokens_per_s / b.decode_tokens_per_s
        r.batch_speedup = r.batch_tokens_per_s / b.batch_tokens_per_s
    return Comparison(base, rows, asdict(eval_settings), asdict(bench_settings))
