"""Batching, prefix reuse and metrics through the real server (transformers: continuous batching)."""

from __future__ import annotations

import threading

import httpx

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer, Slowed, parse_metrics, wait_for

PROMPT = "Robert Boulter is an English actor who"


def test_a_request_joins_the_running_batch_at_the_next_step_and_leaves_at_once(engines):
    engine = engines["tiny"]
    slow = Slowed(engine, delay=0.02)
    settings = DeploymentSettings(max_batch_size=4, exact_cache={"enabled": False},
                                  prefix_cache={"enabled": False})
    with RunningServer(slow, settings, "tiny") as server:
        client = server.client()
        long_text: list[str] = []

        def long_request() -> None:
            stream = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=150, temperature=0,
                                               stream=True, extra_body={"ignore_eos": True})
            long_text.extend(c.choices[0].text for c in stream if c.choices)

        a = threading.Thread(target=long_request)
        a.start()
        assert wait_for(lambda: len(slow.steps) >= 10)  # A (seq 1) is decoding alone
        short = client.completions.create(model="tiny", prompt="The game was", max_tokens=5, temperature=0,
                                          extra_body={"ignore_eos": True})
        b_done_at = len(slow.steps)
        assert server.state.scheduler.running  # A is still generating when B has finished
        a.join(60)

    steps = slow.steps
    stepper = slow.steppers[0]
    joined = stepper.added[2]
    b_steps = [i for i, ids in enumerate(steps) if 2 in ids]
    assert b_steps == list(range(joined, joined + 5))  # B's first token came from the very next step
    assert all(ids == [1] for ids in steps[:joined])  # A ran alone before B arrived ...
    assert all(1 in steps[i] for i in b_steps)  # ... shared every one of B's steps ...
    assert all(ids == [1] for ids in steps[joined + 5:])  # ... and ran alone again once B had left
    assert b_done_at < 150 and stepper.counters["peak_batch"] == 2
    # sharing a batch changed neither answer
    want_a = engine.generate([engine.tokenizer.encode(PROMPT)], SamplingParams(max_tokens=150, ignore_eos=True))[0]
    want_b = engine.generate([engine.tokenizer.encode("The game was")], SamplingParams(max_tokens=5, ignore_eos=True))[0]
    assert "".join(long_text) == want_a.text and short.choices[0].text == want_b.text


def test_shared_prompt_prefixes_are_reused_and_counted(engines):
    engine = engines["tiny"]
    system = "You are a helpful assistant. Answer briefly and precisely, in plain English words. "
    settings = DeploymentSettings(exact_cache={"enabled": False})
    with RunningServer(engine, settings, "tiny") as server:
        client = server.client()
        outs = [client.completions.create(model="tiny", prompt=system + q, max_tokens=8, temperature=0)
                for q in ("Where is Paris?", "Who wrote Hamlet?", "Where is Paris?")]
        m = server.metrics()
    shared = len(engine.tokenizer.encode(system)) - 1
    assert m["slipstream_prefix_cache_misses_total"] == 1 and m["slipstream_prefix_cache_hits_total"] == 2
    assert m["slipstream_prefix_cache_tokens_reused_total"] >= shared + len(engine.tokenizer.encode(
        system + "Where is Paris?")) - 2
    for q, out in zip(("Where is Paris?", "Who wrote Hamlet?", "Where is Paris?"), outs):
        want = engine.generate([engine.tokenizer.encode(system + q)], SamplingParams(max_tokens=8))[0]
        assert out.choices[0].text == want.text  # reused keys/values give the same tokens


def test_metrics_report_requests_queue_latency_throughput_and_caches(engines):
    with RunningServer(engines["tiny"], DeploymentSettings(), "tiny") as server:
        client = server.client()
        for _ in range(2):
            client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0,
                                      extra_body={"ignore_eos": True})
        list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=10, temperature=0.8, stream=True,
                                            extra_body={"ignore_eos": True}))
        r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = parse_metrics(r.text)
    assert m['slipstream_requests_total{endpoint="/v1/completions",status="200"}'] == 2
    assert m['slipstream_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 1
    assert m["slipstream_queue_depth"] == 0 and m["slipstream_running_requests"] == 0
    assert m["slipstream_time_to_first_token_seconds_count"] == 2  # the cache hit made no token
    assert m["slipstream_time_per_output_token_seconds_count"] == 2
    assert 0 < m["slipstream_time_per_output_token_seconds_sum"] / 2 < 1
    assert m["slipstream_output_tokens_total"] >= 21 and m["slipstream_output_tokens_per_second"] > 0
    assert m['slipstream_cache_hits_total{cache="exact"}'] == 1
    assert m['slipstream_cache_misses_total{cache="exact"}'] == 1  # the sampled chat request is not cacheable
    assert m['slipstream_cache_hits_total{cache="semantic"}'] == 0
    assert "slipstream_prefix_cache_hits_total" in m and m["slipstream_batch_size_count"] >= 20
    # one step per generated token of the 20-token requests at least, each a positive time
    assert m["slipstream_engine_step_seconds_count"] == m["slipstream_batch_size_count"]
    assert 0 < m["slipstream_engine_step_seconds_sum"] / m["slipstream_engine_step_seconds_count"] < 1


def test_prompt_lookup_serves_plain_greedy_answers_and_reports_its_drafts(engines):
    # a continuous batch whose greedy rows draft with prompt lookup, two clients at once through the openai
    # client: each answer equals the plain engine's, and /metrics counts the drafted and accepted tokens
    from concurrent.futures import ThreadPoolExecutor

    from slipstream.engines.options import TransformersOptions
    from slipstream.engines.transformers import TransformersEngine

    plain = engines["tiny"]
    engine = TransformersEngine(plain.path, options=TransformersOptions(threads=1, prompt_lookup=4))
    text = "The board approved the new plan for the northern region, and revenue rose. "
    prompts = [text * 3, "Summary: " + text * 2]
    with RunningServer(engine, DeploymentSettings(exact_cache={"enabled": False}), "tiny") as server:
        client = server.client()
        with ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(lambda p: client.completions.create(model="tiny", prompt=p, max_tokens=24,
                                                                     temperature=0), prompts))
        m = server.metrics()
    for prompt, out in zip(prompts, outs):
        want = plain.generate([plain.tokenizer.encode(prompt)], SamplingParams(max_tokens=24))[0]
        assert out.choices[0].text == want.text
    assert m["slipstream_prompt_lookup_draft_tokens_total"] > 0
    assert 0 <= m["slipstream_prompt_lookup_accepted_tokens_total"] <= m["slipstream_prompt_lookup_draft_tokens_total"]
