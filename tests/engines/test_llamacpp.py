"""The llama.cpp engine on an F32 GGUF gives transformers' greedy tokens and scores."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import Engine, SamplingParams
from tests.quant_checks import prompts

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama_cpp is not importable: install the 'llamacpp' extra (make llamacpp)", allow_module_level=True)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("llamacpp-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    optimize("tiny", "gguf", {"quantization": "F32"}, name="tiny-f32", store=store)
    hf = open_engine("tiny", store=store, threads=1)
    lc = open_engine("tiny-f32", store=store, threads=1)
    return hf, lc


def test_implements_the_protocol(engines):
    _, lc = engines
    assert isinstance(lc, Engine)
    info = lc.info()
    assert info.engine == "llamacpp" and info.compute_type == "F32" and info.details["kv_cache"] == "f32"


def test_greedy_tokens_equal_transformers(engines):
    hf, lc = engines
    ids = prompts(hf)
    params = SamplingParams(max_tokens=24)
    a, b = hf.generate(ids, params), lc.generate(ids, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.text for c in a] == [c.text for c in b]
    assert all(len(c.token_ids) > 0 for c in a)


def test_scores_agree(engines):
    hf, lc = engines
    ids = prompts(hf)
    for a, b in zip(hf.score(ids), lc.score(ids)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=2e-2)  # llama.cpp sums in another order (and tiles)
    for fa, fb in zip(hf.logprobs(ids), lc.logprobs(ids)):
        assert (fa.argmax(-1) == fb.argmax(-1)).all()
        assert (np.exp(fa) * (fa - fb)).sum(-1).max() < 1e-4


def test_stream_ignore_eos_and_sampling(engines):
    _, lc = engines
    ids = prompts(lc)
    params = SamplingParams(max_tokens=16)
    assert list(lc.stream(ids[2], params)) == lc.generate([ids[2]], params)[0].token_ids
    out = lc.generate(ids[:2], SamplingParams(max_tokens=12, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [12, 12]
    sampled = SamplingParams(max_tokens=16, temperature=1.5, top_k=50, seed=7)
    first = [c.token_ids for c in lc.generate(ids[:2], sampled)]
    assert first == [c.token_ids for c in lc.generate(ids[:2], sampled)]
    assert first != [c.token_ids for c in lc.generate(ids[:2], params)]


def test_prompt_lookup_gives_plain_greedy_tokens(engines):
    from slipstream.engines.llamacpp import LlamaCppEngine

    hf, lc = engines
    lookup = LlamaCppEngine(lc.path, threads=1, prompt_lookup=6)
    text = "the cat and the dog went to the market and the cat and the dog came home. "
    # one group at a time: the plain engine's batch shares the tiny model's 256-token context
    for ids, params in (([hf.tokenizer.encode(text * 2)], SamplingParams(max_tokens=40, ignore_eos=True)),
                        (prompts(hf), SamplingParams(max_tokens=24))):
        want = lc.generate(ids, params)
        got = lookup.generate(ids, params)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
        assert list(lookup.stream(ids[0], params)) == want[0].token_ids
    details = lookup.info().details
    assert details["prompt_lookup"] == 6 and details["drafted"] > 0 and details["steps"] > 0
    # after the lookup sequences, the engine's plain batched path still decodes from a clean cache
    sampled = SamplingParams(max_tokens=8, temperature=0.7, seed=1)
    assert [c.token_ids for c in lookup.generate(prompts(hf), sampled)] == \
        [c.token_ids for c in lc.generate(prompts(hf), sampled)]
