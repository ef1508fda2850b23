"""The leaders and the original measured side by side, in confirmation rounds.

A benchmark run alone on a shared machine drifts; interleaved rounds (original, leader 1, leader 2, ...
repeated, ratios as medians per round) do not (docs/benchmarks.md#method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slipstream.search.settings import SearchSettings
from slipstream.store import Store


@dataclass(frozen=True)
class Confirmation:
    """The leaders re-measured side by side with the original: speed-up and batch-1 decode speed by name."""

    rounds: int
    comparison: dict[str, Any]  # :meth:`slipstream.comparison.Comparison.to_dict`
    speedup: dict[str, float]
    decode_tokens_per_s: dict[str, float]


def confirm(settings: SearchSettings, names: list[str], store: Store,
            threads: dict[str, int | None] | None = None,
            engine_options: dict[str, dict[str, Any] | None] | None = None) -> Confirmation:
    """Interleaved rounds: original, leader 1, leader 2, ... repeated; ratios are medians per round. ``threads``
    and ``engine_options``: each one's engine threads and options (those its own benchmark found fastest)."""
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings

    comparison = compare(settings.model, names, eval_settings=EvalSettings(**ppl_settings(settings)),
                         bench_settings=BenchSettings(**settings.bench_settings()), rounds=settings.confirm_rounds,
                         store=store, threads=threads, engine_options=engine_options)
    return Confirmation(rounds=settings.confirm_rounds, comparison=comparison.to_dict(),
                        speedup={r.name: r.speedup for r in comparison.rows},
                        decode_tokens_per_s={r.name: r.decode_tokens_per_s for r in comparison.rows})


def ppl_settings(settings: SearchSettings) -> dict[str, Any]:
    """The comparison table's perplexity: the gate's own evaluation when it is perplexity, else a short one."""
    e = settings.eval_settings(False)
    if "max_tokens" in e:
        return e
    return {"task": "wikitext2", "max_tokens": settings.screen_tokens, "threads": settings.eval_threads,
            "window": settings.window, "stride": settings.stride}
