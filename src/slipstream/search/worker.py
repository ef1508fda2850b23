"""One candidate of a search, start to finish: build, screen, evaluate, benchmark.

Runs in a local worker process (``python -m slipstream.search.worker REQUEST``, JSON lines out) or as
a Ray task (:func:`run_candidate` called in the Ray worker). Every outcome, failure included, comes
back as one :class:`~slipstream.search.record.SearchRecord`; nothing raises past this module.

The request is the JSON the search hands a worker: ``model``, ``home`` (the store), ``device``, ``gate``,
``objective``, the ``screen``/``evaluate`` evaluation settings, ``bench`` settings and the engine ``threads``
to benchmark with (the fastest is kept), ``price_per_hour``, the ``candidate``
(:meth:`slipstream.search.space.Candidate.to_dict`), and ``fidelity``: ``probe`` stops after the screen and a
short speed probe (``probe`` settings), the first rung of the search.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import replace
from typing import Any, Callable

from slipstream.evaluation.gate import SELF_VALUES
from slipstream.search.record import BenchSummary, Measurement, SearchRecord, Status, Worker

Emit = Callable[..., None]

OBJECTIVES = ("latency", "throughput", "size", "cost")


def objective_value(objective: str, bench: dict | None, size_bytes: int, price_per_hour: float) -> float | None:
    """The objective as a number where larger is better."""
    if objective == "size":
        return -float(size_bytes)
    if bench is None:
        return None
    speed = "sentences_per_s" if bench.get("kind") == "encoder" else "output_tokens_per_s"
    if objective == "latency":
        return bench["latency"]["sentences_per_s" if speed == "sentences_per_s" else "decode_tokens_per_s"]["median"]
    best = max(t[speed]["median"] for t in bench["throughput"])
    if objective == "throughput":
        return best
    return -price_per_hour / (best * 3600) * 1e6  # cost: negated dollars per million tokens


def run_candidate(request: dict[str, Any], emit: Emit = lambda **_: None) -> SearchRecord:
    """The stages in order; each returns the record moved on, or a final one (screened out) that ends it."""
    from slipstream.evaluation.gate import Gate
    from slipstream.store import Store

    started = time.time()
    candidate = request["candidate"]
    record = SearchRecord(id=candidate["id"], label=candidate["label"], steps=candidate["steps"],
                          status=Status.ERROR, worker=Worker(socket.gethostname(), os.getpid()),
                          max_drop=request["gate"]["max_drop"], timings={},
                          probed_as=candidate.get("stand_in"))
    stage = "build"
    try:
        store, gate = Store(request["home"]), Gate(**request["gate"])
        guards = [Gate(**g) for g in request.get("guards") or ()]
        record = _build(record, request, store, emit)
        if request.get("screen"):
            stage = "screen"
            record = _screen(record, request, store, gate, guards, emit)
            if record.status is Status.SCREENED_OUT:
                return replace(record, seconds=time.time() - started)
        if request.get("fidelity") == "probe":  # the first rung: screened, then a short speed probe
            stage = "probe"
            return replace(_probe(record, request, store, emit), seconds=time.time() - started)
        stage = "evaluate"
        record = _evaluate(record, request, store, gate, guards, emit)
        bench_metrics = None
        if request["objective"] != "size":  # size needs no benchmark
            stage = "benchmark"
            record, bench_metrics = _benchmark(record, request, store, emit)
        record = _judge(record, request, gate, bench_metrics)
    except Exception as exc:  # every failure is a result too
        record = replace(record, status=Status.ERROR, stage=stage, reason=f"{type(exc).__name__}: {exc}",
                         objective=None)
    return replace(record, seconds=time.time() - started)


def _build(record: SearchRecord, request: dict[str, Any], store: Any, emit: Emit) -> SearchRecord:
    from slipstream.pipeline import build
    from slipstream.techniques.registry import config_from_dict

    emit(event="stage", stage="build")
    t = time.time()
    variant = build(request["model"], [config_from_dict(s) for s in record.steps], device=request.get("device"),
                    store=store)
    record = replace(record, name=variant.name, size_bytes=variant.size_bytes)
    record.timings["build_s"] = time.time() - t  # type: ignore[index]
    return record


def _screen(record: SearchRecord, request: dict[str, Any], store: Any, gate: Any, guards: list[Any],
            emit: Emit) -> SearchRecord:
    """The screening slice: a candidate whose best case there misses the gate or a guard goes no further."""
    from slipstream.evaluation.run import EvalSettings, evaluate

    emit(event="stage", stage="screen")
    t = time.time()
    screen = _measure(evaluate(record.name, reference=request["model"], settings=EvalSettings(**request["screen"]),
                               store=store), gate, guards)
    record = replace(record, screen=screen)
    record.timings["screen_s"] = time.time() - t  # type: ignore[index]
    misses = screen.misses(gate, best_case=True)
    if not misses:
        return record
    return replace(record, status=Status.SCREENED_OUT, drop=screen.drop, objective=None,
                   reason="screening slice: " + "; ".join(misses))


def _evaluate(record: SearchRecord, request: dict[str, Any], store: Any, gate: Any, guards: list[Any],
              emit: Emit) -> SearchRecord:
    from slipstream.evaluation.run import EvalSettings, evaluate

    emit(event="stage", stage="evaluate")
    t = time.time()
    full = _measure(evaluate(record.name, reference=request["model"], settings=EvalSettings(**request["evaluate"]),
                             store=store), gate, guards)
    record = replace(record, evaluation=full, drop=full.drop)
    record.timings["evaluate_s"] = time.time() - t  # type: ignore[index]
    return record


def option_sets(request: dict[str, Any], store: Any, variant: str) -> list[dict[str, Any]]:
    """The request's engine option sets that the variant's engine takes (plain always among them)."""
    from slipstream.engines.loading import engine_name
    from slipstream.engines.options import options_class

    names = set(options_class(engine_name(store.get(variant))).names())
    sets = [o for o in request.get("option_sets") or [{}] if set(o) <= names]
    return sets if {} in [dict(o) for o in sets] else [{}, *sets]


def option_label(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "plain"


def _fastest(record: SearchRecord, request: dict[str, Any], store: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The candidate benchmarked with ``settings`` at every thread count and engine option set it takes: the
    objective of each, and the fastest (on a tie the fewer threads, which leave cores to other replicas, and
    the plain options)."""
    from slipstream.benchmark.run import BenchSettings, bench

    runs = []  # (value, threads, options, metrics)
    for options in option_sets(request, store, record.name):  # type: ignore[arg-type]
        for threads in request.get("threads") or [settings.get("threads")]:
            metrics = bench(record.name, settings=BenchSettings(**settings | {"threads": threads,
                                                                              "engine_options": options}),
                            store=store, use_cache=True).metrics
            value = objective_value(request["objective"], metrics, record.size_bytes or 0,
                                    request.get("price_per_hour", 0.0816))
            runs.append((value if value is not None else float("-inf"), threads, options, metrics))
    value, threads, options, metrics = max(runs, key=lambda r: (r[0], -(r[1] or 0), not r[2]))
    plain = [r for r in runs if not r[2]]
    by_options = {}
    for r in runs:
        by_options[option_label(r[2])] = max(by_options.get(option_label(r[2]), float("-inf")), r[0])
    return {"value": value, "threads": threads, "options": options, "metrics": metrics,
            "by_threads": {str(r[1]): r[0] for r in sorted(plain, key=lambda r: r[1] or 0)},
            "by_options": by_options if len(by_options) > 1 else None}


def _benchmark(record: SearchRecord, request: dict[str, Any], store: Any,
               emit: Emit) -> tuple[SearchRecord, dict[str, Any]]:
    emit(event="stage", stage="benchmark")
    t = time.time()
    best = _fastest(record, request, store, request["bench"])
    record.timings["benchmark_s"] = time.time() - t  # type: ignore[index]
    return replace(record, bench=BenchSummary.from_metrics(best["metrics"]), threads=best["threads"],
                   by_threads=best["by_threads"], engine_options=best["options"] or None,
                   by_options=best["by_options"]), best["metrics"]


def _probe(record: SearchRecord, request: dict[str, Any], store: Any, emit: Emit) -> SearchRecord:
    """The objective on a short benchmark (``request["probe"]``: few tokens, one repeat) at each thread count:
    cheap enough to run on every candidate, close enough to order them (docs/search.md#how-it-searches)."""
    t = time.time()
    options = None
    if request["objective"] == "size":
        value, threads = -float(record.size_bytes or 0), None
    else:
        emit(event="stage", stage="probe")
        best = _fastest(record, request, store, request["probe"])
        value, threads, options = best["value"], best["threads"], best["options"] or None
    record.timings["probe_s"] = time.time() - t  # type: ignore[index]
    return replace(record, status=Status.PROBED, probe=value, threads=threads, engine_options=options)


def _judge(record: SearchRecord, request: dict[str, Any], gate: Any, bench_metrics: dict | None) -> SearchRecord:
    """The objective, and the verdict of the gate and every guard on the full evaluation."""
    objective = objective_value(request["objective"], bench_metrics, record.size_bytes,  # type: ignore[arg-type]
                                request.get("price_per_hour", 0.0816))
    misses = record.evaluation.misses(gate) if record.evaluation else []
    if not misses:
        return replace(record, objective=objective, status=Status.PASSED)
    return replace(record, objective=objective, status=Status.FAILED_GATE, reason="; ".join(misses))


def _against(report: Any, gate: Any) -> tuple[float, float, float | None, float | None]:
    """How much worse than the reference on ``gate``'s metric, the best case the data allows (the optimistic
    end of its 95% interval), and the candidate's and the reference's values."""
    metric = gate.metric.rsplit(".", 1)[-1]
    m, r = report.metrics, report.reference_metrics or {}
    ref = r.get(metric, SELF_VALUES.get(metric))  # KL and top-1 of the reference against itself
    if metric == "perplexity" and "perplexity_ratio" in m and gate.relative:
        lo, hi = m["perplexity_ratio_ci95"]
        drop, best = m["perplexity_ratio"] - 1, lo - 1
    else:
        drop = gate.drop(ref, m[metric])
        se = (m.get(f"{metric}_stderr") or 0.0) + (r.get(f"{metric}_stderr") or 0.0)
        best = drop - 1.96 * (se / abs(ref) if gate.relative and ref else se)
    return drop, best, m.get(metric), ref


def _measure(report: Any, gate: Any, guards: list[Any] = ()) -> Measurement:  # type: ignore[assignment]
    """The candidate on the gate's metric and on each guard's."""
    m = report.metrics
    drop, best, value, ref = _against(report, gate)
    checked = []
    for g in guards:
        g_drop, g_best, g_value, _ = _against(report, g)
        checked.append({"metric": g.metric, "value": g_value, "drop": g_drop, "best_case_drop": g_best,
                        "max_drop": g.max_drop, "relative": g.relative})
    return Measurement(drop=drop, best_case_drop=best, candidate=value, reference=ref,
                       tokens=m.get("tokens"), items=m.get("items"), guards=checked or None,
                       **{k: m[k] for k in ("kl_mean", "top1_agreement", "perplexity") if k in m})


def main() -> None:
    from slipstream.lifetime import die_with_parent

    die_with_parent()  # a search killed outright must not leave this worker building into the store

    def emit(**payload: Any) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    record = run_candidate(json.loads(sys.argv[1]), emit)
    emit(event="result", record=record.to_dict())


if __name__ == "__main__":
    main()
