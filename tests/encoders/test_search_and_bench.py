"""An encoder through the rest of the path: benchmarked in sentences per second, searched with its own
recipes and its default gate (mean cosine within 1%)."""

from __future__ import annotations

import pytest

from slipstream.errors import InvalidConfig
from slipstream.models.intake import import_model
from slipstream.search.settings import default_gate


def test_bench_times_sentences_alone_and_in_batches(store, tiny_bert_dir):
    from slipstream.benchmark.run import bench
    from slipstream.search.record import BenchSummary

    import_model(str(tiny_bert_dir), "bert", store=store)
    report = bench("bert", store=store, batch_sizes=(1, 4), repeats=2, warmup=1, threads=1)
    m = report.metrics
    assert m["kind"] == "encoder" and m["engine"]["engine"] == "transformers"
    assert m["latency"]["sentences_per_s"]["median"] > 0 and m["latency"]["latency_s"]["p50"] > 0
    assert [t["batch_size"] for t in m["throughput"]] == [1, 4]
    summary = BenchSummary.from_metrics(m)
    assert summary.extra == {"unit": "sentences/s"}
    assert summary.decode_tokens_per_s == m["latency"]["sentences_per_s"]["median"]
    readme = (store.get("bert").path / "README.md")
    assert not readme.exists() or "sentences/s" in readme.read_text()


def test_default_gates_by_task():
    assert default_gate("embedding").metric == "embeddings.cosine_mean"
    assert default_gate("causal-lm").metric == "perplexity"
    with pytest.raises(InvalidConfig, match="classify:PATH.accuracy"):
        default_gate("classification")


def test_the_search_space_of_an_encoder_is_its_own():
    from slipstream.search.space import build_space

    encoder, _ = build_space("cpu", task="embedding")
    decoder, _ = build_space("cpu")
    techniques = {s.technique for c in encoder for s in c.steps}
    assert techniques <= {"ctranslate2", "onnx", "cast", "prune-structured", "distill"}
    encoder_only = {c.id for c in encoder if any(s.technique == "distill" for s in c.steps)}
    assert encoder_only and not encoder_only & {c.id for c in decoder}  # its distillation is on embeddings
    assert any(c.label == "ct2-int8" for c in encoder)


def test_auto_on_an_encoder_gates_on_cosine_and_picks_a_passing_variant(store, tiny_bert_dir):
    pytest.importorskip("ctranslate2")
    from slipstream.search.record import Status
    from slipstream.search.run import search
    from slipstream.search.settings import SearchSettings

    import_model(str(tiny_bert_dir), "bert", store=store)
    settings = SearchSettings(model="bert", gate=default_gate("embedding"), budget_s=600, eval_limit=64,
                              screen_limit=32, repeats=1, include=("ctranslate2",), skip_margin=None)
    result = search(settings, store=store)
    assert result.reference.metric == "cosine_mean" and result.reference.value == 1.0
    labels = {r.label: r for r in result.records}
    assert {"ct2-int8", "ct2-float32"} <= set(labels)
    exact = labels["ct2-float32"]
    assert exact.status is Status.PASSED and abs(exact.drop) < 1e-5
    assert result.best is not None and result.best.status is Status.PASSED
    assert result.best.bench.extra.get("unit") == "sentences/s"


def test_auto_on_a_classifier_gates_on_its_labelled_data(tmp_path, store):
    pytest.importorskip("onnxruntime")
    import json

    from slipstream.evaluation.gate import Gate
    from slipstream.search.record import Status
    from slipstream.search.run import search
    from slipstream.search.settings import SearchSettings
    from tests.conftest import build_tiny_bert

    import_model(str(build_tiny_bert(tmp_path / "clf", labels=2)), "clf", store=store)
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in
                            enumerate(["a fine film", "dull and long", "loved it", "not again", "great cast",
                                       "a waste of time", "moving", "boring plot"])))
    gate = Gate.parse(f"classify:{data}.accuracy=0.5abs")
    settings = SearchSettings(model="clf", gate=gate, budget_s=600, repeats=1, include=("onnx",),
                              exclude=("prune-structured",), skip_margin=None)
    assert settings.gate_task == f"classify:{data}"  # the file name's dots stay in the task
    result = search(settings, store=store)
    assert result.reference.metric == "accuracy" and 0 <= result.reference.value <= 1
    exact = next(r for r in result.records if r.label == "onnx-fp32")
    assert exact.status is Status.PASSED and exact.drop == 0, (exact.stage, exact.reason)
