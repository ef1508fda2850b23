"""``slipstream evaluate VARIANT``: perplexity, and KL / top-1 agreement against the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slipstream.cli.output import RichProgress, print_json, table


def evaluate_cmd(
    variant: str = typer.Argument(..., help="Model or variant in the store"),
    reference: str = typer.Option("parent", "--reference", help="Compare against this model ('parent' by default)"),
    no_reference: bool = typer.Option(False, "--no-reference", help="Perplexity only, no KL"),
    task: str = typer.Option("wikitext2", "--task", help="Bundled text set to score"),
    text: Optional[Path] = typer.Option(None, "--text", help="Score this UTF-8 text file instead of --task"),
    window: int = typer.Option(1024, "--window", help="Tokens per sliding window"),
    stride: int = typer.Option(512, "--stride", help="Tokens between window starts"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Score only the first N tokens"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per engine"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if a result is stored"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON"),
) -> None:
    """Score VARIANT on WikiText-2 (sliding window) through its engine, beside its reference."""
    from slipstream.evaluation.run import EvalSettings, evaluate

    settings = EvalSettings(task=f"file:{text}" if text else task, window=window, stride=stride,
                           max_tokens=max_tokens, threads=threads)
    report = evaluate(variant, reference=None if no_reference else reference, settings=settings,
                      progress=RichProgress(not as_json), use_cache=not no_cache)
    if as_json:
        print_json(report.to_dict())
        return
    m, r = report.metrics, report.reference_metrics
    rows = [[report.variant, f"{m['perplexity']:.4f}", _ci(m), f"{m['tokens']:,}", _f(m.get("kl_mean"), ".5f"),
             _f(m.get("top1_agreement"), ".2%")]]
    if r:
        rows.insert(0, [f"{report.reference} (reference)", f"{r['perplexity']:.4f}", _ci(r), f"{r['tokens']:,}", "—", "—"])
    title = f"{settings.task}: window {window}, stride {stride}" + (" (cached)" if report.cached else "")
    table(title, ["model", "perplexity", "95% CI", "tokens", "KL (mean)", "top-1 agree"], rows)


def _ci(m: dict) -> str:
    lo, hi = m.get("perplexity_ci95") or (float("nan"), float("nan"))
    return f"{lo:.3f}–{hi:.3f}"


def _f(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)
