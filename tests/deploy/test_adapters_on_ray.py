"""LoRA adapters behind the Ray Serve endpoint: a spec's model lists adapters; a request names one (or
MODEL:ADAPTER) and the endpoint routes it to that model's replicas, which apply it in their batch; greedy
answers equal the merged models'."""

from __future__ import annotations

import pytest

from tests.deploy.test_ray_deploy import _small, _spec
from tests.serving.test_adapters import PROMPTS, _greedy, lora_store  # noqa: F401 (a fixture)

pytest.importorskip("peft")


def test_adapters_behind_the_endpoint(ray_cluster, lora_store):  # noqa: F811
    from openai import NotFoundError, OpenAI

    from slipstream.deploy import ray_app

    port = ray_cluster
    spec = _spec(port, [{"name": "chat", "variant": "tiny", "adapters": ["a1", {"name": "a2", "pinned": True}],
                         "max_loras": 2, "scaling": _small()}])
    ray_app.deploy(spec, lora_store)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"chat", "a1", "a2"} and models["a1"].model_extra["parent"] == "chat"
    texts = {a: _greedy(lora_store, f"{a}-merged" if a else "tiny", PROMPTS[3], 6) for a in (None, "a1", "a2")}
    for asked, adapter in (("chat", None), ("a1", "a1"), ("chat:a2", "a2"), ("a2", "a2")):
        r = client.completions.create(model=asked, prompt=PROMPTS[3], max_tokens=6, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.model == asked
        assert r.choices[0].text == _decode(lora_store, texts[adapter]), asked
    with pytest.raises(NotFoundError, match="a1, a2"):
        client.completions.create(model="a3", prompt="x", max_tokens=1)
    ray_app.stop()


def _decode(store, tokens):
    from slipstream.tokenizer import Tokenizer

    return Tokenizer.from_dir(store.get("tiny").path).decode(tokens)
