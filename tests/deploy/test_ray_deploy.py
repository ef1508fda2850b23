"""Deployments on a real local Ray Serve: two models behind one endpoint, backpressure, autoscaling 1 -> 2 -> 1,
a rolling update and a killed replica, with every request accounted for. Bounded in requests and time."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest



def _spec(port: int, models: list[dict], **extra) -> "DeploySpec":  # noqa: F821
    from slipstream.deploy.spec import DeploySpec

    return DeploySpec.parse({"port": port, "grace_period_s": 30, "models": models, **extra})


def _small(**scaling) -> dict:
    return {"cpus_per_replica": 0.5, "threads_per_replica": 1, **scaling}


def _running(model: str) -> int:
    from ray import serve

    from slipstream.deploy.ray_app import app_name

    app = serve.status().applications.get(app_name(model))
    dep = app.deployments.get("model") if app else None
    return dict(dep.replica_states).get("RUNNING", 0) if dep else 0


def _wait(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _stream_once(client: httpx.Client, model: str, max_tokens: int) -> str:
    """One streamed completion; 'ok' only if it ended with [DONE] and no error event."""
    body = {"model": model, "prompt": "the river", "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    try:
        with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                r.read()
                return str(r.status_code)
            tokens, done = 0, False
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                if "error" in json.loads(data):
                    return "error-event"
                tokens += 1
            return "ok" if done and tokens else "truncated"
    except httpx.HTTPError as exc:
        return f"connection:{exc.__class__.__name__}"


class Load:
    """``workers`` clients streaming completions back to back until stopped; every outcome counted."""

    def __init__(self, url: str, model: str, workers: int, max_tokens: int = 48, limit: int = 2000):
        self.url, self.model, self.max_tokens, self.limit = url, model, max_tokens, limit
        self.outcomes: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set() and sum(self.outcomes.values()) < self.limit:
                outcome = _stream_once(client, self.model, self.max_tokens)
                with self._lock:
                    self.outcomes[outcome] += 1

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(90)
        assert not any(t.is_alive() for t in self.threads), "a client hung"


def test_two_models_behind_one_endpoint_with_the_openai_client(ray_cluster, deploy_store):
    from openai import AuthenticationError, NotFoundError, OpenAI

    from slipstream.deploy import ray_app

    port = ray_cluster
    spec = _spec(port, [{"name": "chat-a", "variant": "tiny", "scaling": _small()},
                        {"name": "fast-b", "variant": "tiny-ct2", "scaling": _small(),
                         "defaults": {"temperature": 0.0}}], api_keys=["s3cret"])
    ray_app.deploy(spec, deploy_store)
    url = f"http://127.0.0.1:{port}"
    client = OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0, timeout=60)

    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"chat-a", "fast-b"}
    assert models["fast-b"].model_extra["root"] == "tiny-ct2"
    a = client.completions.create(model="chat-a", prompt="the river", max_tokens=6, extra_body={"ignore_eos": True})
    assert a.model == "chat-a" and a.usage.completion_tokens == 6
    b = client.chat.completions.create(model="fast-b", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       extra_body={"ignore_eos": True})
    assert b.model == "fast-b" and b.usage.completion_tokens == 5
    # the deployment's own defaults apply per model: fast-b is greedy, so the same question gets the same answer
    again = client.chat.completions.create(model="fast-b", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5, extra_body={"ignore_eos": True})
    assert again.choices[0].message.content == b.choices[0].message.content
    chunks = list(client.chat.completions.create(model="fast-b", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=5, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == b.choices[0].message.content

    with pytest.raises(NotFoundError) as exc:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert exc.value.body["code"] == "model_not_found" and "chat-a, fast-b" in exc.value.body["message"]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{url}/health").status_code == 200  # the one open route
    assert httpx.post(f"{url}/v1/completions", content=b"{not json",
                      headers={"Authorization": "Bearer s3cret"}).status_code == 400
    huge = httpx.post(f"{url}/v1/completions", headers={"Authorization": "Bearer s3cret"},
                      json={"model": "chat-a", "prompt": "x" * 3_000_000})
    assert huge.status_code == 413 and huge.json()["error"]["type"]  # the endpoint's body limit, in OpenAI's shape

    def scraped() -> str:
        return httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}).text

    def served() -> list[str]:  # replicas send their metrics every second: wait for the latest
        return [line for line in scraped().splitlines() if line.startswith("slipstream_requests_total{")]

    _wait(lambda: all(any(f'model="{m}"' in s for s in served()) for m in ("chat-a", "fast-b")), 20,
          "both models' request counters")
    page = scraped()
    served = [line for line in page.splitlines() if line.startswith("slipstream_requests_total{")]
    assert any('model="chat-a"' in s and 'replica="' in s and 'status="200"' in s for s in served)
    assert any('model="fast-b"' in s and 'endpoint="/v1/chat/completions"' in s for s in served)
    assert 'slipstream_replicas{model="chat-a"} 1.0' in page
    assert 'slipstream_endpoint_requests_total{endpoint="/v1/completions",model="gpt-4"' not in page
    assert "s3cret" not in page


def test_full_replicas_answer_429_with_retry_after_at_once(ray_cluster, deploy_store):
    from slipstream.deploy import ray_app

    port = ray_cluster
    spec = _spec(port, [{"name": "slow", "variant": "wide", "max_batch_size": 1,
                         "scaling": _small(max_ongoing_requests=1, max_queued_requests=1)}])
    ray_app.deploy(spec, deploy_store)
    url = f"http://127.0.0.1:{port}"
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()

    def one() -> None:
        t = time.perf_counter()
        with httpx.Client(base_url=url, timeout=120) as c:
            r = c.post("/v1/completions", json={"model": "slow", "prompt": "the river", "max_tokens": 200,
                                                "ignore_eos": True})
        with lock:
            results.append((r.status_code, time.perf_counter() - t, r.headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 6
    refused = [r for r in results if r[0] == 429]
    served = [r for r in results if r[0] == 200]
    assert len(served) + len(refused) == 6, results
    assert 1 <= len(served) <= 3 and refused, results  # one running and at most one queued (plus luck)
    assert all(r[2] == "1" for r in refused)
    slowest_refusal, fastest_answer = max(r[1] for r in refused), min(r[1] for r in served)
    assert slowest_refusal < fastest_answer, results  # refused at once, not after waiting


def test_autoscaling_and_a_rolling_update_lose_no_request(ray_cluster, deploy_store):
    from slipstream.deploy import ray_app

    port = ray_cluster
    auto = _small(min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=0,
                  downscale_delay_s=1, metrics_interval_s=0.1, look_back_period_s=0.5, max_ongoing_requests=4)
    model = {"name": "auto", "variant": "tiny-ct2", "scaling": auto}
    ray_app.deploy(_spec(port, [model]), deploy_store)
    url = f"http://127.0.0.1:{port}"
    assert _running("auto") == 1
    with Load(url, "auto", workers=4) as load:
        _wait(lambda: _running("auto") == 2, 90, "a second replica under load")
        # rolling update under load: the model now points at another variant
        ray_app.deploy(_spec(port, [{**model, "variant": "tiny-ct2-int8"}]), deploy_store)
        roots = lambda: {m["root"] for m in httpx.get(f"{url}/v1/models").json()["data"]}  # noqa: E731
        _wait(lambda: roots() == {"tiny-ct2-int8"}, 60, "the new variant to answer")
        time.sleep(2)  # a little more load on the new replicas
    # one client left: requests in flight fall to about one, below two replicas' target, so one replica goes
    with Load(url, "auto", workers=1) as trickle:
        _wait(lambda: _running("auto") == 1, 90, "scale down to 1 replica as load falls")
        time.sleep(1)
    for outcomes in (load.outcomes, trickle.outcomes):  # no 5xx, no error event, no lost or cut stream
        assert outcomes["ok"] >= 5 and set(outcomes) == {"ok"}, outcomes
    assert load.outcomes["ok"] >= 20


def test_a_killed_replica_ends_its_stream_and_is_replaced(ray_cluster, deploy_store):
    import ray

    from slipstream.deploy import ray_app

    port = ray_cluster
    ray_app.deploy(_spec(port, [{"name": "doomed", "variant": "wide", "scaling": _small()}]), deploy_store)
    url = f"http://127.0.0.1:{port}"
    prefix = f"SERVE_REPLICA::{ray_app.app_name('doomed')}#"
    (victim,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    events: list[str] = []
    t0 = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as c:
        body = {"model": "doomed", "prompt": "the river", "max_tokens": 240, "stream": True, "ignore_eos": True}
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 3:
                    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    assert time.monotonic() - t0 < 60
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "replica_died", events[-2]
    assert len(events) < 240  # it did not finish: it was cut and said so

    def answers() -> bool:
        r = httpx.post(f"{url}/v1/completions", json={"model": "doomed", "prompt": "x", "max_tokens": 2}, timeout=30)
        return r.status_code == 200

    _wait(answers, 90, "a replacement replica")
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    assert victim not in names and len(names) == 1
