"""``slipstream compare BASE VARIANT...``: one table, in the terminal, as markdown or as JSON."""

from __future__ import annotations

from typing import List, Optional

import typer

from slipstream.cli.output import RichProgress, out, print_json, table


def compare_cmd(
    base: str = typer.Argument(..., help="The model everything is compared to"),
    variants: List[str] = typer.Argument(..., help="Variants to compare"),
    markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Evaluate on the first N tokens only"),
    window: int = typer.Option(1024, "--window"),
    stride: int = typer.Option(512, "--stride"),
    output_tokens: int = typer.Option(64, "--output-tokens"),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes"),
    repeats: int = typer.Option(5, "--repeats"),
    rounds: int = typer.Option(1, "--rounds", help="Benchmark rounds, interleaved (A B A B ...); >1 measures afresh"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per engine for the benchmarks"),
    eval_threads: Optional[int] = typer.Option(None, "--eval-threads", help="CPU threads for evaluation"),
) -> None:
    """Size, perplexity, KL and speed of each variant with its ratio to BASE (missing figures are measured)."""
    from slipstream.benchmark.run import BenchSettings
    from slipstream.cli.bench import parse_sizes
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings

    result = compare(
        base, variants,
        eval_settings=EvalSettings(window=window, stride=stride, max_tokens=max_tokens, threads=eval_threads),
        bench_settings=BenchSettings(output_tokens=output_tokens, batch_sizes=parse_sizes(batch_sizes),
                                     repeats=repeats, threads=threads),
        rounds=rounds,
        progress=RichProgress(not (as_json or markdown)),
    )
    render(result, as_json=as_json, markdown=markdown)


def render(result, *, as_json: bool = False, markdown: bool = False) -> None:
    if as_json:
        print_json(result.to_dict())
    elif markdown:
        out.print(result.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    else:
        headers, cells = result.table()
        table(f"compared with {result.base}", headers, cells)
