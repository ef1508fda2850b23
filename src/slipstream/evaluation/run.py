"""``slipstream evaluate``: score a variant on a task through its engine, beside its reference.

The reference (by default the variant's parent) is always measured too. Perplexity tasks score the
reference and the variants window by window in one pass, so the reference's next-token
distributions give KL divergence and top-1 agreement without ever being stored. Other tasks score
each model on its own. Every result is cached in the registry by (variant, reference, task, settings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.evaluation.gate import Gate, GateResult
from slipstream.evaluation.perplexity import (DivergenceAccumulator, NLLAccumulator, paired_change, plan_windows,
                                              scored_rows)
from slipstream.evaluation.tasks import Task, get_task
from slipstream.extras import library_versions
from slipstream.exporters.readme import write as write_readme
from slipstream.machine import describe_machine
from slipstream.models.tasks import require_task, task_of
from slipstream.progress import Progress, or_null
from slipstream.store import Store, Variant

KIND = "evaluation"
METHOD_VERSION = 3  # bump when a change to scoring makes old cached results incomparable
# 3: every perplexity window starts with the BOS token for tokenizers that add one (Gemma, Llama 2)


@dataclass(frozen=True)
class EvalSettings:
    task: str = "wikitext2"
    window: int = 1024  # perplexity: tokens per sliding window
    stride: int = 512  # perplexity: tokens between window starts
    max_tokens: int | None = None  # perplexity: score only the first N tokens of the text
    limit: int | None = None  # datasets: only the first N items (deterministic)
    max_new_tokens: int | None = None  # generation tasks: None = the task's default
    batch_size: int = 16
    threads: int | None = None
    source_prefix: str | None = None  # seq2seq translation: before each source (None: the family's default)
    beam_size: int = 1  # seq2seq generation: beams searched (the engine option of that name)

    def __post_init__(self) -> None:
        if self.window < 2 or not 0 < self.stride <= self.window:
            raise InvalidConfig(f"need window >= 2 and 0 < stride <= window (got {self.window}, {self.stride})")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise InvalidConfig(f"max_tokens must be at least 2, got {self.max_tokens}")
        if self.limit is not None and self.limit < 1:
            raise InvalidConfig(f"limit must be at least 1, got {self.limit}")

    def identity(self, task: Task) -> dict[str, Any]:
        """What determines a result for ``task`` (threads and batch size do not)."""
        d: dict[str, Any] = {"task": task.name, "kind": task.kind, "method": METHOD_VERSION}
        if task.data_identity:
            d["data"] = task.data_identity
        if task.kind == "perplexity":
            d |= {"window": self.window, "stride": self.stride, "max_tokens": self.max_tokens}
        else:
            d["limit"] = self.limit
        if task.kind == "generation":
            d["max_new_tokens"] = self.max_new_tokens or task.options.get("max_new_tokens")
            if self.source_prefix is not None:
                d["source_prefix"] = self.source_prefix
            if self.beam_size > 1:
                d["beam_size"] = self.beam_size
        return d


@dataclass
class EvalReport:
    variant: str
    reference: str | None
    task: str
    settings: dict[str, Any]
    metrics: dict[str, Any]
    reference_metrics: dict[str, Any] | None = None
    cached: bool = False
    headline: str = ""  # the task's main metric

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
    """Score ``variant`` on ``settings.task`` beside ``reference`` ("parent" by default, a name, or None)."""
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
    """Evaluate several variants on one task; for perplexity, those sharing a reference are scored in
    one pass, so the reference's forward pass runs once per window for all of them."""
    store = store or Store()
    settings = settings or EvalSettings(**setting_overrides)
    task = get_task(settings.task)
    progress = or_null(progress)
    targets = [store.get(v) for v in variants]
    refs = [_reference(store, t, reference) for t in targets]
    from slipstream.evaluation.tasks import KIND_TAKES

    for model in [*targets, *(r for r in refs if r)]:  # next-token scores need a causal LM, cosines an encoder
        require_task(task_of(model), KIND_TAKES[task.kind], f"{task.kind.replace('_', ' ')} ({task.name})",
                     model.name)
    reports: dict[str, EvalReport] = {}
    pending: dict[str | None, list[Variant]] = {}
    for target, ref in zip(targets, refs):
        hit = store.result(target.name, KIND, _key(target, ref, settings, task)) if use_cache else None
        if hit:
            ref_hit = store.result(ref.name, KIND, _key(ref, None, settings, task)) if ref else None
            reports[target.name] = EvalReport(target.name, ref.name if ref else None, task.name, hit.settings,
                                              hit.metrics, ref_hit.metrics if ref_hit else None, True,
                                              task.metrics[0])
        else:
            pending.setdefault(ref.name if ref else None, []).append(target)
    for ref_name, group in pending.items():
        ref = store.get(ref_name) if ref_name else None
        if task.kind == "perplexity":
            done = _perplexity_pass(task, group, ref, settings, store, progress)
        elif task.kind in ("embedding", "classification"):
            done = _encoder_pass(task, group, ref, settings, store, progress)
        else:
            done = [_independent(task, t, ref, settings, store, progress, use_cache) for t in group]
        for report in done:
            reports[report.variant] = report
    return [reports[t.name] for t in targets]


def check_gates(reports: list[EvalReport], gates: list[Gate]) -> list[GateResult]:
    """Apply each gate to the report that carries its metric (``task.metric`` or a unique ``metric``)."""
    results = []
    for gate in gates:
        task_name, _, metric = gate.metric.rpartition(".")
        matches = [r for r in reports if (not task_name or r.task == task_name) and metric in r.metrics]
        if not matches:
            available = sorted({f"{r.task}.{m}" for r in reports for m in r.metrics
                                if isinstance(r.metrics[m], (int, float))})
            raise InvalidConfig(f"gate on {gate.metric!r}: no evaluated task reports it; available: "
                                f"{', '.join(available)}")
        if len(matches) > 1:
            raise InvalidConfig(f"gate on {gate.metric!r} is ambiguous; name the task, e.g. "
                                f"{matches[0].task}.{metric}")
        report = matches[0]
        if not report.reference_metrics or metric not in report.reference_metrics:
            raise InvalidConfig(f"gate on {gate.metric!r} needs a reference to compare with")
        results.append(replace(gate, metric=f"{report.task}.{metric}" if not task_name else gate.metric)
                       .check(report.reference_metrics[metric], report.metrics[metric]))
    return results


# --- perplexity: reference and variants together ------------------------------------------------

def _perplexity_pass(task: Task, targets: list[Variant], ref: Variant | None, settings: EvalSettings,
                     store: Store, progress: Progress) -> list[EvalReport]:
    from slipstream.engines.loading import open_engine

    engines = [open_engine(t, threads=settings.threads, store=store) for t in targets]
    ref_engine = open_engine(ref, threads=settings.threads, store=store) if ref else None
    text = task.load()
    # Models trained with a BOS token first (Gemma, Llama 2) see it at the start of every window, as
    # lm-evaluation-harness's rolling windows do; without it Gemma's perplexity is several times higher.
    prefix = engines[0].tokenizer.bos_prefix()
    tokens = engines[0].tokenizer.encode(text, add_special_tokens=False)
    for target, engine in zip(targets, engines):
        other = ref_engine or engines[0]
        if other.tokenizer.encode(text[:4000]) != engine.tokenizer.encode(text[:4000]):
            raise InvalidConfig(f"{target.name} tokenizes text differently from {ref.name if ref else targets[0].name}")
    if settings.max_tokens:
        tokens = tokens[: settings.max_tokens]
    context = min(e.max_context for e in engines + ([ref_engine] if ref_engine else []))
    windows = plan_windows(len(tokens), min(settings.window, context) - len(prefix), settings.stride)

    nll = [NLLAccumulator() for _ in targets]
    div = [DivergenceAccumulator() for _ in targets]
    ref_nll = NLLAccumulator()
    label = ", ".join(t.name for t in targets) + (f" vs {ref.name}" if ref else "")
    with progress.task(f"{task.name}: {label}", total=len(windows)) as bar:
        for w in windows:
            ids = tokens[w.begin : w.end]
            if ref_engine is None:
                for acc, engine in zip(nll, engines):
                    acc.add(engine.score([prefix + ids])[0][-w.scored :])
            else:  # rows of the prefix dropped: row i predicts ids[i + 1]
                ref_rows, ref_lp = scored_rows(w, ref_engine.logprobs([prefix + ids])[0][len(prefix):], ids)
                ref_nll.add(ref_lp)
                for acc, d, engine in zip(nll, div, engines):
                    rows, lp = scored_rows(w, engine.logprobs([prefix + ids])[0][len(prefix):], ids)
                    acc.add(lp)
                    d.add(ref_rows, rows)
            bar.advance()

    ref_metrics = None
    if ref_engine:
        ref_metrics = ref_nll.result() | {"engine": asdict(ref_engine.info())}
        _store(store, ref, None, settings, task, ref_metrics)
    reports = []
    for target, engine, acc, d in zip(targets, engines, nll, div):
        metrics = acc.result() | (d.result() | paired_change(acc, ref_nll) if ref_engine else {}) | \
            {"engine": asdict(engine.info())}
        stored = _store(store, target, ref, settings, task, metrics)
        reports.append(EvalReport(target.name, ref.name if ref else None, task.name, stored, metrics, ref_metrics,
                                  False, task.metrics[0]))
    return reports


# --- encoders: reference and variants on the same sentences ----------------------------------------

def _encoder_pass(task: Task, targets: list[Variant], ref: Variant | None, settings: EvalSettings,
                  store: Store, progress: Progress) -> list[EvalReport]:
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation import embeddings

    items = task.load(settings.limit)
    engines = [open_engine(t, threads=settings.threads, store=store) for t in targets]
    ref_engine = open_engine(ref, threads=settings.threads, store=store) if ref else None
    try:
        label = f"{task.name}: " + ", ".join(t.name for t in targets) + (f" vs {ref.name}" if ref else "")
        results, ref_metrics = embeddings.score(task.kind, items, engines, ref_engine, progress, label)
        infos = [asdict(e.info()) for e in engines]
        ref_info = asdict(ref_engine.info()) if ref_engine else None
    finally:
        for engine in [*engines, *([ref_engine] if ref_engine else [])]:
            engine.close()
    if ref is not None and ref_metrics is not None:
        ref_metrics |= {"engine": ref_info}
        _store(store, ref, None, settings, task, ref_metrics)
    reports = []
    for target, info, metrics in zip(targets, infos, results):
        metrics |= {"engine": info}
        stored = _store(store, target, ref, settings, task, metrics)
        reports.append(EvalReport(target.name, ref.name if ref else None, task.name, stored, metrics, ref_metrics,
                                  False, task.metrics[0]))
    return reports


# --- other tasks: each model on its own -----------------------------------------------------------

def _independent(task: Task, target: Variant, ref: Variant | None, settings: EvalSettings, store: Store,
                 progress: Progress, use_cache: bool) -> EvalReport:
    ref_metrics = None
    if ref is not None:
        hit = store.result(ref.name, KIND, _key(ref, None, settings, task)) if use_cache else None
        ref_metrics = hit.metrics if hit else _score_one(task, ref, settings, store, progress)
        if not hit:
            _store(store, ref, None, settings, task, ref_metrics)
    metrics = _score_one(task, target, settings, store, progress)
    stored = _store(store, target, ref, settings, task, metrics)
    return EvalReport(target.name, ref.name if ref else None, task.name, stored, metrics, ref_metrics, False,
                      task.metrics[0])


def _score_one(task: Task, variant: Variant, settings: EvalSettings, store: Store, progress: Progress) -> dict:
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation import generation, multiple_choice

    beams = {"beam_size": settings.beam_size} if settings.beam_size > 1 else {}
    engine = open_engine(variant, threads=settings.threads, store=store, **beams)
    try:
        items = task.load(settings.limit)
        if not items:
            raise SlipstreamError(f"task {task.name} has no items")
        label = f"{task.name}: {variant.name}"
        if task.kind == "multiple_choice":
            metrics = multiple_choice.accuracy(engine, items, settings.batch_size, progress, label)
        else:
            opts = task.options
            chat = opts.get("chat")
            if task_of(variant) == "seq2seq":  # the bare source, behind the family's task prefix
                from slipstream.evaluation.translation import model_type, seq2seq_items

                items, chat = seq2seq_items(items, model_type(variant.path), settings.source_prefix), False
            outputs = generation.generate_all(
                engine, items, max_new_tokens=settings.max_new_tokens or opts.get("max_new_tokens", 64),
                stop=tuple(opts.get("stop", ())), chat=chat,
                batch_size=max(1, settings.batch_size // 2), progress=progress, label=label)
            if task.scorer == "translation":
                metrics = generation.translation_metrics(outputs, [it.references[0] for it in items])
            else:
                metrics = generation.qa_metrics(outputs, items)
            metrics["examples"] = [{"prompt": it.prompt[-200:], "output": o, "reference": it.references[0]}
                                   for it, o in list(zip(items, outputs))[:3]]
        return metrics | {"engine": asdict(engine.info())}
    finally:
        engine.close()


# --- cache ----------------------------------------------------------------------------------------

def _reference(store: Store, target: Variant, reference: str | None) -> Variant | None:
    if reference is None:
        return None
    if reference == "parent":
        return store.get(target.parent) if target.parent else None
    ref = store.get(reference)
    return None if ref.name == target.name else ref


def _key(target: Variant, ref: Variant | None, settings: EvalSettings, task: Task) -> str:
    ident = {"variant": target.sha256, "reference": ref.sha256 if ref else None, **settings.identity(task)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _store(store: Store, target: Variant, ref: Variant | None, settings: EvalSettings, task: Task,
           metrics: dict) -> dict:
    stored = settings.identity(task) | {"reference": ref.name if ref else None}
    store.add_result(target.name, KIND, _key(target, ref, settings, task), stored, metrics, describe_machine(),
                     library_versions("ctranslate2", "sacrebleu"))
    if target.kind == "variant":
        write_readme(store, target.name)
    return stored


def latest(store: Store, variant: str, task: str = "wikitext2") -> dict | None:
    """The newest evaluation stored for ``variant`` on ``task`` (any settings), or None."""
    rows = [r for r in store.results(variant, KIND) if r.settings.get("task") == task]
    return rows[-1].metrics | {"settings": rows[-1].settings} if rows else None
