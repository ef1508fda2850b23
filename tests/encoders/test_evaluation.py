"""Cosine and retrieval agreement, classification accuracy and F1: the numbers, and as gates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slipstream.errors import InvalidConfig, Unsupported
from slipstream.evaluation import embeddings
from slipstream.evaluation.gate import Gate
from slipstream.evaluation.run import check_gates, evaluate
from slipstream.models.intake import import_model
from slipstream.pipeline import optimize
from tests.conftest import build_tiny_bert


def test_identical_vectors_agree_fully_and_noise_lowers_each_measure():
    rng = np.random.default_rng(0)
    want = rng.normal(size=(200, 32)).astype(np.float32)
    same = embeddings.embedding_metrics(want.copy(), want)
    assert same == pytest.approx({"cosine_mean": 1.0, "cosine_min": 1.0, "cosine_p5": 1.0, "retrieval_top10": 1.0})
    noisy = embeddings.embedding_metrics(want + rng.normal(scale=0.5, size=want.shape).astype(np.float32), want)
    assert 0.8 < noisy["cosine_mean"] < 0.95 and noisy["cosine_min"] < noisy["cosine_mean"]
    assert 0.0 < noisy["retrieval_top10"] < 0.9


def test_retrieval_agreement_counts_shared_neighbours():
    # four points on a line: each one's nearest neighbour (k=1) under both sets of vectors
    want = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], np.float32)
    swapped = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], np.float32)  # rows 1 and 2 trade places
    assert embeddings.retrieval_agreement(want, want, k=1) == 1.0
    # want: 0<->1, 2<->3; swapped: 0<->2, 1<->3: every first neighbour differs
    assert embeddings.retrieval_agreement(swapped, want, k=1) == 0.0


def test_classification_metrics_by_hand():
    predicted = ["pos", "pos", "neg", "neg", "pos"]
    gold = ["pos", "neg", "neg", "neg", "1"]  # "1" is the index of pos in id2label
    m = embeddings.classification_metrics(predicted, gold, {"0": "neg", "1": "pos"})
    assert m["accuracy"] == pytest.approx(4 / 5)
    # pos: tp 2, fp 1, fn 0 -> 0.8; neg: tp 2, fp 0, fn 1 -> 0.8
    assert m["f1_macro"] == pytest.approx(0.8)


def test_a_bad_labelled_file_names_its_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(InvalidConfig, match="data.jsonl:2"):
        embeddings.read_labelled(path)


@pytest.fixture(scope="module")
def encoder_store(tmp_path_factory, tiny_bert_dir):
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("eval-home"))
    import_model(str(tiny_bert_dir), "bert", store=store)
    return store


def test_embeddings_task_scores_a_variant_and_gates_on_it(encoder_store):
    pytest.importorskip("ctranslate2")
    optimize("bert", "ctranslate2", {"quantization": "float32"}, name="bert-f32", store=encoder_store)
    optimize("bert", "ctranslate2", {"quantization": "int8"}, name="bert-i8", store=encoder_store)
    exact = evaluate("bert-f32", task="embeddings", limit=64, store=encoder_store)
    assert exact.metrics["cosine_min"] > 0.99999 and exact.metrics["retrieval_top10"] == 1.0
    assert exact.metrics["sentences"] == 64 and exact.reference_metrics["cosine_mean"] == 1.0
    lossy = evaluate("bert-i8", task="embeddings", limit=64, store=encoder_store)
    assert lossy.metrics["cosine_mean"] < exact.metrics["cosine_mean"]
    tight, loose = Gate("embeddings.cosine_mean", 1e-7), Gate("embeddings.cosine_mean", 0.05)
    assert not check_gates([lossy], [tight])[0].passed
    assert check_gates([lossy], [loose])[0].passed
    cached = evaluate("bert-i8", task="embeddings", limit=64, store=encoder_store)
    assert cached.cached and cached.metrics["cosine_mean"] == lossy.metrics["cosine_mean"]


def test_perplexity_on_an_encoder_and_cosines_on_a_decoder_are_refused(encoder_store, tiny_llama_dir):
    with pytest.raises(Unsupported, match="perplexity .* takes causal-lm models; 'bert' is an embedding model"):
        evaluate("bert", task="wikitext2", reference=None, store=encoder_store)
    import_model(str(tiny_llama_dir), "llama", store=encoder_store)
    with pytest.raises(Unsupported, match="takes embedding models; 'llama' is a causal-lm model"):
        evaluate("llama", task="embeddings", reference=None, store=encoder_store)


def test_classification_accuracy_f1_and_agreement_from_a_jsonl(tmp_path, store):
    pytest.importorskip("onnxruntime")
    import_model(str(build_tiny_bert(tmp_path / "clf", labels=3)), "clf", store=store)
    from slipstream.engines.loading import open_engine

    engine = open_engine("clf", store=store)
    texts = ["the cat sat", "a long day at work", "rain again today", "the match was won", "an old house"] * 4
    predicted = embeddings.predicted_labels(engine.classify(engine.encode_texts(texts)), engine.config["id2label"])
    gold = predicted[:10] + ["LABEL_0"] * 10  # half as the model says, half one label
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in zip(texts, gold)))
    optimize("clf", "onnx", {"quantization": "float32"}, name="clf-onnx", store=store)
    report = evaluate("clf-onnx", task=f"classify:{data}", store=store)
    want = embeddings.classification_metrics(predicted, gold, engine.config["id2label"])
    assert report.metrics["accuracy"] == pytest.approx(want["accuracy"])
    assert report.metrics["f1_macro"] == pytest.approx(want["f1_macro"])
    assert report.metrics["label_agreement"] == 1.0  # float32 ONNX gives the same labels
    assert check_gates([report], [Gate.parse(f"classify:{data}.accuracy=0.0abs")])[0].passed
