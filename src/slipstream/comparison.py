"""``slipstream compare``: one table of size, accuracy and speed, each with its ratio to the base.

Figures come from the registry when they were measured with the same settings; missing ones are
measured first (evaluation against the base, benchmark in a fresh process).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from statistics import median
from typing import Any, Mapping

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
    # ratios to the base; speed ratios are medians of per-round ratios when runs are interleaved
    size_ratio: float = 1.0
    perplexity_change: float = 0.0  # relative: +0.01 is 1% worse
    speedup: float = 1.0
    batch_speedup: float = 1.0
    speedup_range: tuple[float, float] = (1.0, 1.0)  # min and max of the per-round ratios
    rounds: int = 1


@dataclass
class Comparison:
    base: str
    rows: list[Row]
    eval_settings: dict[str, Any]
    bench_settings: dict[str, Any]
    rounds: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "eval_settings": self.eval_settings, "bench_settings": self.bench_settings,
                "rounds": self.rounds, "rows": [asdict(r) for r in self.rows]}

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
                f"{r.speedup:.2f}" + (f" ({r.speedup_range[0]:.2f}–{r.speedup_range[1]:.2f})"
                                      if r.rounds > 1 and r.name != self.base else ""),
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
    rounds: int = 1,
    store: Store | None = None,
    progress: Progress | None = None,
    threads: Mapping[str, int | None] | None = None,
    engine_options: Mapping[str, dict[str, Any] | None] | None = None,
) -> Comparison:
    """Compare ``variants`` with ``base``. With ``rounds > 1`` the benchmarks are interleaved
    (A B C, A B C, ...) and each speed ratio is the median of the per-round ratios, so a machine whose
    speed drifts during the run does not favour whichever variant ran at the quiet moment. ``threads``: engine
    threads by name where they differ from ``bench_settings``' (each at its own best, as a search chose);
    ``engine_options``: engine options by name on top of ``bench_settings``' (prompt lookup where a search chose it)."""
    store = store or Store()
    eval_settings = eval_settings or EvalSettings()
    bench_settings = bench_settings or BenchSettings()
    names = [base] + [v for v in variants if v != base]
    # Variants first: each pass measures the base alongside and caches it, so the base costs nothing.
    reports = evaluate_many(names[1:], reference=base, settings=eval_settings, store=store, progress=progress)
    evals = {r.variant: r.metrics for r in reports}
    evals[base] = evaluate(base, reference=None, settings=eval_settings, store=store, progress=progress).metrics
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            own = bench_settings if not (threads and threads.get(name)) else \
                replace(bench_settings, threads=threads[name])
            if engine_options and engine_options.get(name):
                own = replace(own, engine_options={**own.engine_options, **engine_options[name]})  # type: ignore[dict-item]
            runs[name].append(bench(name, settings=own, store=store, progress=progress,
                                    use_cache=rounds == 1).metrics)
    rows = [_row(store, name, evals[name], runs[name]) for name in names]
    base_runs = runs[base]
    for row, name in zip(rows, names):
        per_round = [_decode(r) / _decode(b) for r, b in zip(runs[name], base_runs)]
        row.size_ratio = row.size_bytes / rows[0].size_bytes
        row.perplexity_change = row.perplexity / rows[0].perplexity - 1
        row.speedup = float(median(per_round))
        row.speedup_range = (min(per_round), max(per_round))
        row.batch_speedup = float(median([_batch(r) / _batch(b) for r, b in zip(runs[name], base_runs)]))
        row.rounds = rounds
    return Comparison(base, rows, asdict(eval_settings), asdict(bench_settings), rounds)


def _decode(metrics: dict) -> float:
    return metrics["latency"]["decode_tokens_per_s"]["median"]


def _batch(metrics: dict) -> float:
    return max(metrics["throughput"], key=lambda t: t["batch_size"])["output_tokens_per_s"]["median"]


def _row(store: Store, name: str, metrics: dict, runs: list[dict]) -> Row:
    record = store.get(name)
    last = runs[-1]
    largest = max(last["throughput"], key=lambda t: t["batch_size"])
    return Row(
        name=name,
        format=record.format,
        technique=(record.technique or {}).get("technique", "original"),
        engine=last["engine"]["engine"],
        compute_type=last["engine"]["compute_type"],
        threads=last["engine"].get("threads"),
        size_bytes=record.size_bytes,
        perplexity=metrics["perplexity"],
        perplexity_ci95=tuple(metrics.get("perplexity_ci95") or ()) or None,
        kl_mean=metrics.get("kl_mean"),
        top1_agreement=metrics.get("top1_agreement"),
        decode_tokens_per_s=float(median([_decode(r) for r in runs])),
        batch_tokens_per_s=float(median([_batch(r) for r in runs])),
        batch_size=largest["batch_size"],
        ttft_p50_s=float(median([r["latency"]["ttft_s"]["p50"] for r in runs])),
        tpot_p50_s=float(median([r["latency"]["tpot_s"]["p50"] for r in runs])),
        tpot_p95_s=float(median([r["latency"]["tpot_s"]["p95"] for r in runs])),
        peak_rss_bytes=max(r["memory"]["peak_rss_bytes"] for r in runs),
    )
