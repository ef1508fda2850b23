"""schemathesis against the deploy endpoint's own OpenAPI schema (GET /openapi.json, behind the key), on a real
local Ray Serve with one tiny CTranslate2 model: whatever it sends, in the schema or outside it, the answer is
never a 5xx and is one the schema documents (status, content type, body, each streamed event, headers).
Bounded: small limits (as tests/serving/test_fuzz.py's) and EXAMPLES per operation and mode."""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEY = "sk-deploy-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "fuzzed"
EXAMPLES = 30
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection")
OPERATIONS = [(m, p, mode) for m, p in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"))
              for mode in ("positive", "negative")] + [("GET", p, "positive") for p in ("/v1/models", "/metrics", "/health")]


@pytest.fixture(scope="module")
def endpoint(ray_cluster, deploy_store):
    from slipstream.deploy import ray_app
    from slipstream.deploy.spec import DeploySpec

    spec = DeploySpec.parse({"port": ray_cluster, "api_keys": [KEY], "models": [{
        "name": MODEL, "variant": "tiny-ct2", "scaling": {"cpus_per_replica": 0.5, "threads_per_replica": 1},
        "defaults": {"max_tokens": 4}, "max_batch_size": 4, "max_queue": 8, "deadline_s": 60,
        "limits": {"max_tokens": 8, "max_n": 2, "max_logprobs": 3}, "exact_cache": {"enabled": False}}]})
    ray_app.deploy(spec, deploy_store)
    return f"http://127.0.0.1:{ray_cluster}"


@st.composite
def _named(draw, cases):  # noqa: ANN001, ANN202
    case = draw(cases)
    if isinstance(case.body, dict) and draw(st.integers(0, 3)) < 3:
        case.body = {**case.body, "model": MODEL}
        if draw(st.integers(0, 2)) == 2:
            case.body["stream"] = True
    return case


@pytest.mark.parametrize("method,path,mode", OPERATIONS)
def test_no_5xx_and_every_answer_is_in_the_schema(endpoint, method, path, mode):
    import schemathesis.checks as checks

    api = schemathesis.openapi.from_url(endpoint + "/openapi.json", headers=AUTH)
    generation = schemathesis.GenerationMode(mode)
    strategy = api[path][method].as_strategy(generation)
    if generation.is_positive and method == "POST":
        strategy = _named(strategy)
    selected = [getattr(checks, name) for name in CHECKS]
    seen: dict[int, int] = {}

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case) -> None:  # noqa: ANN001
        response = case.call_and_validate(headers=AUTH, timeout=60, checks=selected)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    fuzz()
    print(method, path, mode, seen)
    if generation.is_positive and method == "POST":  # generation reached through the endpoint
        assert seen.get(200, 0) >= 1, seen


def test_the_schema_is_behind_the_key_and_says_what_the_endpoint_answers(endpoint):
    assert httpx.get(endpoint + "/openapi.json").status_code == 401
    doc = httpx.get(endpoint + "/openapi.json", headers=AUTH).json()
    assert set(doc["paths"]) == {"/health", "/v1/models", "/metrics", "/v1/completions", "/v1/chat/completions"}
    assert "422" not in str(doc)
    assert {"400", "401", "404", "413", "429", "503"} <= set(doc["paths"]["/v1/completions"]["post"]["responses"])
    request = doc["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"type": "integer", "minimum": 0, "maximum": 8} in request["max_tokens"]["anyOf"]
    reply = httpx.post(endpoint + "/v1/completions", headers=AUTH, timeout=60,
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 3})
    assert reply.status_code == 200
