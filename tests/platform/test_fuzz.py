"""schemathesis against the platform's own OpenAPI schema (GET /api/v1/openapi.json, behind the key), on a real
server over a real store: whatever it sends, in the schema or outside it (negative mode: wrong types, unknown
fields, numbers past the bounds), the answer is never a 5xx and is one the schema documents: status code,
content type, body (each server-sent event too) and headers.

The store holds the tiny model and a variant cast from it, and jobs in every state a client meets: one that a
real worker ran and failed (its model does not exist), one cancelled, some queued. The runner is then stopped,
so the jobs the fuzzing creates stay queued and start no work. Positive bodies and paths name those models
and jobs three times in four, so the 200s, 202s and 409s are reached, not only the 404s.

Found by it, and fixed: ``limit`` or ``after`` past SQLite's integers was a 500 (OverflowError; bounded now, as
``state`` is to the job states); an unknown query parameter was silently ignored (400 naming it now); /health
counted a worker that had ended but was not yet reaped as running.
"""

from __future__ import annotations

import time

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (hypothesis comes with schemathesis)
from hypothesis import strategies as st  # noqa: E402

from tests.platform.test_api import Platform  # noqa: E402

KEY = "sk-platform-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = 50
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection")
# negative: the operations with an input to break (a string path parameter cannot be); deletes last
OPERATIONS = ([("GET", p, "positive") for p in ("/health", "/api/v1/models", "/api/v1/models/{name}",
                                                  "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/log")]
              + [(m, p, mode) for m, p in (("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs"),
                                           ("GET", "/api/v1/jobs/{job_id}/events")) for mode in ("positive", "negative")]
              + [(m, p, mode) for m, p in (("POST", "/api/v1/models/import"), ("POST", "/api/v1/models/upload"),
                                           ("GET", "/api/v1/deployments"), ("POST", "/api/v1/deployments"))
                 for mode in ("positive", "negative")]
              + [(m, "/api/v1/deployments/{dep_id}" + tail, "positive") for m, tail in (
                  ("GET", ""), ("PUT", ""), ("GET", "/figures"), ("POST", "/chat"), ("DELETE", ""))]
              + [("POST", "/api/v1/jobs/{job_id}/cancel", "positive"), ("DELETE", "/api/v1/models/{name}", "positive")])
ENDED = ("succeeded", "failed", "cancelled")


def _wait(c: httpx.Client, job_id: str, states: tuple[str, ...], timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while (job := c.get(f"/api/v1/jobs/{job_id}").json())["state"] not in states:
        assert time.monotonic() < end, job
        time.sleep(0.2)
    return job


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("platform-fuzz") / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    optimize("tiny", "cast", {"dtype": "float16"}, name="tiny-f16", store=store)
    p = Platform(store, api_keys=[KEY], max_workers=1)
    with httpx.Client(base_url=p.url, headers=AUTH, timeout=60) as c:
        failed = c.post("/api/v1/jobs", json={"kind": "optimize", "spec": {"model": "no-such", "technique": "cast"}})
        assert _wait(c, failed.json()["id"], ENDED)["state"] == "failed"  # a real worker ran it
        p.app.state.platform.jobs.stop()  # no more workers: what the fuzzing queues stays queued
        queued = [c.post("/api/v1/jobs", json={"kind": "bench", "spec": {"model": "tiny"}}).json()["id"]
                  for _ in range(4)]
        assert c.post(f"/api/v1/jobs/{queued[0]}/cancel").json()["state"] == "cancelled"
    # events stream until their job ends: only ended jobs are named to /events
    p.ended = [failed.json()["id"], queued[0]]
    # a deployment that has stopped: shown, and every action on it a 409 (none starts a process)
    stopped = store.registry.add_deployment("chat", "process", {"host": "127.0.0.1", "port": 9, "models": [
        {"name": "chat", "variant": "tiny"}]})
    store.registry.update_deployment(stopped.id, state="stopped")
    p.known = {"job_id": p.ended + queued[1:], "name": ["tiny", "tiny-f16"], "dep_id": [stopped.id]}
    try:
        yield p
    finally:
        p.close()


@st.composite
def _known(draw, cases, known: dict[str, list[str]], new_jobs: bool):  # noqa: ANN001, ANN202
    """Three cases in four name a model or job the store holds (hypothesis leans to 0: the known side); with
    ``new_jobs`` half the bodies are a valid job on one of its models."""
    case = draw(cases)
    for name, values in known.items():
        if name in (case.path_parameters or {}) and draw(st.integers(0, 3)) < 3:
            case.path_parameters = {**case.path_parameters, name: draw(st.sampled_from(values))}
    if new_jobs and draw(st.integers(0, 1)) == 0:  # on tiny (its variant stays free to delete) or on nothing
        case.body = {"kind": draw(st.sampled_from(["bench", "evaluate"])),
                     "spec": {"model": draw(st.sampled_from(["tiny", "no-such"]))}}
    return case


@pytest.mark.parametrize("method,path,mode", OPERATIONS)
def test_no_5xx_and_every_answer_is_in_the_schema(fuzzed, method, path, mode):
    """(schemathesis's pytest plugin reaches into pytest internals that pytest 9 no longer has: its strategies
    are driven by hypothesis directly here, as in tests/serving/test_fuzz.py.)"""
    import schemathesis.checks as checks

    api = schemathesis.openapi.from_url(fuzzed.url + "/api/v1/openapi.json", headers=AUTH)
    generation = schemathesis.GenerationMode(mode)
    strategy = api[path][method].as_strategy(generation)
    if generation.is_positive:
        known = {**fuzzed.known, "job_id": fuzzed.ended} if path.endswith("/events") else fuzzed.known
        strategy = _known(strategy, known, new_jobs=method == "POST" and path == "/api/v1/jobs")
    selected = [getattr(checks, name) for name in CHECKS]
    seen: dict[int, int] = {}

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case) -> None:  # noqa: ANN001
        response = case.call_and_validate(headers=AUTH, timeout=30, checks=selected)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    fuzz()
    print(method, path, mode, seen)
    if generation.is_positive:  # the fuzzing reached what the store holds, not only the 404s
        expected = {"/api/v1/jobs/{job_id}/cancel": {200, 409}, "/api/v1/models/{name}": {200, 404},
                    "/api/v1/jobs": {202 if method == "POST" else 200}, "/api/v1/models/import": {202},
                    "/api/v1/models/upload": {400}, "/api/v1/deployments": {400 if method == "POST" else 200},
                    "/api/v1/deployments/{dep_id}": {200 if method == "GET" else 409},
                    "/api/v1/deployments/{dep_id}/figures": {409},
                    "/api/v1/deployments/{dep_id}/chat": {409}}.get(path, {200})
        if method == "DELETE" and path == "/api/v1/models/{name}":
            expected = {200, 409, 404}  # the variant deleted once, its parent refused (children, queued jobs)
        assert expected <= set(seen), seen
    else:
        assert 400 in seen, seen


def test_the_platform_still_answers_and_no_fuzzed_job_started(fuzzed):
    """Runs after the fuzz tests (module-scoped server, file order)."""
    with httpx.Client(base_url=fuzzed.url, headers=AUTH, timeout=30) as c:
        assert c.get("/health").json()["jobs_running"] == 0
        jobs = c.get("/api/v1/jobs", params={"limit": 10_000}).json()["data"]
        assert len(jobs) > EXAMPLES // 4  # the fuzzing created jobs...
        assert {j["state"] for j in jobs} <= {"queued", "cancelled", "failed"}  # ...and none of them ran
        assert not [j for j in jobs if j["pid"] and j["state"] != "failed"]
        assert c.get("/api/v1/models/tiny").json()["name"] == "tiny"


def test_the_schema_is_behind_the_key_says_400_not_422_and_what_each_route_answers(fuzzed):
    assert httpx.get(fuzzed.url + "/api/v1/openapi.json").status_code == 401
    doc = httpx.get(fuzzed.url + "/api/v1/openapi.json", headers=AUTH).json()
    statuses = {path: {m: sorted(op["responses"]) for m, op in ops.items()} for path, ops in doc["paths"].items()}
    assert statuses == {
        "/health": {"get": ["200"]}, "/api/v1/models": {"get": ["200", "401"]},
        "/api/v1/models/{name}": {"get": ["200", "401", "404"], "delete": ["200", "401", "404", "409"]},
        "/api/v1/jobs": {"post": ["202", "400", "401"], "get": ["200", "400", "401"]},
        "/api/v1/jobs/{job_id}": {"get": ["200", "401", "404"]},
        "/api/v1/jobs/{job_id}/cancel": {"post": ["200", "401", "404", "409"]},
        "/api/v1/jobs/{job_id}/log": {"get": ["200", "401", "404"]},
        "/api/v1/jobs/{job_id}/events": {"get": ["200", "400", "401", "404"]},
        "/api/v1/models/import": {"post": ["202", "400", "401"]},
        "/api/v1/models/upload": {"post": ["202", "400", "401", "409", "413"]},
        "/api/v1/deployments": {"post": ["202", "400", "401"], "get": ["200", "400", "401"]},
        "/api/v1/deployments/{dep_id}": {"get": ["200", "401", "404"], "put": ["202", "400", "401", "404", "409"],
                                         "delete": ["200", "401", "404", "409"]},
        "/api/v1/deployments/{dep_id}/figures": {"get": ["200", "401", "404", "409", "502"]},
        "/api/v1/deployments/{dep_id}/chat": {"post": ["200", "400", "401", "404", "409", "429", "502", "503"]}}
    assert "422" not in str(doc) and "HTTPValidationError" not in str(doc)
    jobs = doc["paths"]["/api/v1/jobs/{job_id}"]
    assert set(jobs["get"]["responses"]["404"]["content"]) == {"application/json"}
    assert set(doc["paths"]["/api/v1/jobs/{job_id}/log"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(doc["paths"]["/api/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]) == \
        {"text/event-stream"}
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
