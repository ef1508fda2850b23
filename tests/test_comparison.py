"""compare: one table with ratios to the base, as rows, markdown and JSON."""

from __future__ import annotations

import json

import pytest

from slipstream.benchmark.run import BenchSettings
from slipstream.comparison import compare
from slipstream.evaluation.run import EvalSettings


def test_compare_rows_and_ratios(session_store):
    pytest.importorskip("ctranslate2")
    result = compare(
        "tiny", ["tiny-ct2-float32", "tiny-ct2-int8"],
        eval_settings=EvalSettings(window=128, stride=64, max_tokens=1024, threads=1),
        bench_settings=BenchSettings(prompt_tokens=16, output_tokens=8, batch_sizes=(1, 2), repeats=2, threads=1),
        store=session_store,
    )
    base, f32, int8 = result.rows
    assert [r.name for r in result.rows] == ["tiny", "tiny-ct2-float32", "tiny-ct2-int8"]
    assert base.size_ratio == 1.0 and base.speedup == 1.0 and base.perplexity_change == 0.0
    assert int8.size_ratio == pytest.approx(int8.size_bytes / base.size_bytes)
    assert int8.size_bytes < f32.size_bytes
    assert abs(f32.perplexity_change) < 1e-4 and f32.kl_mean < 1e-6
    assert int8.kl_mean > f32.kl_mean
    assert int8.speedup == pytest.approx(int8.decode_tokens_per_s / base.decode_tokens_per_s)
    assert base.kl_mean is None and base.engine == "transformers" and int8.engine == "ctranslate2"
    md = result.to_markdown()
    assert md.count("\n") == 4 and "tiny-ct2-int8" in md and "| variant |" in md
    data = json.loads(json.dumps(result.to_dict()))
    assert [r["name"] for r in data["rows"]] == ["tiny", "tiny-ct2-float32", "tiny-ct2-int8"]


def test_interleaved_rounds_give_median_ratios(session_store):
    pytest.importorskip("ctranslate2")
    result = compare(
        "tiny", ["tiny-ct2-int8"],
        eval_settings=EvalSettings(window=128, stride=64, max_tokens=512, threads=1),
        bench_settings=BenchSettings(prompt_tokens=16, output_tokens=8, batch_sizes=(1,), repeats=1, threads=1),
        rounds=3, store=session_store,
    )
    int8 = result.rows[1]
    assert int8.rounds == 3 and result.rounds == 3
    lo, hi = int8.speedup_range
    assert lo <= int8.speedup <= hi
    assert len(session_store.results("tiny-ct2-int8", "benchmark")) >= 3  # each round measured afresh
    assert "(" in result.to_markdown().splitlines()[-1]  # the range is shown
