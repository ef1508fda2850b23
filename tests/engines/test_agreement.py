"""Every engine behind the Engine protocol gives the same tokens and scores at full precision."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import Engine, SamplingParams

pytest.importorskip("ctranslate2")

PROMPTS = ["The game was", "In 1990 the band", "Robert Boulter is an English actor who", "A cat"]


@pytest.fixture(scope="module")
def engines(session_store):
    hf = open_engine("tiny", store=session_store, threads=1)
    ct2 = open_engine("tiny-ct2-float32", store=session_store, threads=1)
    prompts = [hf.tokenizer.encode(p) for p in PROMPTS]
    return hf, ct2, prompts


def test_both_implement_the_protocol(engines):
    hf, ct2, _ = engines
    assert isinstance(hf, Engine) and isinstance(ct2, Engine)
    assert hf.info().engine == "transformers" and ct2.info().engine == "ctranslate2"
    assert ct2.info().compute_type == "float32"


def test_greedy_tokens_equal(engines):
    hf, ct2, prompts = engines
    params = SamplingParams(max_tokens=24)
    a, b = hf.generate(prompts, params), ct2.generate(prompts, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert all(len(c.token_ids) > 0 for c in a)
    assert [c.text for c in a] == [c.text for c in b]


def test_stream_yields_the_generated_tokens(engines):
    hf, ct2, prompts = engines
    params = SamplingParams(max_tokens=16)
    for engine in (hf, ct2):
        streamed = list(engine.stream(prompts[2], params))
        assert streamed == engine.generate([prompts[2]], params)[0].token_ids


def test_scores_and_distributions_agree(engines):
    hf, ct2, prompts = engines
    for a, b in zip(hf.score(prompts), ct2.score(prompts)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4)
    full_a, full_b = hf.logprobs(prompts[:2]), ct2.logprobs(prompts[:2])
    for fa, fb, p in zip(full_a, full_b, prompts):
        assert fa.shape == (len(p), hf.tokenizer.vocab_size)
        np.testing.assert_allclose(np.exp(fa).sum(-1), 1.0, atol=1e-4)
        np.testing.assert_allclose(fa, fb, atol=1e-4)
    # score() is the gathered log-probability of each next token
    gathered = full_a[0][np.arange(len(prompts[0]) - 1), prompts[0][1:]]
    np.testing.assert_allclose(hf.score(prompts[:1])[0], gathered, atol=1e-5)


def test_ignore_eos_and_max_tokens(engines):
    hf, ct2, prompts = engines
    for engine in (hf, ct2):
        out = engine.generate(prompts[:2], SamplingParams(max_tokens=12, ignore_eos=True))
        assert [len(c.token_ids) for c in out] == [12, 12]
        assert all(c.finish_reason == "length" for c in out)


def test_sampling(engines):
    hf, ct2, prompts = engines
    params = SamplingParams(max_tokens=16, temperature=1.5, top_k=50, seed=7)
    first = hf.generate(prompts[:2], params)
    assert [c.token_ids for c in first] == [c.token_ids for c in hf.generate(prompts[:2], params)]
    greedy = hf.generate(prompts[:2], SamplingParams(max_tokens=16))
    assert [c.token_ids for c in first] != [c.token_ids for c in greedy]
    sampled = ct2.generate(prompts[:2], params)  # CTranslate2's sampler is not seedable per call
    assert all(len(c.token_ids) == 16 or c.finish_reason == "stop" for c in sampled)
    vocab = hf.tokenizer.vocab_size
    assert all(0 <= t < vocab for c in sampled for t in c.token_ids)


def test_stop_strings_cut_text_and_tokens(engines):
    hf, _, prompts = engines
    full = hf.generate(prompts[:1], SamplingParams(max_tokens=24))[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cut = hf.generate(prompts[:1], SamplingParams(max_tokens=24, stop=(stop,)))[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and full.text.startswith(cut.text)
    assert len(cut.token_ids) < len(full.token_ids)


def test_ctranslate2_int8_is_close_but_not_identical(session_store, engines):
    from slipstream.engines.ctranslate2 import saturating_int8
    from tests.quant_checks import distance

    hf, _, _ = engines
    if saturating_int8("int8"):  # no VNNI, oneDNN: 16-bit pair sums saturate; the engine says so
        with pytest.warns(UserWarning, match="no VNNI"):
            int8 = open_engine("tiny-ct2-int8", store=session_store, threads=1)
        bound, agreement = 0.3, 0.4  # measured on an AMD EPYC (AVX2): KL 0.11, top-1 0.49
    else:
        int8 = open_engine("tiny-ct2-int8", store=session_store, threads=1)
        bound, agreement = 0.02, 0.85  # with VNNI (or MKL): KL 0.003, top-1 0.97
    assert int8.info().compute_type.startswith("int8")
    assert int8.info().details["saturating_int8"] is saturating_int8("int8")
    kl, top1 = distance(hf, int8)
    assert 1e-5 < kl < bound and top1 >= agreement
