"""Metrics of every replica of every model, merged into one Prometheus page at the endpoint.

Each replica renders ``slipstream serve``'s metrics (its own registry) and sends them to the
:class:`MetricsKeeper` every second; the endpoint's /metrics merges what the keeper holds, adding
``model`` and ``replica`` labels to every sample, so ``sum by (model)`` gives a model's totals and the
per-replica series stay apart. A replica that has not reported for ``stale_s`` (stopped, replaced) drops out.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families


class MetricsKeeper:
    def __init__(self, stale_s: float = 10.0):
        self.stale_s = stale_s
        self._pages: dict[tuple[str, str], tuple[float, str, str]] = {}

    def put(self, model: str, replica: str, variant: str, page: bytes) -> None:
        self._pages[(model, replica)] = (time.monotonic(), variant, page.decode())

    def fresh(self) -> dict[tuple[str, str], tuple[str, str]]:
        now = time.monotonic()
        for key in [k for k, (t, _, _) in self._pages.items() if now - t > self.stale_s]:
            del self._pages[key]
        return {k: (variant, page) for k, (_, variant, page) in self._pages.items()}

    def replicas(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for (model, replica), (variant, _) in sorted(self.fresh().items()):
            out.setdefault(model, []).append({"replica": replica, "variant": variant})
        return out

    def render(self) -> bytes:
        return merge(((model, replica, page) for (model, replica), (_, page) in sorted(self.fresh().items())),
                     extra=[_replica_counts(self.replicas())])


def merge(pages: Iterable[tuple[str, str, str]], extra: Iterable[Metric] = ()) -> bytes:
    """One exposition from several: each sample labelled with its page's model and replica."""
    families: dict[str, Metric] = {}
    for model, replica, page in pages:
        for fam in text_string_to_metric_families(page):
            into = families.get(fam.name)
            if into is None:
                into = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            for s in fam.samples:
                into.add_sample(s.name, {**s.labels, "model": model, "replica": replica}, s.value, s.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), *extra]))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> Any:
        return iter(self.metrics)


def _replica_counts(replicas: dict[str, list[dict[str, str]]]) -> Metric:
    g = GaugeMetricFamily("slipstream_replicas", "Replicas of each model reporting metrics", labels=["model"])
    for model, rs in replicas.items():
        g.add_metric([model], len(rs))
    return g
