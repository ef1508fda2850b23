"""What a search keeps of each candidate: one :class:`SearchRecord`, whatever became of it.

A record is written by the worker that ran the candidate (:mod:`slipstream.search.worker`), completed by
the search (its prior, its objective against the original, a side-by-side confirmation) and appended to
the ledger as one JSON line. ``to_dict`` and ``from_dict`` round-trip exactly: a field that is not set
is not written, and keys this version does not know (from a later one) are kept in ``extra`` and written
back, so a ledger loads, resumes and is rewritten without losing anything. See docs/search.md, "Records
and recipes".
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Union

from slipstream.search.recipes import Prior


class Status(str, Enum):
    """How a candidate ended. ``CANCELLED`` and ``PROBED`` stay out of the ledger: a resumed search runs them
    again (their builds, evaluations and probes come back from the store's caches)."""

    PASSED = "passed"  # within the gate on the full evaluation
    FAILED_GATE = "failed_gate"  # measured, and outside the gate
    SCREENED_OUT = "screened_out"  # even the best case on the screening slice misses the gate
    PROBED = "probed"  # screened and speed-probed, waiting for the full measurement (never in the ledger)
    ERROR = "error"  # a stage raised, or the worker died
    CANCELLED = "cancelled"  # stopped when the budget ran out

    def __str__(self) -> str:
        return self.value


def _split(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` as (the fields ``cls`` declares, the rest)."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return ({k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names})


def _to_dict(obj: Any, always: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Fields in declaration order, those left None omitted unless named in ``always``, then ``extra``."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "extra" or (value is None and f.name not in always):
            continue
        out[f.name] = value.value if isinstance(value, Enum) else value.to_dict() if hasattr(value, "to_dict") \
            else value
    return out | getattr(obj, "extra", {})


def _miss_text(metric: str, drop: float, allowed: float, relative: bool, best_case: bool) -> str:
    case = "even at best " if best_case else ""
    if relative:
        return f"{metric} {case}{drop:+.2%} vs the original, allowed {allowed:.2%}"
    return f"{metric} {case}{drop:+.4g} vs the original, allowed {allowed:.3g}"


@dataclass(frozen=True)
class Measurement:
    """The candidate against the original on the gate's metric, on the screening slice or the full evaluation.
    ``drop``: how much worse, in the gate's units; ``best_case_drop``: the optimistic end of its 95% interval."""

    drop: float
    best_case_drop: float
    candidate: float | None
    reference: float | None
    tokens: int | None  # perplexity tasks
    items: int | None  # dataset tasks
    kl_mean: float | None = None
    top1_agreement: float | None = None
    perplexity: float | None = None
    # The gates that must hold beside the gate (the KL bound), each as metric, value, drop, best_case_drop,
    # max_drop, relative: a candidate passes only when every one does.
    guards: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    ALWAYS = frozenset({"drop", "best_case_drop", "candidate", "reference", "tokens", "items"})

    def misses(self, gate: Any, best_case: bool = False) -> list[str]:
        """Why this measurement fails ``gate`` or a guard (empty when all hold); ``best_case``: judged on the
        optimistic end of each interval (the screening slice's test)."""
        out = []
        drop = self.best_case_drop if best_case else self.drop
        if drop > gate.max_drop + 1e-12:
            out.append(_miss_text(gate.metric, drop, gate.max_drop, gate.relative, best_case))
        for g in self.guards or ():
            d = g["best_case_drop"] if best_case else g["drop"]
            if d > g["max_drop"] + 1e-12:
                out.append(_miss_text(g["metric"], d, g["max_drop"], g["relative"], best_case))
        return out

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, self.ALWAYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)


@dataclass(frozen=True)
class BenchSummary:
    """The benchmark's figures the search shows: batch-1 decode speed and latency, throughput per batch size,
    peak memory, and the engine that ran it."""

    decode_tokens_per_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    ttft_p50_s: float
    batch_tokens_per_s: dict[str, float]  # output tokens/s by batch size (keys are strings: JSON)
    peak_rss_bytes: int
    engine: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_metrics(cls, m: dict[str, Any]) -> "BenchSummary":
        """From a benchmark's full metrics (:func:`slipstream.benchmark.run.bench`). An encoder's speeds are
        sentences per second (batch 1 and by batch size) and its per-token times are per-sentence latencies."""
        lat = m["latency"]
        if m.get("kind") == "encoder":
            return cls(decode_tokens_per_s=lat["sentences_per_s"]["median"], tpot_p50_s=lat["latency_s"]["p50"],
                       tpot_p95_s=lat["latency_s"]["p95"], ttft_p50_s=lat["latency_s"]["p50"],
                       batch_tokens_per_s={str(t["batch_size"]): t["sentences_per_s"]["median"]
                                           for t in m["throughput"]},
                       peak_rss_bytes=m["memory"]["peak_rss_bytes"], engine=m["engine"],
                       extra={"unit": "sentences/s"})
        return cls(decode_tokens_per_s=lat["decode_tokens_per_s"]["median"], tpot_p50_s=lat["tpot_s"]["p50"],
                   tpot_p95_s=lat["tpot_s"]["p95"], ttft_p50_s=lat["ttft_s"]["p50"],
                   batch_tokens_per_s={str(t["batch_size"]): t["output_tokens_per_s"]["median"]
                                       for t in m["throughput"]},
                   peak_rss_bytes=m["memory"]["peak_rss_bytes"], engine=m["engine"])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchSummary":
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)


@dataclass(frozen=True)
class Worker:
    host: str
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid}


@dataclass(frozen=True)
class SearchRecord:
    """One candidate of a search. ``objective`` is larger-is-better (sizes and costs negated);
    ``objective_ratio`` is it against the original's (above 1: better); ``confirmed_speedup`` is set on the
    leaders re-measured side by side with the original."""

    id: str  # the candidate's id: a hash of its steps
    label: str  # its steps' slugs, "sq0.7 + ct2-int8"
    steps: list[dict[str, Any]]  # technique configs as dicts
    status: Status
    worker: Worker | None = None
    max_drop: float | None = None  # the gate's allowance, in its units
    timings: dict[str, float] | None = None  # seconds per stage: build_s, screen_s, evaluate_s, benchmark_s
    name: str | None = None  # the variant built (None when the build failed)
    size_bytes: int | None = None
    screen: Measurement | None = None
    evaluation: Measurement | None = None
    drop: float | None = None  # the full evaluation's drop (the screen's when screened out)
    bench: BenchSummary | None = None  # at the thread count that served the objective best
    threads: int | None = None  # that thread count: the engine threads recommended for serving it
    by_threads: dict[str, float] | None = None  # the objective at each thread count tried (keys: strings, JSON)
    # engine options chosen by measurement beside the threads (prompt lookup on a prompt-set workload), and the
    # objective with each option set tried ("plain", "prompt_lookup=8"), at its best thread count
    engine_options: dict[str, Any] | None = None
    by_options: dict[str, float] | None = None
    probe: float | None = None  # the objective on the short speed probe (at its best thread count)
    probe_ratio: float | None = None  # that against the original's probe (above 1: better)
    probed_as: str | None = None  # the stand-in that was probed instead (same format and speed), by its label
    objective: float | None = None
    stage: str | None = None  # where an error happened: build, screen, evaluate, benchmark
    reason: str | None = None  # why it failed, missed or stopped
    seconds: float | None = None
    prior: Prior | None = None
    objective_ratio: float | None = None
    confirmed_speedup: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys from a later version, kept as they were

    # Written even when None (a reader can tell "not measured" from "not yet known").
    ALWAYS = frozenset({"id", "label", "steps", "status", "drop", "objective"})

    @property
    def shown_name(self) -> str:
        """The variant's name, or the recipe's label when no variant was built."""
        return self.name or self.label

    @property
    def ratio(self) -> float | None:
        """The objective against the original, side by side where confirmed."""
        return self.confirmed_speedup or self.objective_ratio

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, self.ALWAYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchRecord":
        known, extra = _split(cls, data)
        nested: dict[str, Any] = {"status": Status(known["status"])}
        if known.get("worker") is not None:
            nested["worker"] = Worker(**known["worker"])
        for key in ("screen", "evaluation"):
            if known.get(key) is not None:
                nested[key] = Measurement.from_dict(known[key])
        if known.get("bench") is not None:
            nested["bench"] = BenchSummary.from_dict(known["bench"])
        if known.get("prior") is not None:
            nested["prior"] = Prior(**known["prior"])
        return cls(**(known | nested), extra=extra)

    @classmethod
    def failed(cls, candidate: dict[str, Any], status: Status, reason: str) -> "SearchRecord":
        """A candidate that never reported back: its worker died, or the budget stopped it."""
        return cls(id=candidate["id"], label=candidate["label"], steps=candidate["steps"], status=status,
                   reason=reason)


@dataclass(frozen=True)
class NotRun:
    """A candidate of the space the search chose not to run (it could not beat the best, or the budget was
    spent), or one the budget stopped."""

    label: str
    reason: str


@dataclass(frozen=True)
class LeftOut:
    """A recipe that cannot run here (a missing extra, the device, an invalid option). ``recipe`` is the
    candidate's label, or its steps as written when they do not make a valid config."""

    recipe: Union[str, list]
    reason: str
