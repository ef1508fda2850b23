"""What a search is asked to do: the model, the gate, the objective, the budget, the measurement settings.

:meth:`SearchSettings.identity` is what decides every candidate's record: a search restarted with the same
identity resumes from its ledger.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from slipstream.errors import InvalidConfig
from slipstream.evaluation.gate import Gate
from slipstream.search.worker import OBJECTIVES

LEDGER_VERSION = 1
# The default bound on the mean KL divergence (nats per token) from the original, beside a 1% perplexity gate:
# ln(1.01), what a 1% perplexity loss costs if the original's own predictions were the text. The figures that
# chose it are in docs/search.md#the-default-gate.
DEFAULT_MAX_KL = math.log(1.01)


def parse_duration(text: str | None) -> float | None:
    """``30m``, ``1h``, ``90s``, ``45`` (minutes), ``none``."""
    if text is None or text.strip().lower() in ("", "none", "inf"):
        return None
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t) * 60
    except ValueError:
        raise InvalidConfig(f"budget {text!r}: expected a duration such as 30m, 1h or 900s") from None


def parse_threads(value: int | tuple[int, ...] | list[int] | str | None) -> tuple[int, ...]:
    """The thread counts a search benchmarks with: ``auto`` (or None) is one thread and every core."""
    import os

    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return tuple(sorted({1, os.cpu_count() or 1}))
    try:
        counts = [value] if isinstance(value, int) else \
            [int(v) for v in value.split(",")] if isinstance(value, str) else [int(v) for v in value]
    except ValueError:
        raise InvalidConfig(f"threads {value!r}: expected auto, a number, or numbers such as 1,4") from None
    if not counts or min(counts) < 1:
        raise InvalidConfig(f"threads {value!r}: every thread count must be at least 1")
    return tuple(sorted(set(counts)))


def parse_max_kl(text: str | float | None, gate: Gate | None = None) -> float | None:
    """``0.01`` (nats per token), ``none``/``off`` for no KL bound, or ``auto``: ln(1 + the allowed drop) beside
    a relative perplexity gate (the KL a perplexity loss that size would mean), else :data:`DEFAULT_MAX_KL`."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("none", "off", "")):
        return None
    if isinstance(text, str) and text.strip().lower() == "auto":
        if gate is not None and gate.metric == "perplexity" and gate.relative:
            return math.log1p(gate.max_drop)
        return DEFAULT_MAX_KL
    try:
        value = float(text)
    except ValueError:
        raise InvalidConfig(f"max KL {text!r}: expected nats per token such as 0.01, auto or none") from None
    if not value >= 0:
        raise InvalidConfig(f"max KL must be >= 0 (or none), got {text}")
    return value


def default_gate(task: str) -> Gate:
    """The gate a search uses when none is given: perplexity within 1% for a generator, mean cosine to the
    original's embeddings within 1% (at least 0.99) for an embedding model. A classifier's gate needs its
    labelled data (``classify:PATH.accuracy``), and a translation model's a FLORES task."""
    if task == "embedding":
        return Gate("embeddings.cosine_mean", 0.01)
    if task == "causal-lm":
        return Gate("perplexity", 0.01)
    hint = ("classify:PATH.accuracy (a JSONL file of text and label)" if task == "classification"
            else "flores_en_de.chrf")
    raise InvalidConfig(f"a {task} model has no default accuracy gate; give one with --metric, e.g. {hint}")


def model_task(model: str, store: Any = None) -> str:
    """The task of ``model`` before a search imports it: from the store, a bundled model's entry, or a model
    directory's config (a hub id not yet downloaded counts as a causal LM)."""
    from pathlib import Path

    from slipstream.models import bundled
    from slipstream.models.tasks import detect, task_of
    from slipstream.store import Store

    store = store or Store()
    if store.exists(model):
        return task_of(store.get(model))
    if (entry := bundled.lookup(model)) is not None:
        return entry.task
    return detect(Path(model)) if Path(model).is_dir() else "causal-lm"


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
    # engine threads each candidate is benchmarked with; the fastest is kept (and recommended for serving).
    # "auto": one thread and every core; a number, or several ("1,2" or a tuple), fixes them
    bench_threads: int | tuple[int, ...] | str | None = "auto"
    eval_threads: int | None = None
    instance: str | None = None  # cost objective: a priced instance (default aws-m7g.large) ...
    price_per_hour: float | None = None  # ... or a price of your own
    confirm: int = 2  # best passing candidates re-measured side by side with the original
    confirm_rounds: int = 2
    recipe_file: str | None = None
    replace_defaults: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # the first rung's speed probe: output tokens per run (one repeat, each thread count)
    probe_tokens: int = 16
    # the second rung: a candidate whose probe ratio (against the original's probe) times this margin is below
    # the best passing candidate's measured ratio is not measured in full (listed as not run, with why); the
    # margin covers the probe's error. None measures every screened candidate in full (--run-all).
    skip_margin: float | None = 1.25
    # WikiText-2 gates (perplexity, top-1 agreement): the mean KL divergence from the original must stay within
    # this too (absolute, nats per token), since perplexity can hold while the next-token distribution moves;
    # "auto" follows the perplexity gate (ln(1 + its allowed drop)); None turns the bound off. Other tasks do
    # not measure KL, so it does not apply to them.
    max_kl: float | str | None = "auto"
    # what the benchmark runs: "fixed" (one 128-token prompt, exactly output_tokens generated) or a prompt set
    # (mt-bench, vicuna, grounded, file:PATH: each request through the chat template, stopping where the model
    # stops). On a prompt set, candidates whose engine takes it are also measured with prompt-lookup drafts of
    # this many tokens, kept where they are faster (0: never tried)
    workload: str = "fixed"
    prompt_lookup: int = 8

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidConfig(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise InvalidConfig(f"budget must be positive, got {self.budget_s}s")
        if self.device not in ("cpu", "cuda"):
            raise InvalidConfig(f"device must be cpu or cuda, got {self.device!r}")
        if self.skip_margin is not None and self.skip_margin < 1:
            raise InvalidConfig(f"skip margin must be at least 1 (or None to run every candidate), got {self.skip_margin}")
        object.__setattr__(self, "bench_threads", parse_threads(self.bench_threads))
        if isinstance(self.max_kl, str):  # "auto" (the default), "none", or a number as text
            object.__setattr__(self, "max_kl", parse_max_kl(self.max_kl, self.gate))
        if self.max_kl is not None and not self.max_kl >= 0:
            raise InvalidConfig(f"max KL must be a number of nats per token >= 0 (or none), got {self.max_kl}")
        from slipstream.benchmark.workloads import check_workload

        check_workload(self.workload)
        if self.prompt_lookup < 0:
            raise InvalidConfig(f"prompt_lookup must be 0 (never tried) or a number of draft tokens, "
                                f"got {self.prompt_lookup}")


    @property
    def guards(self) -> tuple[Gate, ...]:
        """Gates that must hold beside :attr:`gate`, on the same evaluation: the KL bound on WikiText-2."""
        if self.max_kl is None or self.gate.metric == "kl_mean" or self.gate_task != "wikitext2":
            return ()
        return (Gate("kl_mean", self.max_kl, relative=False),)

    @property
    def gates(self) -> tuple[Gate, ...]:
        """Every gate a candidate must pass: the gate first, then the guards."""
        return (self.gate, *self.guards)

    def describe_gates(self) -> str:
        return " and ".join(g.describe() for g in self.gates)

    @property
    def gate_task(self) -> str:
        if self.task:
            return self.task
        if "." in self.gate.metric:
            return self.gate.metric.rsplit(".", 1)[0]  # a task may hold dots (classify:data.jsonl)
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

    def bench_settings(self, threads: int | None = None) -> dict[str, Any]:
        """The benchmark's settings at ``threads`` (default: the first thread count tried)."""
        batch = (1,) if self.objective in ("latency", "size") else (1, 8)
        return {"output_tokens": self.output_tokens, "batch_sizes": batch, "repeats": self.repeats,
                "threads": threads or self.bench_threads[0], "device": self.device}  \
            | ({"workload": self.workload} if self.workload != "fixed" else {})  # type: ignore[index]

    def option_sets(self) -> list[dict[str, Any]]:
        """The engine option sets each candidate is measured with beside its thread counts (each engine takes
        those it has options for): plain, and prompt lookup where the workload is a prompt set."""
        if self.workload == "fixed" or not self.prompt_lookup:
            return [{}]
        return [{}, {"prompt_lookup": self.prompt_lookup}]

    def probe_settings(self, threads: int | None = None) -> dict[str, Any]:
        """The speed probe: the benchmark's settings with few output tokens and one repeat."""
        return self.bench_settings(threads) | {"output_tokens": self.probe_tokens, "repeats": 1}

    def identity(self, model_sha: str) -> dict[str, Any]:
        """What decides every candidate's record: a restart with the same identity resumes."""
        return {"v": LEDGER_VERSION, "model": self.model, "sha": model_sha, "gate": asdict(self.gate),
                "guards": [asdict(g) for g in self.guards],
                "objective": self.objective, "device": self.device, "screen": self.eval_settings(True),
                "evaluate": self.eval_settings(False),
                "bench": self.bench_settings() | {"threads": list(self.bench_threads)},  # type: ignore[arg-type]
                "price": asdict(self.price()) if self.objective == "cost" else None} \
            | ({"option_sets": self.option_sets()} if len(self.option_sets()) > 1 else {})

    def price(self) -> Any:
        from slipstream.benchmark.cost import resolve_price

        return resolve_price(self.instance, self.price_per_hour)
