"""The automatic search: the fastest (smallest, cheapest) variant that meets an accuracy gate.

:func:`search` runs these stages in order, each a function below:

1. :func:`start`: the recipes loaded and checked (built-in and a recipe file), the model imported, the
   ledger opened (a search restarted with the same settings resumes from it).
2. :func:`measure_reference`: the original, evaluated on the gate's task and benchmarked.
3. :func:`plan`: the candidates that can run here, in expected-value order: prior gain on the objective
   times the chance of passing, per expected minute; those already in the ledger are resumed.
4. :func:`run_candidates`: two rungs of successive halving, each candidate in a worker (local process or
   Ray; :mod:`slipstream.search.worker`). Every candidate is built, screened on a small slice (dropped when
   even the best case the slice allows misses the gate) and timed on a short speed probe; then the screened
   ones get the full evaluation and benchmark, fastest probe first, until none left could beat the best
   passing one even ``skip_margin`` times over its probe (``--run-all`` measures them all); nor is one run
   that the budget has no time left for. Every final record is appended to the ledger at once.
5. :func:`confirm_leaders`: the best passing candidates re-measured side by side with the original in
   interleaved rounds (single benchmarks on a shared machine drift); the winner is chosen on those ratios.
6. :func:`conclude`: the best passing candidate (:func:`~slipstream.search.select.select`), the Pareto
   frontier, the closest misses; then the report and ``result.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.evaluation.gate import SELF_VALUES, Gate
from slipstream.search.ledger import Ledger
from slipstream.search.recipes import Recipe
from slipstream.search.record import LeftOut, NotRun, SearchRecord, Status
from slipstream.search.select import closest_misses, frontier, select
from slipstream.search.settings import LEDGER_VERSION, SearchSettings
from slipstream.search.side_by_side import Confirmation, confirm, ppl_settings
from slipstream.search.space import Candidate, candidates_from, gather_recipes
from slipstream.search.worker import objective_value
from slipstream.store import Store

__all__ = ["LEDGER_VERSION", "Confirmation", "Ledger", "Reference", "SearchResult", "SearchSettings",
           "expected_value", "search"]

Listener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Reference:
    """The original as the gate and the objective see it."""

    name: str
    metric: str  # the gate's metric, without its task
    value: float | None
    size_bytes: int
    objective: float | None  # larger is better (sizes and costs negated), at its best thread count
    threads: int | None = None  # that thread count


@dataclass
class SearchResult:
    search_id: str
    settings: dict[str, Any]
    reference: Reference
    records: list[SearchRecord]
    best: SearchRecord | None
    frontier: list[SearchRecord]
    closest: list[SearchRecord]
    skipped: list[LeftOut]
    not_run: list[NotRun]
    confirmed: Confirmation | None = None
    report: str | None = None
    seconds: float = 0.0
    resumed: int = 0
    recommended: dict[str, Any] | None = None  # how the best serves here: engine, threads, batching

    def to_dict(self) -> dict[str, Any]:
        return {"search_id": self.search_id, "settings": self.settings, "reference": asdict(self.reference),
                "records": [r.to_dict() for r in self.records], "best": self.best and self.best.to_dict(),
                "frontier": [r.to_dict() for r in self.frontier], "closest": [r.to_dict() for r in self.closest],
                "skipped": [asdict(s) for s in self.skipped], "not_run": [asdict(n) for n in self.not_run],
                "confirmed": self.confirmed and asdict(self.confirmed), "report": self.report,
                "seconds": self.seconds, "resumed": self.resumed, "recommended": self.recommended}

    def summary(self) -> str:
        if self.best:
            speed = ""
            if self.confirmed and self.best.name in self.confirmed.speedup:
                speed = f", {self.confirmed.speedup[self.best.name]:.2f}x the original (confirmed side by side)"
            return f"best: {self.best.name} ({self.best.label}), {_drop_text(self.best)} on the gate metric{speed}"
        if self.closest:
            c = self.closest[0]
            return f"no candidate passed; closest: {c.shown_name} ({c.reason})"
        return "no candidate passed and none was measured"


def _drop_text(record: SearchRecord) -> str:
    return f"{record.drop:+.2%}" if record.drop is not None else "n/a"


@dataclass(frozen=True)
class Run:
    """What the stages of one search share: where it keeps things, how it reports, when it must stop."""

    search_id: str
    identity: dict[str, Any]
    store: Store
    ledger: Ledger
    recipes: list[Recipe]
    emit: Listener
    deadline: float | None
    task: str = "causal-lm"  # the model's (slipstream.models.tasks)

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()


@dataclass(frozen=True)
class Plan:
    candidates: list[Candidate]  # in expected-value order
    skipped: list[LeftOut]  # recipes that cannot run here
    resumed: list[SearchRecord]  # candidates finished by an earlier run of this search
    todo: list[Candidate]


def expected_value(candidate: Candidate, objective: str) -> float:
    p = candidate.prior
    gain = 1 / p.size_ratio if objective == "size" else p.speedup
    return gain * p.pass_probability / max(p.minutes, 0.1)


def search(settings: SearchSettings, *, store: Store | None = None, executor: Any = None,
           listener: Listener | None = None, report: Path | None = None) -> SearchResult:
    """Search ``settings.model``'s space for the best variant within the gate (the stages above, in order);
    ``listener`` receives progress events, ``report`` is the HTML report to write."""
    started = time.time()
    if executor is None:
        from slipstream.search.executors import LocalExecutor

        executor = LocalExecutor(1)
    run = start(settings, store or Store(), listener or (lambda event: None), started)
    reference, bench_s = measure_reference(settings, run)
    space = plan(settings, run)
    records, not_run = run_candidates(settings, run, space, reference, bench_s, executor)
    records, confirmed = confirm_leaders(settings, run, records, reference)
    result = conclude(settings, run, space, reference, records, not_run, confirmed, started)
    result.recommended = recommend_serving(result.best, settings, run)
    if report is not None and run.task == "causal-lm":  # the HTML report compares decoders
        result.report = str(write_search_report(result, settings, report, run.store))
    (run.ledger.directory / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    run.emit({"event": "done", "summary": result.summary()})
    return result


def start(settings: SearchSettings, store: Store, emit: Listener, started: float) -> Run:
    """Recipes checked before anything is measured; the model in the store; this search's ledger."""
    from slipstream.models.intake import import_model

    recipes = gather_recipes(settings.device, Path(settings.recipe_file) if settings.recipe_file else None,
                             settings.replace_defaults)
    if not store.exists(settings.model):
        emit({"event": "log", "message": f"importing {settings.model}"})
        import_model(settings.model, store=store)
    from slipstream.models.tasks import task_of

    identity = settings.identity(store.get(settings.model).sha256)
    search_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Run(search_id=search_id, identity=identity, store=store,
               ledger=Ledger(store.home / "searches" / search_id, identity), recipes=recipes, emit=emit,
               deadline=started + settings.budget_s if settings.budget_s else None,
               task=task_of(store.get(settings.model)))


def measure_reference(settings: SearchSettings, run: Run) -> tuple[Reference, float]:
    """The original, measured first (cached in the store when already done), and how long a benchmark takes
    (0 when the objective needs none)."""
    from slipstream.benchmark.run import BenchSettings, bench
    from slipstream.evaluation.run import EvalSettings, evaluate

    run.emit({"event": "reference", "stage": "evaluate", "name": settings.model})
    ref_eval = evaluate(settings.model, reference=None, settings=EvalSettings(**settings.eval_settings(False)),
                        store=run.store)
    metric = settings.gate.metric.rsplit(".", 1)[-1]
    if metric not in ref_eval.metrics and metric not in SELF_VALUES:
        raise InvalidConfig(f"task {settings.gate_task} reports {', '.join(sorted(ref_eval.metrics))}; "
                            f"the gate's metric {metric!r} is not among them")
    size = run.store.get(settings.model).size_bytes
    objective, threads, bench_s = None, None, 0.0
    if settings.objective != "size":  # at each thread count, as the candidates are: its best is the baseline
        for n in settings.bench_threads:  # type: ignore[union-attr]
            run.emit({"event": "reference", "stage": "benchmark", "name": settings.model, "threads": n})
            t = time.time()
            ref_bench = bench(settings.model, settings=BenchSettings(**settings.bench_settings(n)), store=run.store,
                              use_cache=True).metrics
            bench_s += max(time.time() - t, 20.0)  # the original is the slowest to benchmark; cached: a guess
            value = objective_value(settings.objective, ref_bench, size, settings.price().price_per_hour)
            if objective is None or (value is not None and value > objective):
                objective, threads = value, n
        bench_s /= len(settings.bench_threads)  # type: ignore[arg-type]
    reference = Reference(name=settings.model, metric=metric,
                          value=ref_eval.metrics.get(metric, SELF_VALUES.get(metric)), size_bytes=size,
                          objective=objective, threads=threads)
    run.emit({"event": "reference", "stage": "done", "reference": reference})
    return reference, bench_s


def plan(settings: SearchSettings, run: Run) -> Plan:
    """The space in expected-value order, split into what the ledger already holds and what is to run."""
    candidates, skipped = candidates_from(run.recipes, settings.device, list(settings.include) or None,
                                          list(settings.exclude) or None, run.task, settings.objective)
    if not candidates:
        raise SlipstreamError("no candidate can run here: " +
                              "; ".join(f"{s.recipe}: {s.reason}" for s in skipped[:5]))
    # the first rung's cost is the stand-in's where a candidate has one
    candidates.sort(key=lambda c: -expected_value(c.stand_in() or c, settings.objective))
    done = run.ledger.load()
    space = Plan(candidates=candidates, skipped=skipped, resumed=[done[c.id] for c in candidates if c.id in done],
                 todo=[c for c in candidates if c.id not in done])
    run.emit({"event": "space", "candidates": len(candidates), "resumed": len(space.resumed), "skipped": skipped,
              "order": [c.label for c in candidates]})
    return space


def run_candidates(settings: SearchSettings, run: Run, space: Plan, reference: Reference, bench_s: float,
                   executor: Any) -> tuple[list[SearchRecord], list[NotRun]]:
    """Two rungs of successive halving, each candidate in its worker. First every candidate is built, screened
    on a small slice and, if it holds the gate there, timed on a short speed probe; then the screened ones are
    measured in full (evaluation and benchmark), fastest probe first, until no one left could still beat the
    best passing candidate (its probe ratio times ``skip_margin`` below that one's measured ratio). Every
    final record goes to the ledger at once. Returns every record (resumed ones first) and what was not run."""
    records = list(space.resumed)
    not_run: list[NotRun] = []
    by_id = {c.id: c for c in space.todo}
    durations: dict[str, list[float]] = {"probe": [], "full": [r.seconds for r in records if r.seconds]}
    # Time kept back for the confirmation rounds and the report at the end.
    reserve = (settings.confirm_rounds * (settings.confirm + 1) + 1) * bench_s
    base_request = {"model": settings.model, "home": str(run.store.home), "device": settings.device,
                    "gate": asdict(settings.gate), "guards": [asdict(g) for g in settings.guards],
                    "objective": settings.objective, "screen": settings.eval_settings(True),
                    "evaluate": settings.eval_settings(False), "bench": settings.bench_settings(),
                    "probe": settings.probe_settings(), "threads": list(settings.bench_threads),
                    "option_sets": settings.option_sets(),
                    "price_per_hour": settings.price().price_per_hour}
    reference_probe = probe_reference(settings, run) if space.todo else None
    probe_costs: list[tuple[float, float]] = []  # (prior seconds, measured seconds) of each probe so far
    # A candidate with a cheaper twin of the same format (docs/search.md#stand-ins) is probed as that twin, with
    # no screen (the twin's accuracy is not the candidate's); only if its speed could still win is it built.
    twins = {c.id: c.stand_in() for c in space.todo}

    def full_reserve() -> float:
        """Time the probe rung leaves for the full one: a full measurement (evaluation and benchmark; the build
        is cached by then) for each of the first few candidates that held the gate on the slice."""
        full = durations["full"]
        each = sum(full) / len(full) if full else FULL_GUESS_S
        return each * min(max(len(probed), 1), FULL_RESERVED)

    def on_event(request: dict[str, Any], event: dict[str, Any]) -> None:
        run.emit({"event": "stage", "label": request["candidate"]["label"], "stage": event.get("stage"),
                  "time_left_s": run.time_left()})

    def finish(record: SearchRecord) -> None:
        if record.status is Status.CANCELLED:  # not in the ledger: a resumed search runs it
            not_run.append(NotRun(record.label, record.reason or ""))
        else:
            record = _against_reference(replace(record, prior=by_id[record.id].prior), reference, settings.objective)
            if record.seconds and twins.get(record.id) is None:  # a stand-in's full run includes its build
                durations["full"].append(record.seconds)
            records.append(record)
            run.ledger.append(record)
        best = select(records)
        run.emit({"event": "finished", "record": record, "best": best and best.name, "time_left_s": run.time_left()})

    def probes():
        for i, c in enumerate(space.todo, 1):
            twin = twins[c.id]
            why = _no_time(run, _probe_estimate(twin or c, probe_costs), reserve + full_reserve(), share=1.0)
            if why:
                not_run.append(NotRun(c.label, why))
                continue
            run.emit({"event": "start", "label": c.label, "index": i, "of": len(space.todo), "rung": "probe",
                      "time_left_s": run.time_left()} | ({"stand_in": twin.label} if twin else {}))
            if twin is None:
                yield base_request | {"candidate": c.to_dict(), "fidelity": "probe"}
            else:
                yield base_request | {"candidate": c.to_dict() | {"steps": [s.to_dict() for s in twin.steps],
                                                                  "stand_in": twin.label},
                                      "fidelity": "probe", "screen": None}

    probed: list[SearchRecord] = []

    def full():
        probed.sort(key=lambda r: (-(r.probe_ratio if r.probe_ratio is not None else r.probe or 0.0), r.label))
        run.emit({"event": "log", "message": f"{len(probed)} candidate(s) held the gate on the screening slice; "
                                             "measuring them in full, fastest probe first"})
        for i, r in enumerate(probed, 1):
            c = by_id[r.id]
            full_s = durations["full"]
            expected = (sum(full_s) / len(full_s) if full_s else FULL_GUESS_S) + (
                _probe_estimate(c, probe_costs) if r.probed_as else 0.0)  # a stand-in's candidate is not built yet
            why = _outpaced(r, select(records), settings) or _no_time(run, expected, reserve, share=0.5)
            if why:
                not_run.append(NotRun(c.label, why))
                continue
            run.emit({"event": "start", "label": c.label, "index": i, "of": len(probed), "rung": "full",
                      "time_left_s": run.time_left()})
            yield base_request | {"candidate": c.to_dict()}

    # In-flight candidates are stopped shortly before the confirmation rounds' share of the budget.
    hard_stop = None if run.deadline is None else run.deadline - reserve * 0.5
    try:
        for _, record in executor.run(probes(), on_event, hard_stop):
            if record.status is Status.PROBED:
                record = replace(record, probe_ratio=_ratio(record.probe, reference_probe, settings.objective))
                durations["probe"].append(record.seconds or 0.0)
                probe_costs.append(((twins[record.id] or by_id[record.id]).prior.minutes * 60, record.seconds or 0.0))
                probed.append(record)
                run.emit({"event": "probed", "record": record, "time_left_s": run.time_left()})
            else:  # screened out, failed or cancelled: final
                finish(record)
        for _, record in executor.run(full(), on_event, hard_stop):
            finish(record)
    finally:
        executor.close()
    return records, not_run


def probe_reference(settings: SearchSettings, run: Run) -> float | None:
    """The original on the speed probe, at its best thread count (None for the size objective)."""
    if settings.objective == "size":
        return -float(run.store.get(settings.model).size_bytes)
    from slipstream.benchmark.run import BenchSettings, bench

    size, best = run.store.get(settings.model).size_bytes, None
    for n in settings.bench_threads:  # type: ignore[union-attr]
        metrics = bench(settings.model, settings=BenchSettings(**settings.probe_settings(n)), store=run.store,
                        use_cache=True).metrics
        value = objective_value(settings.objective, metrics, size, settings.price().price_per_hour)
        if value is not None and (best is None or value > best):
            best = value
    return best


def _ratio(value: float | None, reference: float | None, objective: str) -> float | None:
    """``value`` against the original's, above 1 when better (sizes and costs are stored negated)."""
    if value is None or not reference:
        return None
    return value / reference if objective in ("latency", "throughput") else reference / value


def _outpaced(r: SearchRecord, best: SearchRecord | None, settings: SearchSettings) -> str | None:
    """Why probed candidate ``r`` cannot beat the best passing one: its probe ratio, even ``skip_margin`` times
    over, is below the best's measured ratio (a size is exact: no margin)."""
    if settings.skip_margin is None or best is None or r.probe_ratio is None:
        return None
    if settings.objective == "size":
        if best.objective is not None and r.probe is not None and r.probe < best.objective:
            return (f"cannot beat {best.label}: larger ({-r.probe / 1e6:.0f} MB against {-best.objective / 1e6:.0f} MB"
                    + (f", measured on its stand-in {r.probed_as})" if r.probed_as else ")"))
        return None
    if not best.objective_ratio or r.probe_ratio * settings.skip_margin >= best.objective_ratio:
        return None
    probed = f" (on its stand-in {r.probed_as}, the same format)" if r.probed_as else ""
    return (f"cannot beat {best.label} ({best.objective_ratio:.2f}x measured): its speed probe{probed} gave "
            f"{r.probe_ratio:.2f}x, x{settings.skip_margin:g} margin")


# A full measurement's seconds before one has been timed, and how many the probe rung keeps time for.
FULL_GUESS_S = 150.0
FULL_RESERVED = 2


def _probe_estimate(c: Candidate, done: Sequence[tuple[float, float]]) -> float:
    """Seconds ``c`` should take to build, screen and probe: its prior minutes, scaled by how long the probes so far
    took against their own priors (the median; half the prior before any has run). A recipe that builds for a
    quarter of an hour is not started with ten minutes left because the cheap ones took one."""
    scales = sorted(measured / prior for prior, measured in done if prior > 0)
    scale = scales[len(scales) // 2] if scales else 0.5
    return c.prior.minutes * 60 * scale


def _no_time(run: Run, expected: float, reserve: float, share: float) -> str | None:
    """Why the budget has no time left for a candidate that takes about ``expected`` seconds: less than ``share`` of
    that is left once ``reserve`` is kept back."""
    if run.deadline is None:
        return None
    left = run.deadline - time.time() - reserve
    if left >= expected * share:
        return None
    return f"budget: {max(left, 0):.0f}s left, this candidate takes about {expected:.0f}s"


def _against_reference(record: SearchRecord, reference: Reference, objective: str) -> SearchRecord:
    """The record's objective as a ratio to the original's, above 1 when better."""
    if not reference.objective or record.objective is None or objective == "size":
        return record
    return replace(record, objective_ratio=_ratio(record.objective, reference.objective, objective))


def confirm_leaders(settings: SearchSettings, run: Run, records: list[SearchRecord],
                    reference: Reference) -> tuple[list[SearchRecord], Confirmation | None]:
    """The best passing candidates re-measured side by side with the original; their records take the
    confirmed ratios (and, for latency, the confirmed objective)."""
    passing = sorted([r for r in records if r.status is Status.PASSED], key=lambda r: -r.objective)  # type: ignore[operator]
    if settings.objective == "size" or not passing or settings.confirm <= 0:
        return records, None
    if run.task != "causal-lm":  # the side-by-side comparison decodes and scores perplexity
        from slipstream.models.tasks import a

        run.emit({"event": "log", "message": f"confirmation rounds are for generative models; {a(run.task)} "
                                             "model's candidates keep their own benchmark"})
        return records, None
    leaders = [r.name for r in passing[: settings.confirm]]
    run.emit({"event": "confirm", "names": leaders, "rounds": settings.confirm_rounds})
    threads = {r.name: r.threads for r in passing[: settings.confirm]} | {settings.model: reference.threads}
    options = {r.name: r.engine_options for r in passing[: settings.confirm] if r.engine_options}
    confirmed = confirm(settings, leaders, run.store, threads, options)  # type: ignore[arg-type]
    out = []
    for r in records:
        if r.name in confirmed.decode_tokens_per_s:
            r = replace(r, confirmed_speedup=confirmed.speedup[r.name])
            if settings.objective == "latency":
                r = replace(r, objective=confirmed.decode_tokens_per_s[r.name],
                            objective_ratio=confirmed.speedup[r.name])
        out.append(r)
    return out, confirmed


def conclude(settings: SearchSettings, run: Run, space: Plan, reference: Reference, records: list[SearchRecord],
             not_run: list[NotRun], confirmed: Confirmation | None, started: float) -> SearchResult:
    """The best passing candidate, the frontier, and (when nothing passed) the closest misses."""
    return SearchResult(
        search_id=run.search_id, settings=run.identity | {"budget_s": settings.budget_s}, reference=reference,
        records=records, best=select(records), frontier=frontier(records), closest=closest_misses(records),
        skipped=space.skipped, not_run=not_run, confirmed=confirmed, seconds=time.time() - started,
        resumed=len(space.resumed))


def recommend_serving(best: SearchRecord | None, settings: SearchSettings, run: Run) -> dict[str, Any] | None:
    """The best candidate's serving settings as its benchmark found them (engine, the fastest thread count,
    how the engine batches), kept in the store beside the variant: ``slipstream serve`` and deployments use them
    where nothing else is given."""
    if best is None or best.name is None or best.bench is None:
        return None  # the size objective benchmarks nothing: there is nothing measured to recommend
    from slipstream.engines.loading import batching_for

    engine = best.bench.engine.get("engine")
    recommended = {"engine": engine, "threads": best.threads,
                   "batching": batching_for(run.store.get(best.name), engine)} \
        | ({"engine_options": best.engine_options} if best.engine_options else {})
    run.store.recommend(best.name, recommended, {"search": run.search_id, "objective": settings.objective,
                                                 "by_threads": best.by_threads, "workload": settings.workload}
                        | ({"by_options": best.by_options} if best.by_options else {}))
    return recommended


def guard_values(record: SearchRecord, guards: Sequence[Gate]) -> tuple[float | None, ...]:
    """The record's value on each guard's metric, from its full evaluation (else its screening slice)."""
    measured = record.evaluation or record.screen
    found = {g["metric"]: g["value"] for g in (measured.guards or ())} if measured else {}
    return tuple(found.get(g.metric) for g in guards)


def write_search_report(result: SearchResult, settings: SearchSettings, out: Path, store: Store) -> Path:
    """The measurement report over the original, the frontier and the best, plus the search's candidates."""
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.report.build import write_report
    from slipstream.report.search_table import NotRunRow, SearchRow, SearchTable

    names = [r.name for r in result.frontier if r.name and r.status in (Status.PASSED, Status.FAILED_GATE)]
    if result.best and result.best.name not in names:
        names.insert(0, result.best.name)  # type: ignore[arg-type]
    if not names:
        names = [r.name for r in result.closest if r.name]
    comparison = compare(settings.model, names[:8], eval_settings=EvalSettings(**ppl_settings(settings)),
                         bench_settings=BenchSettings(**settings.bench_settings()), rounds=1, store=store,
                         threads={r.name: r.threads for r in result.records if r.name} |
                         {settings.model: result.reference.threads})
    title = f"slipstream auto: {settings.model}, {settings.describe_gates()}, objective {settings.objective}"
    table = SearchTable(
        summary=result.summary(), best=result.best and result.best.name,
        frontier=[r.name for r in result.frontier if r.name], relative=settings.gate.relative,
        guards=tuple(f"{g.metric} ≤ {g.max_drop:g}" for g in settings.guards),
        rows=[SearchRow(name=r.shown_name, label=r.label, status=r.status.value, drop=r.drop, ratio=r.ratio,
                        objective=r.objective, size_bytes=r.size_bytes, seconds=r.seconds, reason=r.reason,
                        guards=guard_values(r, settings.guards)) for r in result.records],
        not_run=[NotRunRow(n.label, n.reason) for n in result.not_run])
    write_report(comparison, out, store, settings.price(), title=title, search=table)
    return out
