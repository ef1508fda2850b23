"""``slipstream bench``: latency, throughput, peak memory and size of one variant.

Each benchmark runs in its own process (see :mod:`slipstream.benchmark.worker`); the result is
stored in the registry with the machine and library versions it was measured with.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.exporters.readme import write as write_readme
from slipstream.extras import library_versions
from slipstream.jsonlines import json_lines
from slipstream.lifetime import child_env
from slipstream.machine import describe_machine
from slipstream.progress import Progress, or_null
from slipstream.store import Store

KIND = "benchmark"


@dataclass(frozen=True)
class BenchSettings:
    prompt_tokens: int = 128
    output_tokens: int = 64
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None  # None: the engine's default (all cores)
    device: str | None = None
    engine: str | None = None
    workload: str = "fixed"  # fixed lengths, or a prompt set: mt-bench, vicuna, file:PATH
    engine_options: dict[str, Any] = field(default_factory=dict)  # the engine's (slipstream.engines.options)

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 2:
            raise InvalidConfig("prompt_tokens must be >= 1 and output_tokens >= 2")
        if self.repeats < 1 or self.warmup < 0 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InvalidConfig("repeats must be >= 1, warmup >= 0 and batch sizes >= 1")

    def ticks(self) -> int:
        return 1 + self.warmup + self.repeats * (1 + len(self.batch_sizes))


@dataclass
class BenchReport:
    variant: str
    settings: dict[str, Any]
    metrics: dict[str, Any]
    size_bytes: int
    machine: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench(
    variant: str,
    *,
    settings: BenchSettings | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    use_cache: bool = False,
    **setting_overrides: Any,
) -> BenchReport:
    """Benchmark ``variant`` in a fresh process. With ``use_cache``, reuse a stored result measured
    with the same settings on the same files instead of measuring again."""
    store = store or Store()
    settings = settings or BenchSettings(**setting_overrides)
    target = store.get(variant)
    stored = asdict(settings)
    if not settings.engine_options:
        del stored["engine_options"]  # results measured before engines had options keep their keys
    key = _key(target.sha256, stored)
    if use_cache and (hit := store.result(target.name, KIND, key)):
        return BenchReport(target.name, hit.settings, hit.metrics, target.size_bytes, hit.machine, cached=True)
    from slipstream.engines.loading import engine_name, preflight
    from slipstream.engines.options import options_class

    options_class(engine_name(target, settings.engine)).of(settings.engine_options)  # say why up front
    preflight(target, engine=settings.engine, device=settings.device, store=store)
    request = {"home": str(store.home), "variant": target.name, "engine": settings.engine, "settings": asdict(settings)}
    result = None
    with or_null(progress).task(f"benchmarking {target.name}", total=settings.ticks()) as bar, \
            tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipstream.benchmark.worker", json.dumps(request)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"} | child_env(),
        )
        assert proc.stdout is not None
        error = None
        for event in json_lines(proc.stdout):  # lines a library prints to stdout are skipped
            if event.get("event") == "tick":
                bar.advance()
            elif event.get("event") == "result":
                result = event["result"]
            elif event.get("event") == "error":
                error = event["message"]
        proc.wait()
        errors.seek(0)
        stderr = errors.read()
    if result is None:
        detail = error or (stderr.strip().splitlines() or ["no output"])[-1]
        raise SlipstreamError(f"benchmark of {target.name} failed: {detail}")
    metrics = result | {"size_bytes": target.size_bytes}
    machine = describe_machine()
    store.add_result(target.name, KIND, key, stored, metrics, machine,
                     library_versions("ctranslate2"))
    if target.kind == "variant":
        write_readme(store, target.name)
    return BenchReport(target.name, stored, metrics, target.size_bytes, machine)


def _key(sha: str, settings: dict) -> str:
    return hashlib.sha256(json.dumps({"variant": sha, **settings}, sort_keys=True).encode()).hexdigest()


def latest(store: Store, variant: str) -> dict | None:
    rows = store.results(variant, KIND)
    return rows[-1].metrics | {"settings": rows[-1].settings} if rows else None
