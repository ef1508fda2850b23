"""Every encoder engine gives the transformers encoder's vectors: CTranslate2 and ONNX Runtime float32 to
float rounding, their int8 variants close to it; the wrong pairings are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.loading import open_engine
from slipstream.errors import Unsupported
from slipstream.models.intake import import_model
from slipstream.pipeline import optimize
from tests.conftest import build_tiny_bert

TEXTS = ["The cat sat on the mat.", "Paris is the capital and most populous city of France.",
         "It was a dark and stormy night; the rain fell in torrents.", "Short."]


@pytest.fixture(scope="module")
def encoder_store(tmp_path_factory, tiny_bert_dir):
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("enc-home"))
    import_model(str(tiny_bert_dir), "bert", store=store)
    return store


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("technique, options, engine, floor", [
    ("ctranslate2", {"quantization": "float32"}, "ctranslate2", 1 - 1e-5),
    ("ctranslate2", {"quantization": "int8"}, "ctranslate2", 0.98),
    ("onnx", {"quantization": "float32"}, "onnxruntime", 1 - 1e-5),
    ("onnx", {"quantization": "int8_dynamic"}, "onnxruntime", 0.98),
    ("onnx", {"quantization": "int8_static", "samples": 8}, "onnxruntime", 0.95),
    ("cast", {"dtype": "bfloat16"}, "transformers", 0.99),
])
def test_each_engine_matches_the_original(encoder_store, technique, options, engine, floor):
    pytest.importorskip("ctranslate2" if engine == "ctranslate2" else "onnxruntime")
    variant = optimize("bert", technique, options, store=encoder_store)
    reference = open_engine("bert", store=encoder_store)
    ids = reference.encode_texts(TEXTS)
    want = reference.embed(ids)
    got_engine = open_engine(variant, store=encoder_store)
    assert got_engine.name == engine and got_engine.task == "embedding"
    got = got_engine.embed(ids)
    assert got.shape == want.shape == (len(TEXTS), 64)
    cos = _cosines(got, want)
    assert cos.min() >= floor, cos
    if floor > 0.999:
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_a_classifier_runs_on_transformers_and_onnx(tmp_path, store, tiny_bert_dir):
    pytest.importorskip("onnxruntime")
    path = build_tiny_bert(tmp_path / "clf", labels=3)
    import_model(str(path), "clf", store=store)
    ref = open_engine("clf", store=store)
    assert ref.task == "classification"
    ids = ref.encode_texts(TEXTS)
    logits = ref.classify(ids)
    assert logits.shape == (len(TEXTS), 3)
    onnx = optimize("clf", "onnx", {"quantization": "float32"}, store=store)
    np.testing.assert_allclose(open_engine(onnx, store=store).classify(ids), logits, atol=1e-4)
    import_model(str(tiny_bert_dir), "bert", store=store)
    with pytest.raises(Unsupported, match="no classification head"):
        open_engine("bert", store=store).classify(ids)


def test_an_over_long_input_is_refused_not_cut_silently(encoder_store):
    from slipstream.errors import InvalidConfig

    engine = open_engine("bert", store=encoder_store)
    with pytest.raises(InvalidConfig, match="at most 128"):
        engine.embed([[2] + [7] * 200 + [3]])
    assert len(engine.encode_texts(["word " * 400])[0]) == 128  # text is cut to the model's length


def test_blockwise_onnx_is_refused_for_an_encoder(encoder_store):
    pytest.importorskip("onnxruntime")
    with pytest.raises(Unsupported, match="int8_blockwise .* an encoder takes"):
        optimize("bert", "onnx", {"quantization": "int8_blockwise"}, store=encoder_store)
