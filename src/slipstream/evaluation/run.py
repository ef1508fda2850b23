"""``slipstream evaluate``: perplexity of a variant and of its reference, plus KL between them.

The reference (by default the variant's parent) is always measured alongside, and both are
computed window by window in one pass so the reference's distributions are never stored.
Results are cached in the registry by (variant, reference, task, settings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig
from slipstream.evaluation import data
from slipstream.evaluation.perplexity import DivergenceAccumulator, NLLAccumulator, plan_windows, scored_rows
from slipstream.extras import library_versions
from slipstream.machine import describe_machine
from slipstream.progress import Progress, or_null
from slipstream.store import Store, Variant

KIND = "evaluation"


@dataclass(frozen=True)
class EvalSettings:
    task: str = "wikitext2"  # a bundled text set, or "file:PATH"
    window: int = 1024
    stride: int = 512
    max_tokens: int | None = None  # score at most this many tokens (the first ones: deterministic)
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.window < 2 or not 0 < self.stride <= self.window:
            raise InvalidConfig(f"need window >= 2 and 0 < stride <= window (got {self.window}, {self.stride})")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise InvalidConfig(f"max_tokens must be at least 2, got {self.max_tokens}")

    def identity(self) -> dict[str, Any]:
        """What determines the result (threads do not)."""
        d = asdict(self)
        d.pop("threads")
        if self.task.startswith("file:"):
            d["text_sha256"] = hashlib.sha256(self.text().encode()).hexdigest()
        return d

    def text(self) -> str:
        if self.task.startswith("file:"):
            return data.read_text_file(Path(self.task[5:]))
        return data.text_set(self.task)


@dataclass
class EvalReport:
    variant: str
    reference: str | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    reference_metrics: dict[str, Any] | None = None
    cached: bool = False
    engines: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    variant: str,
    *,
    reference: str | None = "parent",
    settings: EvalSettings | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    **setting_overrides: Any,
) -> EvalReport:
    """Perplexity of ``variant`` on the task text and, against ``reference`` ("parent" by default,
    or a name, or None), the mean KL divergence and top-1 agreement on the same tokens."""
    return evaluate_many([variant], reference=reference, settings=settings, store=store, progress=progress,
                         use_cache=use_cache, **setting_overrides)[0]


def evaluate_many(
    variants: list[str],
    *,
    reference: str | None = "parent",
    settings: EvalSettings | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    **setting_overrides: Any,
) -> list[EvalReport]:
    """Evaluate several variants; those sharing a reference are scored in one pass over the text,
    so the reference's forward pass is computed once per window for all of them."""
    store = store or Store()
    settings = settings or EvalSettings(**setting_overrides)
    targets = [store.get(v) for v in variants]
    refs = [_reference(store, t, reference) for t in targets]
    reports: dict[str, EvalReport] = {}
    pending: dict[str | None, list[Variant]] = {}
    for target, ref in zip(targets, refs):
        hit = store.result(target.name, KIND, _key(target, ref, settings)) if use_cache else None
        if hit:
            reports[target.name] = EvalReport(target.name, ref.name if ref else None, hit.settings, hit.metrics,
                                              _cached_reference(store, ref, settings), True)
        else:
            pending.setdefault(ref.name if ref else None, []).append(target)
    for ref_name, group in pending.items():
        ref = store.get(ref_name) if ref_name else None
        for report in _score_pass(group, ref, settings, store, or_null(progress)):
            reports[report.variant] = report
    return [reports[t.name] for t in targets]


def _score_pass(targets: list[Variant], ref: Variant | None, settings: EvalSettings, store: Store,
                progress: Progress) -> list[EvalReport]:
    from slipstream.engines.loading import open_engine

    engines = [open_engine(t, threads=settings.threads, store=store) for t in targets]
    ref_engine = open_engine(ref, threads=settings.threads, store=store) if ref else None
    text = settings.text()
    tokens = engines[0].tokenizer.encode(text)
    for target, engine in zip(targets, engines):
        other = ref_engine or engines[0]
        if other.tokenizer.encode(text[:4000]) != engine.tokenizer.encode(text[:4000]):
            raise InvalidConfig(f"{target.name} tokenizes text differently from {ref.name if ref else targets[0].name}")
    if settings.max_tokens:
        tokens = tokens[: settings.max_tokens]
    context = min(e.max_context for e in engines + ([ref_engine] if ref_engine else []))
    windows = plan_windows(len(tokens), min(settings.window, context), settings.stride)

    nll = [NLLAccumulator() for _ in targets]
    div = [DivergenceAccumulator() for _ in targets]
    ref_nll = NLLAccumulator()
    label = ", ".join(t.name for t in targets) + (f" vs {ref.name}" if ref else "")
    with progress.task(f"evaluating {label} on {settings.task}", total=len(windows)) as bar:
        for w in windows:
            ids = tokens[w.begin : w.end]
            if ref_engine is None:
                for acc, engine in zip(nll, engines):
                    acc.add(engine.score([ids])[0][-w.scored :])
            else:
                ref_rows, ref_lp = scored_rows(w, ref_engine.logprobs([ids])[0], ids)
                ref_nll.add(ref_lp)
                for acc, d, engine in zip(nll, div, engines):
                    rows, lp = scored_rows(w, engine.logprobs([ids])[0], ids)
                    acc.add(lp)
                    d.add(ref_rows, rows)
            bar.advance()

    machine, versions = describe_machine(), library_versions("ctranslate2")
    ref_info = asdict(ref_engine.info()) if ref_engine else None
    ref_metrics = None
    if ref_engine:
        ref_metrics = ref_nll.result() | {"engine": ref_info}
        store.add_result(ref.name, KIND, _key(ref, None, settings), settings.identity() | {"reference": None},
                         ref_metrics, machine, versions)
    reports = []
    for target, engine, acc, d in zip(targets, engines, nll, div):
        info = asdict(engine.info())
        metrics = acc.result() | (d.result() if ref_engine else {}) | {"engine": info}
        stored = settings.identity() | {"reference": ref.name if ref else None}
        store.add_result(target.name, KIND, _key(target, ref, settings), stored, metrics, machine, versions)
        reports.append(EvalReport(target.name, ref.name if ref else None, stored, metrics, ref_metrics, False,
                                  {"variant": info, "reference": ref_info}))
    return reports


def _reference(store: Store, target: Variant, reference: str | None) -> Variant | None:
    if reference is None:
        return None
    if reference == "parent":
        return store.get(target.parent) if target.parent else None
    return store.get(reference)


def _key(target: Variant, ref: Variant | None, settings: EvalSettings) -> str:
    ident = {"variant": target.sha256, "reference": ref.sha256 if ref else None, **settings.identity()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _cached_reference(store: Store, ref: Variant | None, settings: EvalSettings) -> dict | None:
    if ref is None:
        return None
    hit = store.result(ref.name, KIND, _key(ref, None, settings))
    return hit.metrics if hit else None


def latest(store: Store, variant: str) -> dict | None:
    """The newest evaluation stored for ``variant`` (any settings), or None."""
    rows = store.results(variant, KIND)
    return rows[-1].metrics | {"settings": rows[-1].settings} if rows else None
