"""The automatic search: the fastest (smallest, cheapest) variant that meets an accuracy gate.

1. The original is measured first (evaluation on the gate's task, benchmark).
2. Candidates from the catalog (:mod:`slipstream.search.space`) are ordered by expected value: prior
   gain on the objective times the chance of passing, per expected minute. For speed objectives, a
   candidate whose prior speed-up, even 1.5 times over, is below the best passing one measured so far
   is not run (``skip_margin``; ``--run-all`` runs it): it is listed as not run, with why.
3. Each candidate is built, screened on a small slice (dropped when even the best case the slice
   allows misses the gate), then fully evaluated and benchmarked, in a worker (local process or Ray).
4. The search goes on through the whole space or until the budget is spent; every finished candidate
   is appended to a ledger at once, so a killed search restarted with the same arguments reuses it.
5. The best passing candidates are confirmed side by side with the original in interleaved rounds
   (single benchmarks on a shared machine drift), and the winner is chosen on those ratios.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.evaluation.gate import SELF_VALUES, Gate
from slipstream.jsonlines import json_lines
from slipstream.search.select import closest_misses, frontier, select
from slipstream.search.space import Candidate, build_space
from slipstream.search.worker import OBJECTIVES, objective_value
from slipstream.store import Store

LEDGER_VERSION = 1
Listener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchSettings:
    model: str
    gate: Gate = Gate("perplexity", 0.01)
    task: str | None = None  # the gate's task; None: from the metric (perplexity -> wikitext2, "t.m" -> t)
    objective: str = "latency"
    budget_s: float | None = 1800.0
    device: str = "cpu"
    eval_tokens: int = 8_192  # perplexity tasks: full evaluation (first N WikiText-2 test tokens)
    screen_tokens: int = 2_048  # perplexity tasks: screening slice
    window: int = 1024  # perplexity tasks: tokens per window, and between window starts
    stride: int = 512
    eval_limit: int | None = None  # dataset tasks: items in the full evaluation
    screen_limit: int = 200  # dataset tasks: items in the screening slice
    output_tokens: int = 64
    repeats: int = 3
    bench_threads: int | None = 1
    eval_threads: int | None = None
    instance: str | None = None  # cost objective: a priced instance (default aws-m7g.large) ...
    price_per_hour: float | None = None  # ... or a price of your own
    confirm: int = 2  # best passing candidates re-measured side by side with the original
    confirm_rounds: int = 2
    recipe_file: str | None = None
    replace_defaults: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # latency/throughput: a candidate whose prior speed-up times this margin is below the best passing
    # candidate's measured speed-up is not run (listed as not run, with why); None runs every candidate.
    skip_margin: float | None = 1.5

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidConfig(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise InvalidConfig(f"budget must be positive, got {self.budget_s}s")
        if self.device not in ("cpu", "cuda"):
            raise InvalidConfig(f"device must be cpu or cuda, got {self.device!r}")
        if self.skip_margin is not None and self.skip_margin < 1:
            raise InvalidConfig(f"skip margin must be at least 1 (or None to run every candidate), got {self.skip_margin}")

    @property
    def gate_task(self) -> str:
        if self.task:
            return self.task
        if "." in self.gate.metric:
            return self.gate.metric.split(".", 1)[0]
        if self.gate.metric in ("perplexity", "kl_mean", "top1_agreement"):
            return "wikitext2"
        raise InvalidConfig(f"gate metric {self.gate.metric!r}: name its task as TASK.METRIC "
                            "(e.g. arc_easy.acc_norm) or pass --task")

    def eval_settings(self, screen: bool) -> dict[str, Any]:
        from slipstream.evaluation.tasks import get_task

        task = get_task(self.gate_task)
        d: dict[str, Any] = {"task": task.name, "threads": self.eval_threads}
        if task.kind == "perplexity":
            d |= {"max_tokens": self.screen_tokens if screen else self.eval_tokens, "window": self.window,
                  "stride": self.stride}
        else:
            d["limit"] = self.screen_limit if screen else self.eval_limit
        return d

    def bench_settings(self) -> dict[str, Any]:
        batch = (1,) if self.objective in ("latency", "size") else (1, 8)
        return {"output_tokens": self.output_tokens, "batch_sizes": batch, "repeats": self.repeats,
                "threads": self.bench_threads, "device": self.device}

    def identity(self, model_sha: str) -> dict[str, Any]:
        """What decides every candidate's record: a restart with the same identity resumes."""
        return {"v": LEDGER_VERSION, "model": self.model, "sha": model_sha, "gate": asdict(self.gate),
                "objective": self.objective, "device": self.device, "screen": self.eval_settings(True),
                "evaluate": self.eval_settings(False), "bench": self.bench_settings(),
                "price": asdict(self.price()) if self.objective == "cost" else None}

    def price(self) -> Any:
        from slipstream.benchmark.cost import resolve_price

        return resolve_price(self.instance, self.price_per_hour)


@dataclass
class SearchResult:
    search_id: str
    settings: dict[str, Any]
    reference: dict[str, Any]
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    frontier: list[dict[str, Any]]
    closest: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    not_run: list[dict[str, Any]]
    confirmed: dict[str, Any] | None = None
    report: str | None = None
    seconds: float = 0.0
    resumed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.best:
            speed = ""
            if self.confirmed and self.best["name"] in self.confirmed["speedup"]:
                speed = f", {self.confirmed['speedup'][self.best['name']]:.2f}x the original (confirmed side by side)"
            return (f"best: {self.best['name']} ({self.best['label']}), {_drop_text(self.best)} on the gate metric"
                    f"{speed}")
        if self.closest:
            c = self.closest[0]
            return (f"no candidate passed; closest: {c.get('name', c['label'])} missed by "
                    f"{_fmt_drop(c['drop'] - c['max_drop'], self.settings['gate']['relative'])}")
        return "no candidate passed and none was measured"


def _fmt_drop(value: float, relative: bool) -> str:
    return f"{value:+.2%}" if relative else f"{value:+.4g}"


def _drop_text(record: dict[str, Any]) -> str:
    return f"{record['drop']:+.2%}" if record.get("drop") is not None else "n/a"


class Ledger:
    """Append-only JSON lines, one per finished candidate, fsynced: a kill loses at most the candidate
    that was running, never a finished one."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "search.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
        self.path = directory / "ledger.jsonl"

    def load(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for record in json_lines(self.path.read_text().splitlines()):  # a line cut short by a kill is skipped
                out[record["id"]] = record
        return out

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def expected_value(candidate: Candidate, objective: str) -> float:
    p = candidate.prior
    gain = 1 / p.size_ratio if objective == "size" else p.speedup
    return gain * p.pass_probability / max(p.minutes, 0.1)


def search(settings: SearchSettings, *, store: Store | None = None, executor: Any = None,
           listener: Listener | None = None, report: Path | None = None) -> SearchResult:
    from slipstream.benchmark.run import BenchSettings, bench
    from slipstream.evaluation.run import EvalSettings, evaluate
    from slipstream.models.intake import import_model

    started = time.time()
    store = store or Store()
    emit = listener or (lambda event: None)
    deadline = started + settings.budget_s if settings.budget_s else None
    if executor is None:
        from slipstream.search.executors import LocalExecutor

        executor = LocalExecutor(1)

    if not store.exists(settings.model):
        emit({"event": "log", "message": f"importing {settings.model}"})
        import_model(settings.model, store=store)
    model = store.get(settings.model)
    identity = settings.identity(model.sha256)
    search_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    ledger = Ledger(store.home / "searches" / search_id, identity)
    done = ledger.load()

    # 1. The original, measured first (cached in the store when already done).
    emit({"event": "reference", "stage": "evaluate", "name": settings.model})
    ref_eval = evaluate(settings.model, reference=None, settings=EvalSettings(**settings.eval_settings(False)),
                        store=store)
    metric = settings.gate.metric.rsplit(".", 1)[-1]
    if metric not in ref_eval.metrics and metric not in SELF_VALUES:
        raise InvalidConfig(f"task {settings.gate_task} reports {', '.join(sorted(ref_eval.metrics))}; "
                            f"the gate's metric {metric!r} is not among them")
    ref_bench, bench_s = None, 0.0
    if settings.objective != "size":
        emit({"event": "reference", "stage": "benchmark", "name": settings.model})
        t = time.time()
        ref_bench = bench(settings.model, settings=BenchSettings(**settings.bench_settings()), store=store,
                          use_cache=True).metrics
        bench_s = max(time.time() - t, 20.0)  # the original is the slowest to benchmark; cached: a guess
    reference = {"name": settings.model, "metric": metric, "value": ref_eval.metrics.get(metric, SELF_VALUES.get(metric)),
                 "size_bytes": model.size_bytes,
                 "objective": objective_value(settings.objective, ref_bench, model.size_bytes,
                                              settings.price().price_per_hour)}
    emit({"event": "reference", "stage": "done", "reference": reference})

    # 2. The space, in expected-value order.
    candidates, skipped = build_space(settings.device, Path(settings.recipe_file) if settings.recipe_file else None,
                                      list(settings.include) or None, list(settings.exclude) or None,
                                      settings.replace_defaults)
    if not candidates:
        raise SlipstreamError("no candidate can run here: " +
                              "; ".join(f"{s['recipe']}: {s['reason']}" for s in skipped[:5]))
    candidates.sort(key=lambda c: -expected_value(c, settings.objective))
    records = [done[c.id] for c in candidates if c.id in done]
    resumed = len(records)
    todo = [c for c in candidates if c.id not in done]
    emit({"event": "space", "candidates": len(candidates), "resumed": resumed, "skipped": skipped,
          "order": [c.label for c in candidates]})

    base_request = {"model": settings.model, "home": str(store.home), "device": settings.device,
                    "gate": asdict(settings.gate), "objective": settings.objective,
                    "screen": settings.eval_settings(True), "evaluate": settings.eval_settings(False),
                    "bench": settings.bench_settings(), "price_per_hour": settings.price().price_per_hour}
    durations = [r["seconds"] for r in records if r.get("seconds")]
    # Time kept back for the confirmation rounds and the report at the end.
    confirm_reserve = (settings.confirm_rounds * (settings.confirm + 1) + 1) * bench_s if ref_bench else 0.0
    not_run: list[dict[str, Any]] = []
    state = {"index": 0}

    def best_record() -> dict[str, Any] | None:
        return select(records)

    def hopeless(c: Candidate) -> str | None:
        """Why ``c`` cannot beat the best passing candidate even at ``skip_margin`` times its prior."""
        if settings.skip_margin is None or settings.objective not in ("latency", "throughput"):
            return None
        best = best_record()
        ratio = (best or {}).get("objective_ratio")
        if not ratio or c.prior.speedup * settings.skip_margin >= ratio:
            return None
        return (f"cannot beat {best['label']} ({ratio:.2f}x measured): expected {c.prior.speedup:g}x, "
                f"x{settings.skip_margin:g} margin")

    def requests():
        for c in todo:
            why = hopeless(c)
            if why:
                not_run.append({"label": c.label, "reason": why})
                continue
            if deadline is not None:
                expected = (sum(durations) / len(durations)) if durations else c.prior.minutes * 60
                left = deadline - time.time() - confirm_reserve
                if left < expected * 0.5:
                    not_run.append({"label": c.label, "reason": f"budget: {max(left, 0):.0f}s left, a candidate "
                                                                f"takes about {expected:.0f}s"})
                    continue
            state["index"] += 1
            emit({"event": "start", "label": c.label, "index": state["index"], "of": len(todo),
                  "time_left_s": None if deadline is None else deadline - time.time()})
            yield base_request | {"candidate": c.to_dict()}

    def on_event(request: dict[str, Any], event: dict[str, Any]) -> None:
        emit({"event": "stage", "label": request["candidate"]["label"], "stage": event.get("stage"),
              "time_left_s": None if deadline is None else deadline - time.time()})

    # 3-4. Run, keeping every record.
    # In-flight candidates are stopped shortly before the confirmation rounds' share of the budget.
    hard_stop = None if deadline is None else deadline - confirm_reserve * 0.5
    try:
        for request, record in executor.run(requests(), on_event, hard_stop):
            if record.get("status") == "cancelled":  # not in the ledger: a resumed search runs it
                not_run.append({"label": record["label"], "reason": record["reason"]})
                emit({"event": "finished", "record": record, "best": (best_record() or {}).get("name"),
                      "time_left_s": deadline - time.time() if deadline else None})
                continue
            record["prior"] = request["candidate"]["prior"]
            if reference["objective"] and record.get("objective") is not None and settings.objective != "size":
                record["objective_ratio"] = record["objective"] / reference["objective"] \
                    if settings.objective in ("latency", "throughput") else reference["objective"] / record["objective"]
            if record.get("seconds"):
                durations.append(record["seconds"])
            records.append(record)
            ledger.append(record)
            best = best_record()
            emit({"event": "finished", "record": record, "best": best and best.get("name"),
                  "time_left_s": None if deadline is None else deadline - time.time()})
    finally:
        executor.close()

    # 5. Confirm the leaders side by side.
    confirmed = None
    passing = sorted([r for r in records if r.get("status") == "passed"], key=lambda r: -r["objective"])
    if ref_bench is not None and passing and settings.confirm > 0:
        leaders = [r["name"] for r in passing[: settings.confirm]]
        emit({"event": "confirm", "names": leaders, "rounds": settings.confirm_rounds})
        confirmed = confirm(settings, leaders, store)
        for r in records:
            if r.get("name") in confirmed["decode_tokens_per_s"]:
                r["confirmed_speedup"] = confirmed["speedup"][r["name"]]
                if settings.objective == "latency":
                    r["objective"] = confirmed["decode_tokens_per_s"][r["name"]]
                    r["objective_ratio"] = confirmed["speedup"][r["name"]]

    result = SearchResult(
        search_id=search_id, settings=identity | {"budget_s": settings.budget_s}, reference=reference,
        records=records, best=best_record(), frontier=frontier(records), closest=closest_misses(records),
        skipped=skipped, not_run=not_run, confirmed=confirmed, seconds=time.time() - started, resumed=resumed)
    if report is not None:
        result.report = str(write_search_report(result, settings, report, store))
    (ledger.directory / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    emit({"event": "done", "summary": result.summary()})
    return result



def confirm(settings: SearchSettings, names: list[str], store: Store) -> dict[str, Any]:
    """Interleaved rounds: original, leader 1, leader 2, ... repeated; ratios are medians per round."""
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.benchmark.run import BenchSettings

    comparison = compare(settings.model, names, eval_settings=EvalSettings(**_ppl_settings(settings)),
                         bench_settings=BenchSettings(**settings.bench_settings()), rounds=settings.confirm_rounds,
                         store=store)
    return {"rounds": settings.confirm_rounds, "comparison": comparison.to_dict(),
            "speedup": {r.name: r.speedup for r in comparison.rows},
            "decode_tokens_per_s": {r.name: r.decode_tokens_per_s for r in comparison.rows}}


def _ppl_settings(settings: SearchSettings) -> dict[str, Any]:
    """The comparison table's perplexity: the gate's own evaluation when it is perplexity, else a short one."""
    e = settings.eval_settings(False)
    if "max_tokens" in e:
        return e
    return {"task": "wikitext2", "max_tokens": settings.screen_tokens, "threads": settings.eval_threads,
            "window": settings.window, "stride": settings.stride}


def write_search_report(result: SearchResult, settings: SearchSettings, out: Path, store: Store) -> Path:
    """The measurement report over the original, the frontier and the best, plus the search ledger."""
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.report.build import write_report

    names = [r["name"] for r in result.frontier if r.get("name") and r.get("status") in ("passed", "failed_gate")]
    if result.best and result.best["name"] not in names:
        names.insert(0, result.best["name"])
    if not names:
        names = [r["name"] for r in result.closest if r.get("name")]
    comparison = compare(settings.model, names[:8], eval_settings=EvalSettings(**_ppl_settings(settings)),
                         bench_settings=BenchSettings(**settings.bench_settings()), rounds=1, store=store)
    price = settings.price()
    title = f"slipstream auto: {settings.model}, {settings.gate.describe()}, objective {settings.objective}"
    write_report(comparison, out, store, price, title=title,
                 search={"summary": result.summary(), "best": result.best and result.best.get("name"),
                         "frontier": [r.get("name") for r in result.frontier],
                         "records": result.records, "not_run": result.not_run, "skipped": result.skipped,
                         "relative": settings.gate.relative})
    return out
