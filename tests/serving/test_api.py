"""The real server on 127.0.0.1, driven by the official openai client, on both engines:
transformers (continuous batching) and CTranslate2 (dynamic batching)."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer

PROMPT = "Robert Boulter is an English actor who"


@pytest.fixture(scope="module", params=["tiny", "tiny-ct2"])
def served(request, engines):
    name = request.param
    settings = DeploymentSettings(max_batch_size=8, max_queue=32, batch_window_ms=30)
    with RunningServer(engines[name], settings, name) as server:
        yield server, engines[name], name


def test_models_health_and_mode(served):
    server, engine, name = served
    client = server.client()
    assert [m.id for m in client.models.list().data] == [name]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == name
    assert server.state.scheduler.mode == ("continuous" if name == "tiny" else "dynamic")


def test_greedy_completion_equals_engine_generate(served):
    server, engine, name = served
    ids = engine.tokenizer.encode(PROMPT)
    expected = engine.generate([ids], SamplingParams(max_tokens=24))[0]
    out = server.client().completions.create(model=name, prompt=PROMPT, max_tokens=24, temperature=0)
    assert out.choices[0].text == expected.text
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == len(expected.token_ids)
    assert out.choices[0].finish_reason == expected.finish_reason
    by_ids = server.client().completions.create(model=name, prompt=ids, max_tokens=24, temperature=0)
    assert by_ids.choices[0].text == expected.text


def test_streamed_completion_and_chat_equal_whole_ones(served):
    server, engine, name = served
    client = server.client()
    expected = engine.generate([engine.tokenizer.encode(PROMPT)], SamplingParams(max_tokens=20))[0]
    parts = list(client.completions.create(model=name, prompt=PROMPT, max_tokens=20, temperature=0, stream=True,
                                           stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in parts if c.choices)
    assert text == expected.text and len(parts) > 5  # token by token, not in one piece
    assert [c.choices[0].finish_reason for c in parts if c.choices][-1] == expected.finish_reason
    assert parts[-1].usage.completion_tokens == len(expected.token_ids)

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "The game was"}]
    expected = engine.generate([engine.tokenizer.chat(messages)], SamplingParams(max_tokens=16))[0]
    chat = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0)
    assert chat.choices[0].message.content == expected.text and chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens == len(engine.tokenizer.chat(messages))
    chunks = list(client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason


def test_echo_logprobs_score_the_prompt(served):
    server, engine, name = served
    ids = engine.tokenizer.encode(PROMPT)
    out = server.client().completions.create(model=name, prompt=[ids, ids[:4]], max_tokens=0, echo=True,
                                             logprobs=3, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    lp = out.choices[0].logprobs
    assert out.choices[0].text == engine.tokenizer.decode(ids)
    assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(ids)
    np.testing.assert_allclose(lp.token_logprobs[1:], engine.score([ids])[0], atol=1e-4)
    full = engine.logprobs([ids])[0]
    for pos in range(1, len(ids)):
        top = lp.top_logprobs[pos]
        assert 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(float(full[pos - 1].max()), abs=1e-4)
    assert len(out.choices[1].logprobs.tokens) == 4
    # lm-eval's local-completions asks for one token more and drops it
    one = server.client().completions.create(model=name, prompt=ids, max_tokens=1, echo=True, logprobs=1,
                                             temperature=0)
    assert len(one.choices[0].logprobs.token_logprobs) == len(ids) + 1


def test_sampling_settings_n_seed_stop(served):
    server, engine, name = served
    client = server.client()
    many = client.completions.create(model=name, prompt=PROMPT, max_tokens=12, temperature=1.5, n=3, seed=11,
                                     extra_body={"top_k": 50})
    texts = [c.text for c in many.choices]
    assert len(texts) == 3 and len(set(texts)) > 1  # seeds 11, 12, 13: different samples
    if name == "tiny":  # the transformers sampler is seeded per request, so a seed reproduces
        again = client.completions.create(model=name, prompt=PROMPT, max_tokens=12, temperature=1.5, n=3,
                                          seed=11, extra_body={"top_k": 50})
        assert [c.text for c in again.choices] == texts
    full = client.completions.create(model=name, prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = client.completions.create(model=name, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop, "@@"])
    assert cut.choices[0].finish_reason == "stop" and full.startswith(cut.choices[0].text)
    assert stop not in cut.choices[0].text
    streamed = client.completions.create(model=name, prompt=PROMPT, max_tokens=24, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_concurrent_requests_share_batches(served):
    server, engine, name = served
    before = server.metrics()
    results, barrier = {}, threading.Barrier(6)

    def one(i):
        client = server.client()
        barrier.wait()
        results[i] = client.completions.create(model=name, prompt=f"{PROMPT} {i}", max_tokens=120, temperature=0,
                                               extra_body={"ignore_eos": True})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[i].usage.completion_tokens == 120 for i in range(6))
    for i in (0, 5):  # batched answers are still each prompt's own greedy answer
        ids = engine.tokenizer.encode(f"{PROMPT} {i}")
        assert results[i].choices[0].text == engine.generate([ids], SamplingParams(
            max_tokens=120, ignore_eos=True))[0].text
    after = server.metrics()
    assert after["slipstream_batch_size_peak"] >= 2
    assert after["slipstream_output_tokens_total"] - before["slipstream_output_tokens_total"] == 720
    assert after['slipstream_requests_total{endpoint="/v1/completions",status="200"}'] - before.get(
        'slipstream_requests_total{endpoint="/v1/completions",status="200"}', 0) == 6
    assert after["slipstream_time_to_first_token_seconds_count"] > before["slipstream_time_to_first_token_seconds_count"]


def test_exact_cache_answers_repeated_deterministic_requests(served):
    server, engine, name = served
    client = server.client()
    before = server.metrics()
    first = client.completions.create(model=name, prompt="A cat and a dog", max_tokens=10, temperature=0)
    second = client.completions.create(model=name, prompt="A cat and a dog", max_tokens=10, temperature=0)
    client.completions.create(model=name, prompt="A cat and a dog", max_tokens=10, temperature=0.9)  # not cached
    after = server.metrics()
    hits, misses = 'slipstream_cache_hits_total{cache="exact"}', 'slipstream_cache_misses_total{cache="exact"}'
    assert second.choices[0].text == first.choices[0].text
    assert after[hits] - before[hits] == 1 and after[misses] - before[misses] == 1
    # the hit generated nothing: only the first and the sampled request made tokens
    made = after["slipstream_output_tokens_total"] - before["slipstream_output_tokens_total"]
    assert first.usage.completion_tokens <= made <= first.usage.completion_tokens + 10
    streamed = client.completions.create(model=name, prompt="A cat and a dog", max_tokens=10, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == first.choices[0].text  # a hit replays as a stream
    assert server.metrics()[hits] - before[hits] == 2
