"""Timing one engine: batch-1 latency from streamed tokens, throughput from batched generation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from slipstream.benchmark.stats import percentiles, summary
from slipstream.engines.protocol import Engine, SamplingParams


@dataclass(frozen=True)
class StreamTiming:
    ttft_s: float  # request start to first token
    gaps_s: list[float]  # time between consecutive tokens after the first
    tokens: int

    @property
    def decode_tokens_per_s(self) -> float:
        total = sum(self.gaps_s)
        return len(self.gaps_s) / total if total > 0 else float("nan")


def time_stream(engine: Engine, prompt: Sequence[int], params: SamplingParams) -> StreamTiming:
    start = time.perf_counter()
    stamps = []
    for _ in engine.stream(prompt, params):
        stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("the engine produced no tokens")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return StreamTiming(stamps[0] - start, gaps, len(stamps))


def latency(engine: Engine, prompts: Sequence[Sequence[int]], params: SamplingParams, repeats: int, warmup: int,
            tick: Callable[[], None] = lambda: None) -> dict:
    """Time to first token and time per output token (p50/p95/p99) over ``repeats`` streamed runs,
    cycling through ``prompts``."""
    for i in range(warmup):
        time_stream(engine, prompts[i % len(prompts)], params)
        tick()
    runs, used = [], []
    for i in range(repeats):
        prompt = prompts[i % len(prompts)]
        runs.append(time_stream(engine, prompt, params))
        used.append(len(prompt))
        tick()
    gaps = [g for r in runs for g in r.gaps_s]
    return {
        "prompt_tokens": round(sum(used) / len(used)),
        "output_tokens": round(sum(r.tokens for r in runs) / len(runs)),
        "ttft_s": percentiles([r.ttft_s for r in runs]) | {"runs": summary([r.ttft_s for r in runs])},
        "tpot_s": percentiles(gaps),
        "decode_tokens_per_s": summary([r.decode_tokens_per_s for r in runs]),
        "samples": {"ttft_s": [r.ttft_s for r in runs], "tpot_s": thin(gaps, 400)},
    }


def thin(values: Sequence[float], n: int) -> list[float]:
    """At most ``n`` values, evenly spaced through the sorted list (keeps the distribution's shape)."""
    ordered = sorted(values)
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1)
    return [ordered[round(i * step)] for i in range(n)]


def throughput(engine: Engine, prompts: Sequence[Sequence[int]], params: SamplingParams, batch_size: int,
               repeats: int, tick: Callable[[], None] = lambda: None) -> dict:
    """Output tokens per second generating ``batch_size`` prompts at once (prefill included), cycling
    through ``prompts`` (a single prompt is repeated ``batch_size`` times)."""
    engine.generate([list(prompts[0])], params.with_(max_tokens=4, min_tokens=0, ignore_eos=True))  # warm-up
    rates, seconds = [], []
    for r in range(repeats):
        batch = [list(prompts[(r * batch_size + i) % len(prompts)]) for i in range(batch_size)]
        start = time.perf_counter()
        done = engine.generate(batch, params)
        elapsed = time.perf_counter() - start
        produced = sum(len(c.token_ids) for c in done)
        rates.append(produced / elapsed)
        seconds.append(elapsed)
        tick()
    return {"batch_size": batch_size, "output_tokens_per_s": summary(rates), "seconds": summary(seconds)}
