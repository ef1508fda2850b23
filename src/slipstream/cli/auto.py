"""``slipstream auto MODEL``: search the catalog for the best variant that meets an accuracy gate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from slipstream.cli.output import err, out, print_json, table
from slipstream.search.settings import parse_duration


class _Printer:
    """Progress lines on stderr: which candidate, what stage, best so far, time left."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.best: str | None = None

    def __call__(self, e: dict) -> None:
        if not self.enabled:
            return
        left = e.get("time_left_s")
        left_s = "" if left is None else f" · {max(left, 0) / 60:.1f} min left"
        kind = e["event"]
        if kind == "reference":
            if e["stage"] == "done":
                r = e["reference"]
                err.print(f"original: {r.metric} {r.value:.4g}, {r.size_bytes / 1e6:.0f} MB")
            else:
                err.print(f"original: {e['stage']}")
        elif kind == "space":
            err.print(f"{e['candidates']} candidates ({e['resumed']} already done, {len(e['skipped'])} left out "
                      f"as not runnable here)")
            for s in e["skipped"]:
                err.print(f"  left out {s.recipe}: {s.reason}", highlight=False, markup=False)
        elif kind == "start":
            twin = f" (probing its stand-in {e['stand_in']}: same format, same speed)" if e.get("stand_in") else ""
            rung = "full" if e.get("rung") != "probe" else "probe" if twin else "screen+probe"
            err.print(f"[{rung} {e['index']}/{e['of']}] {e['label']}{twin}{left_s}", highlight=False, markup=False)
        elif kind == "probed":
            r = e["record"]
            ratio = f"{r.probe_ratio:.2f}x the original's" if r.probe_ratio else "measured"
            held = "stand-in built" if r.probed_as else "held the gate on the slice"
            err.print(f"      {held}; speed probe {ratio}{left_s}", highlight=False, markup=False)
        elif kind == "stage":
            err.print(f"      {e['stage']}{left_s}", highlight=False, markup=False)
        elif kind == "finished":
            r = e["record"]
            self.best = e.get("best") or self.best
            detail = r.reason or ""
            ratio = r.objective_ratio
            err.print(f"      {r.status}" + (f", gate metric {r.drop:+.2%}" if r.drop is not None else "")
                      + (f", {ratio:.2f}x the original" if ratio else "") + (f" ({detail})" if detail else "")
                      + f" · best so far: {self.best or 'none'}{left_s}", highlight=False, markup=False)
        elif kind == "confirm":
            err.print(f"confirming {', '.join(e['names'])} side by side with the original ({e['rounds']} rounds)")
        elif kind == "log":
            err.print(e["message"])


def auto_cmd(
    model: str = typer.Argument(..., help="A model in the store, or a source to import (e.g. smollm2-135m)"),
    max_drop: str = typer.Option("1%", "--max-drop", help="At most this much worse on the gate metric: 1%, 0.02abs"),
    metric: Optional[str] = typer.Option(None, "--metric",
                                         help="Gate metric: perplexity or kl_mean (WikiText-2), or TASK.METRIC such "
                                              "as arc_easy.acc_norm [default: perplexity; for an embedding model "
                                              "embeddings.cosine_mean]"),
    max_kl: str = typer.Option("auto", "--max-kl",
                               help="WikiText-2 gates: the mean KL divergence from the original (nats per token) "
                                    "must stay within this too; auto: ln(1 + the perplexity drop allowed), "
                                    "0.00995 for 1%; 'none' turns it off"),
    objective: str = typer.Option("latency", "--objective", help="latency | throughput | size | cost"),
    budget: str = typer.Option("30m", "--budget", help="Wall-clock budget (30m, 1h, none)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    recipes: Optional[Path] = typer.Option(None, "--recipes", help="YAML/JSON recipe file extending the space"),
    only_recipes: bool = typer.Option(False, "--only-recipes", help="Search only the recipe file's candidates"),
    include: List[str] = typer.Option([], "--include", help="Only candidates using this technique (repeatable)"),
    exclude: List[str] = typer.Option([], "--exclude", help="No candidates using this technique (repeatable)"),
    eval_tokens: int = typer.Option(8_192, "--eval-tokens", help="Perplexity gate: tokens in the full evaluation"),
    screen_tokens: int = typer.Option(2_048, "--screen-tokens", help="Perplexity gate: tokens in the screening slice"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Task gate: items in the full evaluation"),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (with --executor ray)"),
    workers: Optional[int] = typer.Option(None, "--workers",
                                          help="Candidates at once (local default 1: timings stay clean)"),
    threads: str = typer.Option("auto", "--threads",
                                help="Engine threads each candidate is benchmarked with, the fastest kept and "
                                     "recommended for serving: auto (1 and every core), N, or N,M"),
    confirm: int = typer.Option(2, "--confirm", help="Leaders re-measured side by side with the original"),
    run_all: bool = typer.Option(False, "--run-all", help="Measure every candidate that holds the gate on the "
                                 "screening slice in full, even those whose speed probe (x1.25) cannot beat the best"),
    workload: str = typer.Option("fixed", "--workload",
                                 help="What the benchmark runs: fixed (a 128-token prompt), or a prompt set: "
                                      "grounded (rewrite/summarise a passage), mt-bench, vicuna, file:PATH"),
    prompt_lookup: int = typer.Option(8, "--prompt-lookup",
                                      help="On a prompt set, also measure engines that take it with prompt-lookup "
                                           "drafts of N tokens, kept where faster (0: never)"),
    instance: Optional[str] = typer.Option(None, "--instance", help="Cost objective: a priced instance"),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="Cost objective: your price"),
    report: Optional[Path] = typer.Option(Path("slipstream-auto.html"), "--report",
                                          help="HTML report to write ('' for none)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Find the fastest (or smallest, or cheapest) variant within the accuracy gate; keep every candidate."""
    from slipstream.evaluation.gate import Gate
    from slipstream.search.executors import make_executor
    from slipstream.search.record import Status
    from slipstream.search.run import SearchSettings, search

    if metric is None:
        from slipstream.search.settings import default_gate, model_task

        metric = default_gate(model_task(model)).metric
    gate = Gate.parse(metric, default_drop=max_drop)
    settings = SearchSettings(model=model, gate=gate, objective=objective, budget_s=parse_duration(budget),
                              device=device, eval_tokens=eval_tokens, screen_tokens=screen_tokens, eval_limit=limit,
                              bench_threads=threads, confirm=confirm, instance=instance,
                              price_per_hour=price_per_hour, recipe_file=str(recipes) if recipes else None,
                              replace_defaults=only_recipes, include=tuple(include), exclude=tuple(exclude),
                              skip_margin=None if run_all else 1.25, max_kl=max_kl, workload=workload,
                              prompt_lookup=prompt_lookup)
    start = time.perf_counter()
    if report is not None and not report.name:  # --report '' (typer makes it Path('.')): no report
        report = None
    result = search(settings, executor=make_executor(executor, workers, address), listener=_Printer(not as_json),
                    report=report)
    if as_json:
        print_json(result.to_dict())
        return
    from slipstream.search.run import guard_values

    rows = []
    for r in sorted(result.records, key=lambda r: (r.status is not Status.PASSED, -(r.objective or -1e30))):
        rows.append([r.shown_name + (" ★" if r in result.frontier else ""), r.status.value,
                     "—" if r.drop is None else f"{r.drop:+.2%}" if gate.relative else f"{r.drop:+.4g}",
                     *("—" if v is None else f"{v:.4g}" for v in guard_values(r, settings.guards)),
                     "—" if r.ratio is None else f"{r.ratio:.2f}x",
                     "—" if not r.size_bytes else f"{r.size_bytes / 1e6:.0f}",
                     f"{r.seconds or 0:.0f}", (r.reason or "")[:80]])
    table(f"search {result.search_id}: {settings.describe_gates()}, objective {objective} (★ Pareto frontier)",
          ["variant", "status", "gate Δ", *(g.metric for g in settings.guards), f"{objective} ×", "MB", "s",
           "reason"], rows)
    for n in result.not_run:
        err.print(f"not run: {n.label} ({n.reason})", highlight=False, markup=False)
    out.print(result.summary(), highlight=False, markup=False)
    if result.recommended:
        rec = result.recommended
        extra = "".join(f", {k}={v}" for k, v in (rec.get("engine_options") or {}).items())
        out.print(f"serves fastest here on {rec['engine']} with {rec['threads']} thread(s), {rec['batching']} "
                  f"batching{extra}: `slipstream serve {result.best.name}` uses them", highlight=False, markup=False)
    if result.report:
        out.print(f"report: {result.report}", highlight=False, markup=False)
    err.print(f"search finished in {time.perf_counter() - start:.0f} s ({result.resumed} candidate(s) resumed)")
