"""Prometheus metrics for one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_STEP_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


class _Rate:
    """Output tokens per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self._events.append((time.monotonic(), n))

    def value(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()
            return sum(n for _, n in self._events) / self.window_s


class _Live:
    """Collects values read at scrape time: queue, running batch, engine-side cache counters."""

    def __init__(self, read: Callable[[], dict[str, Any]]):
        self.read = read

    def collect(self) -> Any:
        v = self.read()
        yield GaugeMetricFamily("slipstream_queue_depth", "Requests waiting for a batch slot",
                                value=v.get("queue_depth", 0))
        yield GaugeMetricFamily("slipstream_running_requests", "Requests in the running batch",
                                value=v.get("running", 0))
        yield GaugeMetricFamily("slipstream_batch_size_peak", "Largest batch the engine has run",
                                value=v.get("peak_batch", 0))
        yield GaugeMetricFamily("slipstream_output_tokens_per_second",
                                "Output tokens per second over the last 10 s", value=v.get("tokens_per_s", 0.0))
        hits = CounterMetricFamily("slipstream_prefix_cache_hits", "Prompts that reused a cached prefix")
        hits.add_metric([], v.get("prefix_hits", 0))
        yield hits
        misses = CounterMetricFamily("slipstream_prefix_cache_misses", "Prompts prefilled from scratch")
        misses.add_metric([], v.get("prefix_misses", 0))
        yield misses
        reused = CounterMetricFamily("slipstream_prefix_cache_tokens_reused", "Prompt tokens not recomputed")
        reused.add_metric([], v.get("prefix_tokens_reused", 0))
        yield reused
        if "lookup_drafted" in v:  # the engine drafts with prompt lookup (engine option prompt_lookup)
            drafted = CounterMetricFamily("slipstream_prompt_lookup_draft_tokens", "Tokens drafted by prompt "
                                          "lookup and checked by the model")
            drafted.add_metric([], v["lookup_drafted"])
            yield drafted
            accepted = CounterMetricFamily("slipstream_prompt_lookup_accepted_tokens", "Drafted tokens the model "
                                           "agreed with (each saves a decode step)")
            accepted.add_metric([], v.get("lookup_accepted", 0))
            yield accepted


class Metrics:
    def __init__(self, read_live: Callable[[], dict[str, Any]] = dict):
        import prometheus_client

        prometheus_client.disable_created_metrics()  # no *_created series: they only add noise here
        self.registry = r = CollectorRegistry()
        self.rate = _Rate()
        self.requests = Counter("slipstream_requests", "Requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.rejected = Counter("slipstream_requests_rejected", "Requests refused at once because the "
                                "queue was full", registry=r)
        self.cancelled = Counter("slipstream_requests_cancelled", "Generations stopped because the client "
                                 "went away", registry=r)
        self.expired = Counter("slipstream_requests_expired", "Generations cancelled at the deployment's "
                               "deadline (deadline_s)", registry=r)
        self.prompt_tokens = Counter("slipstream_prompt_tokens", "Prompt tokens processed (embeddings: input "
                                     "tokens)", registry=r)
        self.output_tokens = Counter("slipstream_output_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("slipstream_time_to_first_token_seconds", "From request arrival to its first "
                              "token", buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("slipstream_time_per_output_token_seconds", "Mean time between a request's "
                              "tokens after the first", buckets=_TPOT_BUCKETS, registry=r)
        self.latency = Histogram("slipstream_request_duration_seconds", "From request arrival to its last "
                                 "token (embeddings: to its vectors)", buckets=_TTFT_BUCKETS, registry=r)
        self.batch = Histogram("slipstream_batch_size", "Sequences in each engine step (continuous) or "
                               "batch (dynamic; embeddings: inputs in each embed call)", buckets=_BATCH_BUCKETS,
                               registry=r)
        self.step = Histogram("slipstream_engine_step_seconds", "Wall time of each engine step (continuous "
                              "batching: one token for every running sequence, newcomers' prompts included)",
                              buckets=_STEP_BUCKETS, registry=r)
        self.cache_hits = Counter("slipstream_cache_hits", "Response cache hits", ["cache"], registry=r)
        self.cache_misses = Counter("slipstream_cache_misses", "Response cache misses", ["cache"], registry=r)
        self.adapter_requests = Counter("slipstream_adapter_requests", "Generations asked of each LoRA adapter",
                                        ["adapter"], registry=r)
        self.adapter_tokens = Counter("slipstream_adapter_output_tokens", "Tokens generated by each LoRA "
                                      "adapter", ["adapter"], registry=r)
        for cache in ("exact", "semantic"):  # show zeros from the start
            self.cache_hits.labels(cache)
            self.cache_misses.labels(cache)
        r.register(_Live(lambda: {**read_live(), "tokens_per_s": self.rate.value()}))

    def tokens(self, n: int) -> None:
        self.output_tokens.inc(n)
        self.rate.add(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
