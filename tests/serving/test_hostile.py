"""Hostile bodies, written by hand, against the real server on the tiny model (context 256): each gets a 4xx
naming the field, or a bounded answer; none a 5xx; and a plain request is answered after all of them."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer, wait_for

OK = {"model": "tiny", "prompt": "Robert Boulter is an English actor who", "max_tokens": 3, "temperature": 0}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
NESTED = 100_000  # levels: far past what the JSON parser takes
C, CH = "/v1/completions", "/v1/chat/completions"

# (name, path, body as JSON or raw bytes, expected status, the field the error names: its param or in its message)
CASES = [
    ("prompt far beyond the context", C, {**OK, "prompt": "word " * 20_000}, 400, "prompt"),
    ("chat far beyond the context", CH, {**CHAT, "messages": [{"role": "user", "content": "x " * 5000}]}, 400,
     "messages"),
    ("token ids beyond the context", C, {**OK, "prompt": [5] * 10_000}, 400, "prompt"),
    ("a body of 3 MB", C, {**OK, "prompt": "a" * 3_000_000}, 413, "max_body_bytes"),
    ("deeply nested JSON", C, b"[" * NESTED + b"]" * NESTED, 400, "JSON"),
    ("deep, but parseable, in an open field", C, {**OK, "stream_options": json.loads('{"a":' * 400 + "1" + "}" * 400)},
     200, None),
    ("invalid UTF-8", C, b'{"model": "tiny", "prompt": "\xff\xfe\xc3"}', 400, "JSON"),
    ("an unpaired surrogate", C, b'{"model": "tiny", "prompt": "a\\ud800b"}', 400, "prompt"),
    ("a surrogate in a key", CH, b'{"model": "tiny", "messages": [{"role": "user", "\\udfff": 1}]}', 400,
     "messages.0"),
    ("not JSON", C, b"{nope", 400, "JSON"),
    ("JSON, not an object", C, b"[1, 2]", 400, "body"),
    ("max_tokens a string", C, {**OK, "max_tokens": "many"}, 400, "max_tokens"),
    ("prompt an object", C, {**OK, "prompt": {"text": "hi"}}, 400, "prompt"),
    ("messages a string", CH, {**CHAT, "messages": "hi"}, 400, "messages"),
    ("temperature a list", C, {**OK, "temperature": [1]}, 400, "temperature"),
    ("stream a word", C, {**OK, "stream": "yes"}, 400, "stream"),
    ("n a fraction", C, {**OK, "n": 1.5}, 400, "n"),
    ("an empty role", CH, {**CHAT, "messages": [{"role": "", "content": "hi"}]}, 400, "messages"),
    ("an unknown role", CH, {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ("a token id at the vocabulary's size", C, {**OK, "prompt": [512]}, 400, "prompt"),
    ("a negative token id", C, {**OK, "prompt": [3, -1]}, 400, "prompt"),
    ("a token id of 2^70", C, {**OK, "prompt": [2 ** 70]}, 400, "prompt"),
    ("max_tokens -1", C, {**OK, "max_tokens": -1}, 400, "max_tokens"),
    ("max_tokens 10^30", C, {**OK, "max_tokens": 10 ** 30}, 400, "max_tokens"),
    ("max_tokens 1e400 (infinite)", C, b'{"model": "tiny", "prompt": "a", "max_tokens": 1e400}', 400, "max_tokens"),
    ("temperature -1", C, {**OK, "temperature": -1}, 400, "temperature"),
    ("temperature 1e308", C, {**OK, "temperature": 1e308}, 400, "temperature"),
    ("temperature NaN", C, b'{"model": "tiny", "prompt": "a", "temperature": NaN}', 400, "temperature"),
    ("temperature 1e-300 (greedy)", C, {**OK, "temperature": 1e-300}, 200, None),
    ("top_p 5e-324 (greedy)", C, {**OK, "temperature": 1.0, "top_p": 5e-324}, 200, None),
    ("top_p 0", C, {**OK, "top_p": 0}, 400, "top_p"),
    ("top_p 2", C, {**OK, "top_p": 2}, 400, "top_p"),
    ("top_k -5", C, {**OK, "top_k": -5}, 400, "top_k"),
    ("top_k 10^30 (no limit)", C, {**OK, "temperature": 1.0, "top_k": 10 ** 30}, 200, None),
    ("n 0", C, {**OK, "n": 0}, 400, "n"),
    ("n 10^30", C, {**OK, "n": 10 ** 30}, 400, "n"),
    ("seed -2^63", C, {**OK, "temperature": 1.0, "seed": -2 ** 63}, 200, None),
    ("seed 2^63", C, {**OK, "seed": 2 ** 63}, 400, "seed"),
    ("min_tokens 10^9", C, {**OK, "min_tokens": 10 ** 9}, 400, "min_tokens"),
    ("logprobs 10^9", C, {**OK, "logprobs": 10 ** 9}, 400, "logprobs"),
    ("n times max_tokens beyond the limits", C, {**OK, "n": 4, "max_tokens": 1024}, 400, "max_tokens"),
    ("n beyond max_n", C, {**OK, "n": 5}, 400, "n"),
    ("10,000 prompts", C, {**OK, "prompt": ["hi"] * 10_000}, 400, "prompt"),
    ("a stop string of a megabyte", C, {**OK, "stop": ["x" * 1_000_000]}, 200, None),
    ("four stop strings of 400 KB", C, {**OK, "stop": ["y" * 400_000] * 4}, 200, None),
    ("five stop strings", C, {**OK, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("an empty prompt", C, {**OK, "prompt": ""}, 400, "prompt"),
    ("an empty message list", CH, {**CHAT, "messages": []}, 400, "messages"),
]


@pytest.fixture(scope="module")
def server(engines):
    with RunningServer(engines["tiny"], DeploymentSettings(exact_cache={"enabled": False}), "tiny") as running:
        yield running


@pytest.mark.parametrize("name,path,body,status,field", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_body_gets_a_clear_4xx_or_a_bounded_answer(server, name, path, body, status, field):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    start = time.perf_counter()
    reply = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)
    took = time.perf_counter() - start
    assert reply.status_code == status, reply.text[:500]
    assert took < 20, took  # bounded
    if status >= 400:
        error = reply.json()["error"]
        assert error["type"] and error["message"]
        assert error["param"] == field or field in error["message"], error
    else:
        assert reply.json()["usage"]["completion_tokens"] <= 3


def test_a_stream_the_client_never_reads_is_bounded_and_the_server_goes_on(server):
    """The client sends a streaming request for n=4 x 200 tokens and never reads a byte: the generation ends
    (the tokens wait in buffers), its slots free, and other clients are served meanwhile."""
    sched = server.state.scheduler
    body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 200, "n": 4, "ignore_eos": True,
                       "stream": True, "temperature": 1.0}).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it reads nothing: let buffers fill
        silent.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_for(lambda: sched.running, timeout=10)  # it started
        assert wait_for(lambda: not sched.running and not sched.waiting, timeout=60)  # and ended, unread
        reply = httpx.post(server.url + C, json=OK, timeout=30)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3


def test_still_serving_after_all_of_them_with_no_5xx(server):
    assert httpx.post(server.url + C, json=OK, timeout=30).status_code == 200
    assert httpx.post(server.url + CH, json=CHAT, timeout=30).status_code == 200
    metrics = server.metrics()
    assert not [k for k in metrics if k.startswith("slipstream_requests_total") and 'status="5' in k]
    assert metrics['slipstream_requests_total{endpoint="/v1/completions",status="400"}'] >= 25
