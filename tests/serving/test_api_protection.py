"""Protection and deployment settings through the real server: API keys, a full queue, disconnects,
requests that ask too much, and per-deployment sampling defaults and limits."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer, Slowed, wait_for

PROMPT = "Robert Boulter is an English actor who"


def test_api_keys_guard_every_route_but_health(engines):
    settings = DeploymentSettings(api_keys=["k-one", "k-two"])
    with RunningServer(engines["tiny"], settings, "tiny") as server:
        assert httpx.get(server.url + "/health").status_code == 200
        for path in ("/v1/models", "/metrics"):
            missing = httpx.get(server.url + path)
            assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
            assert httpx.get(server.url + path, headers={"Authorization": "Bearer k-two"}).status_code == 200
        raw = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert raw.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="wrong").completions.create(model="tiny", prompt="hi", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="wrong").chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        out = server.client(api_key="k-one").completions.create(model="tiny", prompt="hi", max_tokens=3,
                                                                temperature=0)
        assert out.usage.completion_tokens >= 1


def test_requests_that_ask_too_much_get_a_clear_400(engines):
    engine = engines["tiny"]  # context: 256 tokens
    settings = DeploymentSettings(limits={"max_tokens": 64, "max_n": 2, "max_temperature": 1.5, "max_stop": 2})
    with RunningServer(engine, settings, "tiny") as server:
        def post(body: dict, path: str = "/v1/completions") -> httpx.Response:
            return httpx.post(server.url + path, json={"model": "tiny", **body}, timeout=30)

        long_prompt = [5] * 300
        r = post({"prompt": long_prompt, "max_tokens": 1})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and "maximum context length is 256" in err["message"]
        assert "300 tokens" in err["message"]
        r = post({"prompt": [5] * 240, "max_tokens": 20})  # fits, but not with 20 more tokens
        assert r.status_code == 400 and "260 tokens (240 in the prompt, 20 for the completion)" in r.text
        r = post({"prompt": PROMPT, "max_tokens": 65})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        assert "above this deployment's limit of 64" in r.json()["error"]["message"]
        r = post({"prompt": PROMPT, "n": 3})
        assert r.status_code == 400 and "limit of 2" in r.json()["error"]["message"]
        r = post({"prompt": PROMPT, "temperature": 1.9})
        assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
        r = post({"prompt": PROMPT, "stop": ["a", "b", "c"]})
        assert r.status_code == 400 and "at most 2 stop sequences" in r.json()["error"]["message"]
        r = post({"prompt": PROMPT, "max_tokens": -1})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
        r = post({"prompt": PROMPT, "bogus_field": 1})
        assert r.status_code == 400 and "bogus_field" in r.json()["error"]["message"]
        r = post({"model": "other", "prompt": PROMPT})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = post({"messages": [{"role": "user", "content": "x " * 300}], "max_tokens": 4}, "/v1/chat/completions")
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            server.client().completions.create(model="tiny", prompt=long_prompt, max_tokens=1)
        metrics = server.metrics()
        assert metrics['slipstream_requests_total{endpoint="/v1/completions",status="400"}'] >= 9
        assert not any(k.endswith('status="500"}') for k in metrics)
        # still serving after all of that
        assert server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=3).usage.completion_tokens


def test_deployment_defaults_apply_and_requests_override_them(engines):
    engine = engines["tiny"]
    ids = engine.tokenizer.encode(PROMPT)
    greedy = engine.generate([ids], SamplingParams(max_tokens=24, ignore_eos=True))[0]
    stop = greedy.text[len(greedy.text) // 2: len(greedy.text) // 2 + 2]
    settings = DeploymentSettings(defaults={"temperature": 0.0, "max_tokens": 6}, limits={"max_tokens": 24})
    with RunningServer(engine, settings, "tiny") as server:
        client = server.client()
        out = client.completions.create(model="tiny", prompt=PROMPT, extra_body={"ignore_eos": True})
        # the deployment's defaults: greedy and 6 tokens
        assert out.usage.completion_tokens == 6 and out.choices[0].finish_reason == "length"
        assert greedy.text.startswith(out.choices[0].text)
        longer = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, extra_body={"ignore_eos": True})
        assert longer.choices[0].text == greedy.text
        sampled = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=1.5, seed=3,
                                            n=2, extra_body={"ignore_eos": True})
        assert any(c.text != greedy.text for c in sampled.choices)  # the request's temperature won
        # chat: the default max_tokens there is the room left, capped by the limit
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                              extra_body={"ignore_eos": True})
        assert chat.usage.completion_tokens == 24
    with RunningServer(engine, DeploymentSettings(defaults={"temperature": 0.0, "stop": [stop]}), "tiny") as server:
        cut = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=24)
        assert cut.choices[0].finish_reason == "stop" and greedy.text.startswith(cut.choices[0].text)
        assert stop not in cut.choices[0].text
        whole = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=24, stop=[],
                                                   extra_body={"ignore_eos": True})
        assert whole.choices[0].text == greedy.text  # an explicit empty list turns the default stop off


def test_full_queue_is_refused_at_once_and_disconnects_free_their_slots(engines):
    slow = Slowed(engines["tiny"], delay=0.02)
    settings = DeploymentSettings(max_batch_size=1, max_queue=1, exact_cache={"enabled": False})
    long = {"model": "tiny", "prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with RunningServer(slow, settings, "tiny") as server:
        sched = server.state.scheduler
        with httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
            with first.stream("POST", server.url + "/v1/completions", json=long) as running:
                lines = running.iter_lines()
                assert next(line for line in lines if line.startswith("data:"))  # it is generating
                with second.stream("POST", server.url + "/v1/completions", json=long) as waiting:
                    assert wait_for(lambda: sched.queue_depth == 1)
                    start = time.perf_counter()
                    refused = httpx.post(server.url + "/v1/completions", json={**long, "stream": False}, timeout=30)
                    took = time.perf_counter() - start
                    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                    assert refused.json()["error"]["code"] == "queue_full"
                    assert took < 2.0  # not after the 400 tokens ahead of it (4 s at this speed)
                    with pytest.raises(openai.RateLimitError):
                        server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
                    # the waiting client hangs up: its place in the queue goes at once
                # the running client hangs up after a few tokens: its batch slot is freed
        assert wait_for(lambda: not sched.running and not sched.waiting, timeout=10)
        assert slow.steppers[0].active == 0
        produced = sum(len(s) for s in slow.steps)
        assert produced < 100  # the 200-token stream stopped early; the waiting one never ran
        m = server.metrics()
        assert m["slipstream_requests_rejected_total"] == 2 and m["slipstream_requests_cancelled_total"] == 2
        assert m['slipstream_requests_total{endpoint="/v1/completions",status="429"}'] == 2

        # a non-streaming client that gives up (timeout) frees its slot too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json={**long, "stream": False}, timeout=0.5)
        assert wait_for(lambda: not sched.running, timeout=10)
        assert server.metrics()["slipstream_requests_cancelled_total"] == 3
        assert sum(len(s) for s in slow.steps) - produced < 100
        # and the freed slot serves the next request right away
        start = time.perf_counter()
        ok = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=0)
        assert ok.usage.completion_tokens >= 1 and time.perf_counter() - start < 3.0
