"""``slipstream demo``: the README's main job."""

from __future__ import annotations

import time
from typing import Optional

import typer

from slipstream.cli.output import RichProgress, err, out


def demo_cmd(
    eval_tokens: int = typer.Option(8_192, "--eval-tokens", help="WikiText-2 test tokens to score"),
    repeats: int = typer.Option(5, "--repeats", help="Timed benchmark runs per measurement"),
    rounds: int = typer.Option(1, "--rounds", help="Benchmark rounds, interleaved across variants"),
    threads: int = typer.Option(1, "--threads", help="CPU threads per engine for the benchmarks"),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON"),
    markdown: bool = typer.Option(False, "--markdown", help="Also print the table as markdown"),
) -> None:
    """Import SmolLM2-135M-Instruct, make CTranslate2 float32/int8/int16 variants, evaluate, benchmark, compare."""
    from slipstream.cli.compare import render
    from slipstream.demo import DemoSettings, run_demo

    start = time.perf_counter()
    result = run_demo(DemoSettings(eval_tokens=eval_tokens, repeats=repeats, rounds=rounds, bench_threads=threads),
                      progress=RichProgress(not as_json))
    render(result, as_json=as_json)
    if markdown and not as_json:
        out.print(result.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    if not as_json:
        err.print(f"demo finished in {time.perf_counter() - start:.0f} s")
