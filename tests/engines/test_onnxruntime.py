"""The ONNX Runtime engine at full precision gives transformers' greedy tokens and scores."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import Engine, SamplingParams
from tests.quant_checks import prompts

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("ort-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    optimize("tiny", "onnx", {"quantization": "float32"}, name="tiny-onnx", store=store)
    hf = open_engine("tiny", store=store, threads=1)
    ort = open_engine("tiny-onnx", store=store, threads=1)
    return hf, ort


def test_implements_the_protocol(engines):
    _, ort = engines
    assert isinstance(ort, Engine)
    assert ort.info().engine == "onnxruntime" and ort.info().compute_type == "float32"
    assert ort.max_context == 256


def test_greedy_tokens_equal_transformers_in_a_padded_batch(engines):
    hf, ort = engines
    ids = prompts(hf)
    assert len({len(p) for p in ids}) > 1  # rows of different lengths: left padding is exercised
    params = SamplingParams(max_tokens=24)
    a, b = hf.generate(ids, params), ort.generate(ids, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.text for c in a] == [c.text for c in b]
    assert all(len(c.token_ids) > 0 for c in a)
    # one at a time too (no padding)
    assert [ort.generate([p], params)[0].token_ids for p in ids] == [c.token_ids for c in a]


def test_scores_and_distributions_agree(engines):
    hf, ort = engines
    ids = prompts(hf)
    for a, b in zip(hf.score(ids), ort.score(ids)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4)
    for fa, fb, p in zip(hf.logprobs(ids), ort.logprobs(ids), ids):
        assert fb.shape == (len(p), hf.tokenizer.vocab_size)
        np.testing.assert_allclose(fa, fb, atol=1e-4)


def test_stream_and_ignore_eos(engines):
    _, ort = engines
    ids = prompts(ort)
    params = SamplingParams(max_tokens=16)
    assert list(ort.stream(ids[2], params)) == ort.generate([ids[2]], params)[0].token_ids
    out = ort.generate(ids[:2], SamplingParams(max_tokens=12, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [12, 12]
    assert all(c.finish_reason == "length" for c in out)


def test_sampling_is_seeded(engines):
    _, ort = engines
    ids = prompts(ort)[:2]
    params = SamplingParams(max_tokens=16, temperature=1.5, top_k=50, seed=7)
    first = [c.token_ids for c in ort.generate(ids, params)]
    assert first == [c.token_ids for c in ort.generate(ids, params)]
    assert first != [c.token_ids for c in ort.generate(ids, SamplingParams(max_tokens=16))]
    assert first != [c.token_ids for c in ort.generate(ids, params.with_(seed=8))]
