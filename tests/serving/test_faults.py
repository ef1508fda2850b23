"""Faults the server survives: a client gone mid-stream frees its slot (running back to 0 in /metrics), and an
engine error raised in one step fails only the requests in that step, each with an error event, while the
server goes on serving (the queued request runs next, and new ones are answered)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.scheduler import DynamicScheduler
from slipstream.serving.settings import DeploymentSettings
from tests.serving.fakes import FakeEngine
from tests.serving.running import RunningServer, Slowed, wait_for

STREAM = {"prompt": "ab", "max_tokens": 200, "ignore_eos": True, "stream": True, "temperature": 0}


def events(lines) -> list[Any]:  # noqa: ANN001
    return [d if d == "[DONE]" else json.loads(d) for d in (x[6:] for x in lines if x.startswith("data: "))]


@pytest.mark.parametrize("kind", ["continuous", "dynamic"])
def test_a_client_gone_mid_stream_frees_its_slot(engines, kind):
    if kind == "continuous":  # the tiny model, one step every 20 ms
        engine, name, settings = Slowed(engines["tiny"], delay=0.02), "tiny", {}
    else:  # whole batches with tokens streamed as made (CTranslate2's way), on the fake engine
        engine, name, settings = FakeEngine(delay=0.02, max_context=512), "fake", {"batching": "dynamic"}
    with RunningServer(engine, DeploymentSettings(exact_cache={"enabled": False}, **settings), name) as server:
        with httpx.stream("POST", server.url + "/v1/completions", json={**STREAM, "model": name}, timeout=30) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: an iterator dropped half way closes the response
            got = [line for line in (next(lines) for _ in range(6)) if line.startswith("data:")]
            assert len(got) == 3 and server.metrics()["slipstream_running_requests"] == 1
        # the client has hung up after 3 of 200 tokens
        assert wait_for(lambda: server.metrics()["slipstream_running_requests"] == 0, timeout=10)
        metrics = server.metrics()
        assert metrics["slipstream_requests_cancelled_total"] == 1 and metrics["slipstream_queue_depth"] == 0
        assert metrics["slipstream_output_tokens_total"] < 100
        ok = httpx.post(server.url + "/v1/completions", json={**STREAM, "model": name, "stream": False,
                                                               "max_tokens": 4}, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4


class FailingStepper:
    """The fake engine's stepper, but the step after ``arm()`` raises, as an engine bug or a lost device would."""

    def __init__(self, inner: Any):
        self.inner, self.armed, self.failed_with = inner, threading.Event(), None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def arm(self) -> None:
        self.armed.set()

    def step(self) -> Any:
        if self.armed.is_set():
            self.armed.clear()
            self.failed_with = sorted(self.inner.seqs) + [p[0] for p in self.inner.pending]
            raise RuntimeError("injected failure in this step")
        return self.inner.step()


class FailingEngine(FakeEngine):
    def stepper(self, **options: Any) -> FailingStepper:
        self.failing = FailingStepper(super().stepper(**options))
        return self.failing


def test_an_engine_error_fails_only_the_requests_in_that_step():
    engine = FailingEngine(delay=0.02, max_context=512)
    settings = DeploymentSettings(max_batch_size=2, exact_cache={"enabled": False})
    with RunningServer(engine, settings, "fake") as server:
        sched, url = server.state.scheduler, server.url + "/v1/completions"
        with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b, httpx.Client(timeout=30) as c:
            with a.stream("POST", url, json={**STREAM, "model": "fake"}) as ra, \
                 b.stream("POST", url, json={**STREAM, "model": "fake"}) as rb:
                assert wait_for(lambda: len(sched.running) == 2)  # both in the batch
                with c.stream("POST", url, json={**STREAM, "model": "fake", "max_tokens": 5}) as rc:
                    assert wait_for(lambda: sched.queue_depth == 1)  # c waits for a slot
                    engine.failing.arm()
                    failed = [events(ra.iter_lines()), events(rb.iter_lines())]
                    waited = events(rc.iter_lines())
        assert len(engine.failing.failed_with) == 2  # the step held a and b only
        for stream in failed:  # each failed request: its tokens so far, one error event, then [DONE]
            assert stream[-1] == "[DONE]" and "injected failure" in stream[-2]["error"]["message"]
            assert stream[-2]["error"]["type"] == "server_error" and all("choices" in e for e in stream[:-2])
        # the request that was queued ran next, whole
        assert waited[-1] == "[DONE]" and not any("error" in e for e in waited[:-1])
        assert "".join(e["choices"][0]["text"] for e in waited[:-1]) == "cdefg"
        assert waited[-2]["choices"][0]["finish_reason"] == "length"
        assert engine.failing.inner.active == 0  # the failed sequences left the engine's batch
        assert server.metrics()["slipstream_running_requests"] == 0
        after = httpx.post(url, json={**STREAM, "model": "fake", "stream": False, "max_tokens": 3}, timeout=30)
        assert after.status_code == 200 and after.json()["choices"][0]["text"] == "cde"
        # a request that does not stream, caught in a failing step, gets a 500 in OpenAI's shape
        with httpx.Client(timeout=30) as d:
            reply: dict = {}
            t = threading.Thread(target=lambda: reply.update(r=d.post(url, json={**STREAM, "model": "fake",
                                                                                "stream": False})))
            t.start()
            assert wait_for(lambda: len(sched.running) == 1)
            engine.failing.arm()
            t.join(30)
        assert reply["r"].status_code == 500 and "injected failure" in reply["r"].json()["error"]["message"]
        assert httpx.post(url, json={"model": "fake", "prompt": "ab", "max_tokens": 2}).status_code == 200


def test_a_failed_dynamic_batch_fails_its_rows_only_and_the_next_batch_runs():
    class Engine(FakeEngine):
        def generate_rows(self, prompts, params, on_token):  # noqa: ANN001, ANN201
            if any(p[0] == 25 for p in prompts):  # a prompt starting with 'z' breaks the batch it is in
                raise RuntimeError("injected failure")
            return super().generate_rows(prompts, params, on_token)

    async def main() -> list:
        sched = DynamicScheduler(Engine(delay=0.01), window_s=0.05, max_batch_size=2, max_queue=4).start()
        try:
            p = SamplingParams(max_tokens=3)
            # two arrive within the window (one batch, broken by 'z'); the third after it is taken
            bad, partner = sched.submit([25, 0], p), sched.submit([0], p)
            await asyncio.sleep(0.1)
            later = sched.submit([1], p)
            return [await t.next_event() for t in (bad, partner)] + [await later.next_event()]
        finally:
            sched.stop()

    bad, partner, later = asyncio.run(asyncio.wait_for(main(), 30))
    assert bad == partner == ("error", "engine error: RuntimeError: injected failure")
    assert later == ("token", 2)
