"""The platform's REST API on a real server: import and optimize as jobs run by worker processes, watched
through server-sent events; models with their lineage; conflicts, unknown ids and bad bodies; cancel;
recovery of jobs a dead service left running."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest


class Platform:
    def __init__(self, store, **settings):
        import uvicorn

        from slipstream.platform.app import create_platform_app
        from slipstream.platform.settings import PlatformSettings
        from slipstream.serving.server import bind

        self.app = create_platform_app(store, PlatformSettings(**settings))
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "platform did not start"
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def platform(store):
    p = Platform(store, api_keys=["k"], max_workers=1)
    yield p
    p.close()


def _client(p: Platform) -> httpx.Client:
    return httpx.Client(base_url=p.url, headers={"Authorization": "Bearer k"}, timeout=60)


def _wait_job(c: httpx.Client, job_id: str, timeout_s: float = 180) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout_s} s")


def test_import_then_optimize_as_jobs_watched_by_events(platform, store, tiny_llama_dir):
    pytest.importorskip("ctranslate2")
    with _client(platform) as c:
        r = c.post("/api/v1/jobs", json={"kind": "import", "spec": {"source": str(tiny_llama_dir), "name": "tiny"}})
        assert r.status_code == 202 and r.json()["state"] == "queued"
        job = _wait_job(c, r.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["result"] == {"variant": "tiny"} and job["started"] and job["finished"]

        # GALE's pair, mapped onto CTranslate2 int8
        r = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {
            "model": "tiny", "optimizationType": "CTranslate2", "quantizationType": "int8", "name": "tiny-ct2"}})
        assert r.status_code == 202
        job_id = r.json()["id"]
        events = []
        with c.stream("GET", f"/api/v1/jobs/{job_id}/events") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            for line in s.iter_lines():
                if line.startswith("data: ") and line != "data: {}":
                    events.append(json.loads(line[6:]))
        states = [e["state"] for e in events if e["type"] == "state"]
        assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        assert any(e["type"] == "progress" for e in events)
        assert c.get(f"/api/v1/jobs/{job_id}").json()["result"]["variant"] == "tiny-ct2"

        models = {m["name"]: m for m in c.get("/api/v1/models").json()["data"]}
        assert set(models) == {"tiny", "tiny-ct2"}
        shown = c.get("/api/v1/models/tiny-ct2").json()
        assert shown["lineage"] == ["tiny"] and shown["technique"]["quantization"] == "int8"
        assert c.get("/api/v1/models/tiny").json()["children"] == ["tiny-ct2"]
        assert c.get(f"/api/v1/jobs/{job_id}/log").status_code == 200

        r = c.delete("/api/v1/models/tiny")
        assert r.status_code == 409 and "tiny-ct2" in r.json()["error"]["message"]
        assert c.delete("/api/v1/models/tiny-ct2").status_code == 200
        assert store.exists("tiny") and not store.exists("tiny-ct2")


def test_bad_input_unknown_ids_and_keys(platform):
    with _client(platform) as c:
        assert httpx.get(platform.url + "/api/v1/models").status_code == 401
        assert httpx.get(platform.url + "/health").status_code == 200
        r = c.post("/api/v1/jobs", json={"kind": "optimise", "spec": {}})
        assert r.status_code == 400 and "unknown job kind 'optimise'" in r.json()["error"]["message"]
        r = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {"model": "m", "technik": "x"}})
        assert r.status_code == 400 and "technik" in r.json()["error"]["message"]
        r = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {"model": "m", "optimizationType": "vLLM",
                                                                      "quantizationType": "int3"}})
        assert r.status_code == 400 and "int3" in r.json()["error"]["message"]
        r = c.post("/api/v1/jobs", json={"spec": {}})
        assert r.status_code == 400 and "kind" in r.json()["error"]["message"]
        assert c.get("/api/v1/jobs/nope").status_code == 404
        assert c.get("/api/v1/models/nope").json()["error"]["code"] == "model_not_found"
        assert c.get("/api/v1/openapi.json").json()["info"]["title"] == "slipstream platform"


def test_a_failed_job_says_why_and_a_cancel_ends_a_running_one(platform, store, tiny_llama_dir):
    from slipstream.models.intake import import_model

    import_model(str(tiny_llama_dir), "tiny", store=store)
    with _client(platform) as c:
        r = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {"model": "no-such", "technique": "cast"}})
        job = _wait_job(c, r.json()["id"])
        assert job["state"] == "failed" and "no-such" in job["error"]
        # a benchmark long enough to be cancelled while it runs
        r = c.post("/api/v1/jobs", json={"kind": "bench", "spec": {"model": "tiny", "batch_sizes": [1, 2, 4, 8]}})
        job_id = r.json()["id"]
        end = time.monotonic() + 60
        # running, with its worker's pid (the runner records the pid just after the state)
        while (seen := c.get(f"/api/v1/jobs/{job_id}").json())["state"] != "running" or seen["pid"] is None:
            assert time.monotonic() < end
            time.sleep(0.1)
        pid = seen["pid"]
        r = c.post(f"/api/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
        end = time.monotonic() + 30
        while platform.app.state.platform.jobs.procs.get(job_id) is not None:
            assert time.monotonic() < end, "the worker outlived its cancel"
            time.sleep(0.1)
        import os

        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert c.get(f"/api/v1/jobs/{job_id}").json()["state"] == "cancelled"


def test_jobs_a_dead_service_left_running_are_resumed_or_failed_never_lost(store):
    from slipstream.platform.jobs import Runner

    registry = store.registry
    optimize = registry.add_job("optimize", {"model": "tiny", "technique": "cast"})
    bench = registry.add_job("bench", {"model": "tiny"})
    for job in (optimize, bench):
        registry.update_job(job.id, state="running", pid=2**22 + 12345, attempts=1)  # a pid nobody has
    touched = Runner(store).recover()
    assert set(touched) == {optimize.id, bench.id}
    assert registry.get_job(optimize.id).state == "queued"
    failed = registry.get_job(bench.id)
    assert failed.state == "failed" and "do not resume" in failed.error


def test_a_recipe_of_steps_as_one_job(platform, store, tiny_llama_dir):
    pytest.importorskip("ctranslate2")
    from slipstream.models.intake import import_model

    import_model(str(tiny_llama_dir), "tiny", store=store)
    steps = [{"technique": "cast", "dtype": "bfloat16"}, {"technique": "ctranslate2", "quantization": "int8"}]
    with _client(platform) as c:
        for spec, named in (({"model": "tiny", "steps": [{"technique": "nope"}]}, "steps[0]"),
                            ({"model": "tiny", "steps": [{"dtype": "bfloat16"}]}, "steps[0] needs a technique"),
                            ({"model": "tiny", "steps": [{"technique": "cast", "colour": 1}]}, "colour"),
                            ({"model": "tiny", "steps": steps, "technique": "cast"}, "not both")):
            r = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": spec})
            assert r.status_code == 400 and named in r.json()["error"]["message"], r.json()
        job = _wait_job(c, c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {"model": "tiny",
                                                                                      "steps": steps}}).json()["id"])
        assert job["state"] == "succeeded", job["error"]
        assert job["result"]["variant"] == "tiny-bf16-ct2-int8"
        assert c.get("/api/v1/models/tiny-bf16-ct2-int8").json()["lineage"] == ["tiny-bf16", "tiny"]


def test_a_model_a_queued_job_uses_cannot_be_deleted(platform, store, tiny_llama_dir):
    from slipstream.models.intake import import_model

    import_model(str(tiny_llama_dir), "tiny", store=store)
    platform.app.state.platform.jobs.stop()  # no worker takes the job: it stays queued
    with _client(platform) as c:
        job = c.post("/api/v1/jobs", json={"kind": "bench", "spec": {"model": "tiny"}}).json()
        r = c.delete("/api/v1/models/tiny")
        assert r.status_code == 409 and f"job {job['id']} uses it" in r.json()["error"]["message"]
        assert c.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        assert c.delete("/api/v1/models/tiny").status_code == 200
