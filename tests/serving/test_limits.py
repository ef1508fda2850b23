"""The server's limits, each through the real server: the per-request deadline (deadline_s), queued tokens
(max_queued_tokens), the body size (max_body_bytes) and open connections (max_connections); and the settings
themselves, refused when out of range."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from slipstream.errors import InvalidConfig
from slipstream.serving.settings import DeploymentSettings
from tests.serving.fakes import FakeEngine
from tests.serving.running import RunningServer, Slowed, wait_for

PROMPT = "Robert Boulter is an English actor who"
LONG = {"model": "tiny", "prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True}


def events(lines) -> list:  # noqa: ANN001
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_a_request_past_its_deadline_is_cancelled_and_frees_its_slot(engines):
    slow = Slowed(engines["tiny"], delay=0.03)  # 200 tokens: 6 s; the deadline cuts it at 0.6 s
    settings = DeploymentSettings(deadline_s=0.6, exact_cache={"enabled": False})
    with RunningServer(slow, settings, "tiny") as server:
        sched = server.state.scheduler
        start = time.perf_counter()
        reply = httpx.post(server.url + "/v1/completions", json=LONG, timeout=30)
        took = time.perf_counter() - start
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "deadline_exceeded", reply.text
        assert "deadline of 0.6 s (deadline_s)" in reply.json()["error"]["message"]
        assert 0.5 < took < 3.0
        assert wait_for(lambda: not sched.running and slow.steppers[0].active == 0, timeout=5)
        # streaming: the tokens made in time, then an error event, then [DONE]
        with httpx.stream("POST", server.url + "/v1/completions", json={**LONG, "stream": True}, timeout=30) as r:
            assert r.status_code == 200
            data = events(r.iter_lines())
        assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "deadline_exceeded"
        assert any(json.loads(d).get("choices") for d in data[:-2])
        # the case: a chat request with no max_tokens may ask for all the room left; the deadline ends it
        chat = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "ignore_eos": True, "temperature": 0})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "deadline_exceeded"
        assert wait_for(lambda: not sched.running and slow.steppers[0].active == 0, timeout=5)
        metrics = server.metrics()
        assert metrics["slipstream_requests_expired_total"] == 3 and metrics["slipstream_running_requests"] == 0
        ok = httpx.post(server.url + "/v1/completions", json={**LONG, "max_tokens": 3}, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_the_queue_is_bounded_in_tokens_as_well_as_requests():
    """One request runs (max_batch_size 1); waiting ones count prompt + max_tokens against max_queued_tokens."""
    engine = FakeEngine(delay=0.02, max_context=512)
    settings = DeploymentSettings(max_batch_size=1, max_queue=10, max_queued_tokens=50,
                                  exact_cache={"enabled": False})
    body = {"model": "fake", "prompt": "ab", "ignore_eos": True, "stream": True}
    with RunningServer(engine, settings, "fake") as server:
        sched = server.state.scheduler
        with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
            # a lone request takes the free slot whatever its size (it never waits)
            with a.stream("POST", server.url + "/v1/completions", json={**body, "max_tokens": 200}) as running:
                assert wait_for(lambda: len(sched.running) == 1)
                with b.stream("POST", server.url + "/v1/completions", json={**body, "max_tokens": 28}) as waiting:
                    assert wait_for(lambda: sched.queue_depth == 1)  # 2 + 28 = 30 tokens queued
                    refused = httpx.post(server.url + "/v1/completions", timeout=30,
                                         json={**body, "stream": False, "max_tokens": 28})
                    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                    error = refused.json()["error"]
                    assert error["code"] == "queue_full" and "limit of 50 (max_queued_tokens)" in error["message"]
                    assert sched.queue_depth == 1  # refused at once, never queued
                    assert waiting.status_code == 200 and running.status_code == 200
        assert wait_for(lambda: not sched.running and not sched.waiting, timeout=10)
        metrics = server.metrics()
        assert metrics["slipstream_requests_rejected_total"] == 1
        assert metrics['slipstream_requests_total{endpoint="/v1/completions",status="429"}'] == 1
        small = httpx.post(server.url + "/v1/completions", json={**body, "stream": False, "max_tokens": 5}, timeout=30)
        assert small.status_code == 200


def test_a_body_above_max_body_bytes_is_refused_before_it_is_parsed():
    settings = DeploymentSettings(max_body_bytes=4096)
    with RunningServer(FakeEngine(max_context=4096), settings, "fake") as server:
        url = server.url + "/v1/completions"
        big = json.dumps({"model": "fake", "prompt": "a" * 5000}).encode()
        for reply in (httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=30),
                      # chunked: no Content-Length, counted as it arrives
                      httpx.post(url, content=iter([big[:3000], big[3000:]]), timeout=30,
                                 headers={"content-type": "application/json"})):
            assert reply.status_code == 413, reply.text
            error = reply.json()["error"]
            assert error["code"] == "request_too_large" and "limit of 4096 bytes (max_body_bytes)" in error["message"]
        fits = httpx.post(url, json={"model": "fake", "prompt": "a" * 3000, "max_tokens": 2}, timeout=30)
        assert fits.status_code == 200
        assert server.metrics()['slipstream_requests_total{endpoint="/v1/completions",status="413"}'] == 2


def test_connections_past_max_connections_get_503_and_the_rest_are_served():
    engine = FakeEngine(delay=0.05)
    settings = DeploymentSettings(max_connections=2, exact_cache={"enabled": False})
    with RunningServer(engine, settings, "fake") as server:
        held = []
        try:
            for _ in range(2):  # two open connections, each with a request in flight
                s = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
                body = json.dumps({"model": "fake", "prompt": "ab", "max_tokens": 100, "ignore_eos": True,
                                   "stream": True}).encode()
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                held.append(s)
            assert wait_for(lambda: len(server.state.scheduler.running) == 2)
            busy = httpx.get(server.url + "/health", timeout=10)
            assert busy.status_code == 503 and busy.text == "Service Unavailable"
        finally:
            for s in held:
                s.close()
        assert wait_for(lambda: httpx.get(server.url + "/health", timeout=10).status_code == 200, timeout=10)
        ok = httpx.post(server.url + "/v1/completions", json={"model": "fake", "prompt": "ab", "max_tokens": 2})
        assert ok.status_code == 200


def test_limit_settings_have_sane_defaults_and_refuse_nonsense():
    s = DeploymentSettings()
    assert (s.deadline_s, s.max_queued_tokens, s.max_body_bytes, s.max_connections, s.openapi) == (
        300.0, 131072, 2_000_000, 1024, True)
    assert DeploymentSettings(deadline_s=None).deadline_s is None  # no deadline, when asked for
    for overrides, message in (({"deadline_s": 0}, "deadline_s"), ({"max_queued_tokens": 0}, "max_queued_tokens"),
                               ({"max_body_bytes": 100}, "max_body_bytes"), ({"max_connections": 0}, "max_connections"),
                               ({"deadline": 5}, "deadline: Extra inputs are not permitted")):
        with pytest.raises(InvalidConfig, match="invalid deployment settings") as info:
            DeploymentSettings.load(None, overrides)
        assert message in str(info.value)
