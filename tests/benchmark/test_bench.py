"""Benchmarks run in a fresh process and store complete, plausible figures (no timing asserted)."""

from __future__ import annotations

import pytest

from slipstream.benchmark.run import BenchSettings, bench
from slipstream.benchmark.stats import percentiles, summary
from slipstream.errors import InvalidConfig

SMALL = BenchSettings(prompt_tokens=16, output_tokens=8, batch_sizes=(1, 4), repeats=2, warmup=1, threads=1)


class Ticks:
    def __init__(self):
        self.n = 0

    def task(self, description, total=None):
        import contextlib

        outer = self

        class T:
            def advance(self, amount=1):
                outer.n += amount

            def update(self, **_):
                pass

        return contextlib.nullcontext(T())

    def log(self, message):
        pass


@pytest.mark.parametrize("variant", ["tiny", "tiny-ct2-int8"])
def test_bench_reports_every_figure(session_store, variant):
    if variant != "tiny":
        pytest.importorskip("ctranslate2")
    ticks = Ticks()
    report = bench(variant, settings=SMALL, store=session_store, progress=ticks)
    m = report.metrics
    assert ticks.n == SMALL.ticks()
    assert m["latency"]["output_tokens"] == 8 and m["latency"]["prompt_tokens"] == 16
    assert 0 < m["latency"]["ttft_s"]["p50"] <= m["latency"]["ttft_s"]["p95"]
    assert 0 < m["latency"]["tpot_s"]["p50"] <= m["latency"]["tpot_s"]["p95"] <= m["latency"]["tpot_s"]["p99"]
    assert m["latency"]["decode_tokens_per_s"]["n"] == 2
    assert [t["batch_size"] for t in m["throughput"]] == [1, 4]
    assert all(t["output_tokens_per_s"]["median"] > 0 for t in m["throughput"])
    mem = m["memory"]
    assert 0 < mem["rss_before_load_bytes"] <= mem["peak_rss_load_bytes"] <= mem["peak_rss_bytes"]
    assert m["size_bytes"] == session_store.get(variant).size_bytes
    assert m["engine"]["threads"] == 1
    stored = session_store.results(variant, "benchmark")[-1]
    assert stored.metrics == m and stored.machine["logical_cpus"] >= 1


def test_ctranslate2_does_not_load_torch(session_store):
    """The CTranslate2 engine's memory is its own: the benchmark process never imports PyTorch."""
    pytest.importorskip("ctranslate2")
    torch_free = bench("tiny-ct2-int8", settings=SMALL, store=session_store).metrics["memory"]
    with_torch = bench("tiny", settings=SMALL, store=session_store).metrics["memory"]
    assert torch_free["peak_rss_load_bytes"] < with_torch["peak_rss_load_bytes"] - 100e6


def test_bad_settings_and_failures(session_store):
    with pytest.raises(InvalidConfig):
        BenchSettings(batch_sizes=())
    from slipstream.errors import SlipstreamError

    # Refused up front, before a worker process is started.
    with pytest.raises(SlipstreamError, match="engine 'nope' cannot run 'tiny'"):
        bench("tiny", settings=BenchSettings(engine="nope", repeats=1), store=session_store)


def test_stats():
    assert percentiles([1, 2, 3, 4, 5])["p50"] == 3
    s = summary([1.0, 2.0, 10.0])
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 10.0 and s["n"] == 3


def test_prompt_set_workload(session_store, tmp_path):
    from slipstream.benchmark.workloads import load_prompts

    assert len(load_prompts("mt-bench")) == 80 and len(load_prompts("vicuna")) == 80
    settings = BenchSettings(output_tokens=8, batch_sizes=(1, 3), repeats=2, warmup=0, threads=1, workload="vicuna")
    m = bench("tiny", settings=settings, store=session_store).metrics
    assert m["workload"] == {"name": "vicuna", "prompts": 80}
    assert 1 <= m["latency"]["output_tokens"] <= 8 and m["latency"]["prompt_tokens"] > 5
    own = tmp_path / "prompts.jsonl"
    own.write_text('{"instruction": "Say hi."}\n{"prompt": "Count to three."}\n')
    assert load_prompts(f"file:{own}") == ["Say hi.", "Count to three."]
    own.write_text('{"question": "no known field"}\n')
    with pytest.raises(InvalidConfig, match="prompts.jsonl:1: no prompt field"):
        load_prompts(f"file:{own}")


def test_engine_options_reach_the_benchmarked_engine(session_store):
    from dataclasses import replace

    settings = replace(SMALL, batch_sizes=(1,), repeats=1, engine_options={"gemm": "torch", "int8_gemm": "off"})
    report = bench("tiny", settings=settings, store=session_store)
    assert report.metrics["engine"]["details"]["gemm"] == "torch"
    assert report.settings["engine_options"] == {"gemm": "torch", "int8_gemm": "off"}
    assert "engine_options" not in bench("tiny", settings=SMALL, store=session_store, use_cache=True).settings
    with pytest.raises(InvalidConfig, match="engine 'transformers' has no option 'gemmm'"):
        bench("tiny", settings=replace(SMALL, engine_options={"gemmm": "torch"}), store=session_store)
