"""Deployments through the platform's API on real servers: a spec (or GALE's body) becomes a `slipstream serve`
process or a `slipstream deploy` on Ray Serve, watched from deploying to ready; the chat route and the figures
talk to it; an update switches its variant; a delete stops it; a platform that restarts finds it serving."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.platform.test_api import Platform, _client


def _wait_state(c: httpx.Client, dep_id: str, states: tuple[str, ...], timeout_s: float = 180) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        d = c.get(f"/api/v1/deployments/{dep_id}").json()
        if d["state"] in states:
            return d
        time.sleep(0.3)
    raise AssertionError(f"deployment {dep_id} still {d['state']} after {timeout_s} s: {d['error']}")


@pytest.fixture
def tiny_store(store, tiny_chat_dir):
    from slipstream.models.intake import import_model

    import_model(str(tiny_chat_dir), "tiny", store=store)
    return store


def _spec(variant: str, **model) -> dict:
    return {"api_keys": ["dep-key"], "models": [{"name": "chat", "variant": variant,
                                                 "defaults": {"max_tokens": 8, "temperature": 0}, **model}]}


def test_process_deployment_lifecycle(tiny_store):
    from slipstream.pipeline import optimize

    optimize("tiny", "cast", {"dtype": "bfloat16"}, name="tiny-bf16", store=tiny_store)
    p = Platform(tiny_store, api_keys=["k"])
    dep_id = None
    try:
        with _client(p) as c:
            r = c.post("/api/v1/deployments", json={"spec": _spec("tiny")})
            assert r.status_code == 202, r.text
            dep = r.json()
            dep_id = dep["id"]
            assert dep["state"] == "deploying" and dep["runtime"] == "process" and dep["models"] == ["chat"]
            assert dep["spec"]["api_keys"] == "1 configured"  # never given back
            dep = _wait_state(c, dep_id, ("ready", "failed"))
            assert dep["state"] == "ready", dep["error"]
            assert dep["url"].startswith("http://127.0.0.1:") and dep["url"].endswith("/v1")

            # the endpoint itself, with the spec's key, and through the platform's chat route
            models = httpx.get(dep["url"] + "/models", headers={"Authorization": "Bearer dep-key"}).json()
            assert [m["id"] for m in models["data"]] == ["chat"]
            assert httpx.get(dep["url"] + "/models").status_code == 401
            answer = c.post(f"/api/v1/deployments/{dep_id}/chat",
                            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
            assert answer.status_code == 200, answer.text
            assert answer.json()["usage"]["completion_tokens"] >= 1
            figures = c.get(f"/api/v1/deployments/{dep_id}/figures").json()
            assert figures["requests"] >= 1 and figures["output_tokens"] >= 1 and figures["state"] == "ready"

            # the served variant cannot be deleted; the list shows the deployment
            assert c.delete("/api/v1/models/tiny-bf16").status_code == 200  # not deployed: deleted
            optimize("tiny", "cast", {"dtype": "bfloat16"}, name="tiny-bf16", store=tiny_store)
            refused = c.delete("/api/v1/models/tiny")
            assert refused.status_code == 409 and dep_id in refused.json()["error"]["message"]
            listed = c.get("/api/v1/deployments").json()["data"]
            assert [d["id"] for d in listed] == [dep_id]

            # update: the same endpoint now serves the other variant, from a new process
            before = dep["pid"]
            keyless = {k: v for k, v in _spec("tiny-bf16").items() if k != "api_keys"}  # as GET shows it
            r = c.put(f"/api/v1/deployments/{dep_id}", json={"spec": keyless})
            assert r.status_code == 202, r.text
            dep = _wait_state(c, dep_id, ("ready", "failed"))
            assert dep["state"] == "ready", dep["error"]
            assert dep["pid"] != before and dep["spec"]["models"][0]["variant"] == "tiny-bf16"
            assert "tiny-bf16" in open(f"/proc/{dep['pid']}/cmdline").read().split("\0")
            assert httpx.get(dep["url"] + "/models").status_code == 401  # the keys it had, kept
            assert dep["spec"]["api_keys"] == "1 configured"
            assert c.post(f"/api/v1/deployments/{dep_id}/chat",
                          json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200

            # delete: stopping, then stopped; the process is gone and the variant can go
            pid = dep["pid"]
            assert c.delete(f"/api/v1/deployments/{dep_id}").json()["state"] in ("stopping", "stopped")
            dep = _wait_state(c, dep_id, ("stopped",), 60)
            assert dep["pid"] is None
            with pytest.raises(ProcessLookupError):
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            assert c.delete(f"/api/v1/deployments/{dep_id}").status_code == 409
            assert c.post(f"/api/v1/deployments/{dep_id}/chat", json={"messages": []}).status_code == 409
            dep_id = None
    finally:
        if dep_id:
            _client(p).delete(f"/api/v1/deployments/{dep_id}")
        p.close()


def test_bad_deployments_are_refused_naming_the_field(tiny_store):
    p = Platform(tiny_store, api_keys=["k"])
    try:
        with _client(p) as c:
            cases = [
                ({"spec": _spec("nope")}, "nope"),
                ({"spec": {"models": [{"name": "a", "variant": "tiny", "colour": 1}]}}, "colour"),
                ({"spec": _spec("tiny"), "runtime": "kubernetes"}, "runtime"),
                ({"spec": {"host": "0.0.0.0", "models": [{"name": "a", "variant": "tiny"}]}}, "API key"),
                ({"spec": {"models": [{"name": "a", "variant": "tiny"}, {"name": "b", "variant": "tiny"}]}},
                 "runtime ray"),
                ({"spec": {"modelId": "tiny", "scalingParameters": {"maxBatchSize": 999}}}, "maxBatchSize"),
                ({"spec": _spec("tiny"), "replicas": 3}, "replicas"),
            ]
            for body, named in cases:
                r = c.post("/api/v1/deployments", json=body)
                assert r.status_code == 400, (body, r.text)
                assert named in r.json()["error"]["message"], (named, r.json())
            assert c.get("/api/v1/deployments").json()["data"] == []
            assert c.get("/api/v1/deployments/nope").status_code == 404
            assert c.put("/api/v1/deployments/nope", json={"spec": _spec("tiny")}).status_code == 404
            assert c.get("/api/v1/deployments/nope/figures").status_code == 404
    finally:
        p.close()


def test_a_restarted_platform_finds_its_deployment_and_restarts_a_dead_one(tiny_store):
    p = Platform(tiny_store, api_keys=["k"])
    dep_id = None
    try:
        with _client(p) as c:
            dep_id = c.post("/api/v1/deployments", json={"spec": _spec("tiny")}).json()["id"]
            first = _wait_state(c, dep_id, ("ready", "failed"))
            assert first["state"] == "ready", first["error"]
        p.close()  # the service stops; the deployment keeps serving
        assert httpx.get(first["url"][:-3] + "/health").status_code == 200
        p = Platform(tiny_store, api_keys=["k"])
        with _client(p) as c:
            again = c.get(f"/api/v1/deployments/{dep_id}").json()
            assert again["state"] == "ready" and again["pid"] == first["pid"]
            os.killpg(first["pid"], signal.SIGKILL)  # it dies under the running platform: started again
            end = time.monotonic() + 120
            while (back := c.get(f"/api/v1/deployments/{dep_id}").json())["pid"] in (first["pid"], None) \
                    or back["state"] != "ready":
                assert time.monotonic() < end and back["state"] != "failed", back
                time.sleep(0.3)
            assert back["error"].startswith("restarted: its process exited"), back
            assert back["url"] == first["url"]
            assert c.post(f"/api/v1/deployments/{dep_id}/chat",
                          json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    finally:
        if dep_id:
            with _client(p) as c:
                c.delete(f"/api/v1/deployments/{dep_id}")
                _wait_state(c, dep_id, ("stopped",), 60)
        p.close()


def test_ray_deployment_from_gale_body_with_rolling_update(tiny_store):
    """runtime ray: `slipstream deploy` starts its own Ray instance; an update is applied by Ray Serve while the
    endpoint keeps answering."""
    pytest.importorskip("ray.serve")
    from slipstream.pipeline import optimize

    optimize("tiny", "cast", {"dtype": "bfloat16"}, name="tiny-bf16", store=tiny_store)
    gale = {"modelId": "tiny", "deploymentName": "chat", "hyperParameters": {"temperature": 0, "maxTokens": 8},
            "scalingParameters": {"maxBatchSize": 4, "minReplicas": 1, "maxReplicas": 1}}
    p = Platform(tiny_store, api_keys=["k"])
    dep_id = None
    try:
        with _client(p) as c:
            r = c.post("/api/v1/deployments", json={"spec": gale, "runtime": "ray"})
            assert r.status_code == 202, r.text
            dep_id = r.json()["id"]
            dep = _wait_state(c, dep_id, ("ready", "failed"), 300)
            assert dep["state"] == "ready", dep["error"]
            ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            assert c.post(f"/api/v1/deployments/{dep_id}/chat", json=ask).status_code == 200
            end = time.monotonic() + 20  # replicas push their figures to the endpoint each second
            while (figures := c.get(f"/api/v1/deployments/{dep_id}/figures").json())["requests"] < 1:
                assert time.monotonic() < end, figures
                time.sleep(0.5)
            assert figures["output_tokens"] >= 1 and figures["replicas"] == 1, figures

            updated = {**gale, "modelId": "tiny-bf16"}
            assert c.put(f"/api/v1/deployments/{dep_id}", json={"spec": updated}).status_code == 202
            end, answers = time.monotonic() + 240, []
            while True:  # the endpoint answers all along; the new variant takes over
                answers.append(c.post(f"/api/v1/deployments/{dep_id}/chat", json=ask).status_code)
                roots = [m["root"] for m in httpx.get(dep["url"] + "/models").json()["data"]]
                if roots == ["tiny-bf16"]:
                    break
                assert time.monotonic() < end, roots
                time.sleep(0.5)
            assert set(answers) == {200}, answers
            pid = dep["pid"]
            c.delete(f"/api/v1/deployments/{dep_id}")
            _wait_state(c, dep_id, ("stopped",), 120)
            dep_id = None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if dep_id:
            with _client(p) as c:
                c.delete(f"/api/v1/deployments/{dep_id}")
                _wait_state(c, dep_id, ("stopped",), 120)
        p.close()
