"""``slipstream evaluate VARIANT [--task T ...] [--gate METRIC=DROP ...]``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from slipstream.cli.output import RichProgress, err, out, print_json, table


def evaluate_cmd(
    variant: str = typer.Argument(..., help="Model or variant in the store"),
    task: List[str] = typer.Option(["wikitext2"], "--task", help="Task name, repeatable (see --list-tasks)"),
    text: Optional[Path] = typer.Option(None, "--text", help="Shorthand for --task file:PATH (perplexity on a file)"),
    reference: str = typer.Option("parent", "--reference", help="Compare against this model ('parent' by default)"),
    no_reference: bool = typer.Option(False, "--no-reference", help="Score the variant alone (no KL, no gate)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Dataset tasks: only the first N items"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Perplexity: only the first N tokens"),
    window: int = typer.Option(1024, "--window", help="Perplexity: tokens per sliding window"),
    stride: int = typer.Option(512, "--stride", help="Perplexity: tokens between window starts"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generation tasks: token budget"),
    source_prefix: Optional[str] = typer.Option(
        None, "--source-prefix", help="Seq2seq translation: text before each source (default: the family's, "
        "'translate English to German: ' for T5, none for Marian)"),
    beam_size: int = typer.Option(1, "--beam-size", help="Seq2seq generation: beams searched (1: greedy)"),
    gate: List[str] = typer.Option([], "--gate", help="METRIC[=DROP], e.g. perplexity=1% or arc_easy.acc_norm=0.02abs"),
    max_drop: Optional[str] = typer.Option(None, "--max-drop", help="Default DROP for --gate METRIC: 1% or 0.02"),
    absolute: bool = typer.Option(False, "--absolute", help="Read a plain --max-drop number as absolute points"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per engine"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if a result is stored"),
    list_tasks: bool = typer.Option(False, "--list-tasks", help="List the tasks and exit"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON"),
) -> None:
    """Score VARIANT through its engine beside its reference; with --gate, exit 1 if it is too much worse."""
    from slipstream.evaluation.gate import Gate
    from slipstream.evaluation.run import EvalSettings, check_gates, evaluate
    from slipstream.evaluation.tasks import BUILTIN, PREFIXES, get_task

    if list_tasks:
        rows = [[name, get_task(name).kind, ", ".join(get_task(name).metrics), get_task(name).description]
                for name in BUILTIN] + [[p, "", "", "your own data"] for p in PREFIXES]
        table(None, ["task", "kind", "metrics", "description"], rows)
        return
    gates = [Gate.parse(g, max_drop, absolute) for g in gate]
    if max_drop and not gates:
        gates = [Gate.parse(get_task(task[0]).metrics[0], max_drop, absolute)]
    tasks = [f"file:{text}"] if text else task
    progress = RichProgress(not as_json)
    reports = []
    for name in tasks:
        settings = EvalSettings(task=name, window=window, stride=stride, max_tokens=max_tokens, limit=limit,
                                max_new_tokens=max_new_tokens, threads=threads, source_prefix=source_prefix,
                                beam_size=beam_size)
        reports.append(evaluate(variant, reference=None if no_reference else reference, settings=settings,
                                progress=progress, use_cache=not no_cache))
    results = check_gates(reports, gates) if gates else []
    if as_json:
        print_json({"reports": [r.to_dict() for r in reports], "gates": [g.to_dict() for g in results],
                    "passed": all(g.passed for g in results)})
    else:
        for report in reports:
            _render(report, get_task(report.task).metrics)
        for g in results:
            (out if g.passed else err).print(("PASS  " if g.passed else "FAIL  ") + g.message(), highlight=False)
    if any(not g.passed for g in results):
        raise typer.Exit(1)


def _render(report, metrics: tuple[str, ...]) -> None:
    m, r = report.metrics, report.reference_metrics or {}
    shown = [k for k in (*metrics, "tokens", "items") if k in m]
    rows = []
    for k in shown:
        rows.append([k, _fmt(r.get(k)), _fmt(m.get(k)), _delta(k, r.get(k), m.get(k)), _err(m, k)])
    title = f"{report.task}: {report.variant}" + (f" vs {report.reference}" if report.reference else "") + \
        (" (cached)" if report.cached else "")
    table(title, ["metric", report.reference or "reference", report.variant, "change", "± (95%)"], rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def _delta(metric: str, ref, cand) -> str:
    if not isinstance(ref, (int, float)) or not isinstance(cand, (int, float)) or metric in ("tokens", "items") \
            or not ref:
        return "—"
    return f"{(cand / ref - 1):+.2%}"


def _err(m: dict, k: str) -> str:
    if k == "perplexity" and m.get("perplexity_ci95"):
        lo, hi = m["perplexity_ci95"]
        return f"{lo:.3f}–{hi:.3f}"
    for key, scale in ((f"{k}_stderr", 1.96), (f"{k}_ci95_halfwidth", 1.0)):
        if isinstance(m.get(key), float) and not math.isnan(m[key]):
            return f"{m[key] * scale:.4f}"
    return ""
