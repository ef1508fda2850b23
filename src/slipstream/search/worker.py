"""One candidate of a search, start to finish: build, screen, evaluate, benchmark.

Runs in a local worker process (``python -m slipstream.search.worker REQUEST``, JSON lines out) or as
a Ray task (:func:`run_candidate` called in the Ray worker). Every outcome, failure included, comes
back as one record; nothing raises past this module.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Callable

from slipstream.evaluation.gate import SELF_VALUES

Emit = Callable[..., None]

OBJECTIVES = ("latency", "throughput", "size", "cost")


def objective_value(objective: str, bench: dict | None, size_bytes: int, price_per_hour: float) -> float | None:
    """The objective as a number where larger is better."""
    if objective == "size":
        return -float(size_bytes)
    if bench is None:
        return None
    if objective == "latency":
        return bench["latency"]["decode_tokens_per_s"]["median"]
    best = max(t["output_tokens_per_s"]["median"] for t in bench["throughput"])
    if objective == "throughput":
        return best
    return -price_per_hour / (best * 3600) * 1e6  # cost: negated dollars per million tokens


def run_candidate(request: dict[str, Any], emit: Emit = lambda **_: None) -> dict[str, Any]:
    from slipstream.benchmark.run import BenchSettings, bench
    from slipstream.evaluation.gate import Gate
    from slipstream.evaluation.run import EvalSettings, evaluate
    from slipstream.pipeline import build
    from slipstream.store import Store
    from slipstream.techniques.registry import config_from_dict

    started = time.time()
    record: dict[str, Any] = {"id": request["candidate"]["id"], "label": request["candidate"]["label"],
                              "steps": request["candidate"]["steps"], "worker": {"host": socket.gethostname(),
                                                                                 "pid": os.getpid()},
                              "max_drop": request["gate"]["max_drop"], "timings": {}}
    stage = "build"
    try:
        store = Store(request["home"])
        gate = Gate(**request["gate"])
        emit(event="stage", stage="build")
        t = time.time()
        variant = build(request["model"], [config_from_dict(s) for s in request["candidate"]["steps"]],
                        device=request.get("device"), store=store)
        record |= {"name": variant.name, "size_bytes": variant.size_bytes}
        record["timings"]["build_s"] = time.time() - t

        reference = request["model"]
        if request.get("screen"):
            stage = "screen"
            emit(event="stage", stage="screen")
            t = time.time()
            screen = _drop(evaluate(variant.name, reference=reference, settings=EvalSettings(**request["screen"]),
                                    store=store), gate)
            record["screen"] = screen
            record["timings"]["screen_s"] = time.time() - t
            if screen["best_case_drop"] > gate.max_drop:
                return record | {"status": "screened_out", "drop": screen["drop"], "objective": None,
                                 "reason": f"even the best case on the screening slice is {screen['best_case_drop']:.2%} "
                                           f"worse (allowed {gate.max_drop:.2%})" if gate.relative else
                                           f"even the best case on the screening slice misses the gate",
                                 "seconds": time.time() - started}
        stage = "evaluate"
        emit(event="stage", stage="evaluate")
        t = time.time()
        full = _drop(evaluate(variant.name, reference=reference, settings=EvalSettings(**request["evaluate"]),
                              store=store), gate)
        record |= {"evaluation": full, "drop": full["drop"]}
        record["timings"]["evaluate_s"] = time.time() - t
        passed = full["drop"] <= gate.max_drop + 1e-12

        bench_metrics = None
        if request["objective"] != "size":  # size needs no benchmark
            stage = "benchmark"
            emit(event="stage", stage="benchmark")
            t = time.time()
            bench_metrics = bench(variant.name, settings=BenchSettings(**request["bench"]), store=store,
                                  use_cache=True).metrics
            record["timings"]["benchmark_s"] = time.time() - t
            record["bench"] = _bench_summary(bench_metrics)
        record["objective"] = objective_value(request["objective"], bench_metrics, variant.size_bytes,
                                              request.get("price_per_hour", 0.0816))
        record["status"] = "passed" if passed else "failed_gate"
        if not passed:
            record["reason"] = (f"{gate.metric} {full['drop']:+.2%} vs the original, allowed {gate.max_drop:.2%}"
                                if gate.relative else f"{gate.metric} drop {full['drop']:.4g} > {gate.max_drop:g}")
    except Exception as exc:  # every failure is a result too
        record |= {"status": "error", "stage": stage, "reason": f"{type(exc).__name__}: {exc}", "objective": None,
                   "drop": record.get("drop")}
    record["seconds"] = time.time() - started
    return record


def _drop(report: Any, gate: Any) -> dict:
    """How much worse than the reference on the gate's metric, with the best case the data allows."""
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
    out = {"drop": drop, "best_case_drop": best, "candidate": m.get(metric), "reference": ref,
           "tokens": m.get("tokens"), "items": m.get("items")}
    for k in ("kl_mean", "top1_agreement", "perplexity"):
        if k in m:
            out[k] = m[k]
    return out


def _bench_summary(m: dict) -> dict:
    lat = m["latency"]
    return {"decode_tokens_per_s": lat["decode_tokens_per_s"]["median"],
            "tpot_p50_s": lat["tpot_s"]["p50"], "tpot_p95_s": lat["tpot_s"]["p95"], "ttft_p50_s": lat["ttft_s"]["p50"],
            "batch_tokens_per_s": {str(t["batch_size"]): t["output_tokens_per_s"]["median"] for t in m["throughput"]},
            "peak_rss_bytes": m["memory"]["peak_rss_bytes"], "engine": m["engine"]}


def main() -> None:
    def emit(**payload: Any) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    record = run_candidate(json.loads(sys.argv[1]), emit)
    emit(event="result", record=record)


if __name__ == "__main__":
    main()
