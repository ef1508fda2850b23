"""The HTML report holds every variant and every plot, self-contained."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("matplotlib")


def test_report_contains_every_variant_and_plot(session_store, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    from slipstream.benchmark import roofline
    from slipstream.benchmark.cost import Price, Workload
    from slipstream.benchmark.run import BenchSettings
    from slipstream.comparison import compare
    from slipstream.evaluation.run import EvalSettings
    from slipstream.report.build import write_report

    # measuring the machine's peaks takes a few seconds; the arithmetic is tested elsewhere
    monkeypatch.setattr(roofline, "measure_peaks",
                        lambda threads, repeats=5: roofline.MachinePeaks(threads, 10e9, 50e9, "now", "test"))
    variants = ["tiny-ct2-float32", "tiny-ct2-int8"]
    comparison = compare("tiny", variants, eval_settings=EvalSettings(window=128, stride=64, max_tokens=512, threads=1),
                         bench_settings=BenchSettings(prompt_tokens=16, output_tokens=8, batch_sizes=(1, 2), repeats=2,
                                                      threads=1),
                         store=session_store)
    out = tmp_path / "r" / "report.html"
    data = write_report(comparison, out, session_store, Price("box", 0.5), Workload(1000, 100))
    page = out.read_text()
    for name in ["tiny", *variants]:
        assert name in page
    for plot in ("pareto", "size", "latency", "cost"):
        assert f'data-plot="{plot}"' in page
    assert page.count("<svg") == 4
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', page)  # nothing fetched from elsewhere
    embedded = json.loads(re.search(r'id="slipstream-data">(.*?)</script>', page, re.S).group(1)
                          .replace("&quot;", '"').replace("&#x27;", "'").replace("&amp;", "&"))
    assert [r["name"] for r in embedded["rows"]] == ["tiny", *variants]
    for row in data["rows"]:
        expected = 0.5 / (row["batch_tokens_per_s"] * 3600) * 1e6
        assert row["cost"]["dollars_per_million_tokens"] == pytest.approx(expected)
        assert 0 < row["roofline"]["share_of_limit"]
    assert set(data["front"]) <= {"tiny", *variants} and data["front"]
