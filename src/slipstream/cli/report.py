"""``slipstream report BASE VARIANT... --out report.html``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from slipstream.cli.output import RichProgress, out, print_json, table


def report_cmd(
    base: str = typer.Argument(..., help="The model everything is compared to"),
    variants: List[str] = typer.Argument(..., help="Variants to include"),
    output: Path = typer.Option(Path("slipstream-report.html"), "--out", "-o", help="HTML file to write"),
    instance: Optional[str] = typer.Option(None, "--instance", help="Priced instance type (see --list-prices)"),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="US$ per hour, overrides --instance"),
    requests_per_month: Optional[float] = typer.Option(None, "--requests-per-month", help="Workload for the monthly cost"),
    tokens_per_request: float = typer.Option(256, "--tokens-per-request", help="Output tokens per request"),
    max_tokens: Optional[int] = typer.Option(8192, "--max-tokens", help="Evaluate on the first N tokens"),
    repeats: int = typer.Option(5, "--repeats"),
    rounds: int = typer.Option(1, "--rounds", help="Benchmark rounds, interleaved"),
    threads: Optional[int] = typer.Option(1, "--threads", help="CPU threads per engine for the benchmarks"),
    as_json: bool = typer.Option(False, "--json", help="Also print the report's data as JSON"),
) -> None:
    """Write one self-contained HTML report: comparison table, accuracy-vs-speed frontier, sizes,
    latency distributions, cost per million tokens (missing figures are measured first)."""
    from slipstream.benchmark.cost import Workload, resolve_price
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.report.build import write_report
    from slipstream.store import Store

    store = Store()
    price = resolve_price(instance, price_per_hour)
    workload = Workload(requests_per_month, tokens_per_request) if requests_per_month else None
    comparison = compare(base, variants, eval_settings=EvalSettings(max_tokens=max_tokens),
                         bench_settings=BenchSettings(repeats=repeats, threads=threads), rounds=rounds, store=store,
                         progress=RichProgress(not as_json))
    data = write_report(comparison, output, store, price, workload)
    if as_json:
        print_json(data)
        return
    rows = [[r["name"], f"{r['speedup']:.2f}×", f"{r['perplexity_change']:+.2%}",
             f"{(r.get('roofline') or {}).get('share_of_limit', float('nan')):.0%}",
             f"${r['cost']['dollars_per_million_tokens']:.3f}",
             f"${r['cost']['workload']['monthly_cost_always_on']:,.0f}" if workload else "—",
             "★" if r["name"] in data["front"] else ""] for r in data["rows"]]
    table(f"priced at {price.name} (${price.price_per_hour}/h)", ["variant", "speed", "ppl Δ", "roofline share",
                                                                   "$ / M tokens", "$ / month", "frontier"], rows)
    out.print(f"wrote {output.resolve()}")
