"""Exact-match and semantic response caches, and the prefix store, without a model."""

from __future__ import annotations

import numpy as np

from slipstream.engines.prefix_cache import PrefixStore, common_prefix
from slipstream.engines.protocol import SamplingParams
from slipstream.serving.caches import ExactCache, SemanticCache, deterministic, exact_key


class BagOfWords:
    """A fake embedder: word counts over a fixed vocabulary."""

    VOCAB = ["capital", "france", "paris", "what", "is", "the", "of", "weather", "today", "city", "main"]

    def __init__(self):
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), len(self.VOCAB)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace("?", "").split():
                if w in self.VOCAB:
                    out[i, self.VOCAB.index(w)] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_only_deterministic_requests_are_cacheable():
    assert deterministic(SamplingParams(temperature=0))
    assert deterministic(SamplingParams(temperature=0.9, seed=1))
    assert not deterministic(SamplingParams(temperature=0.9))
    assert exact_key("c", [1, 2], {"t": 0}) == exact_key("c", [1, 2], {"t": 0})
    assert exact_key("c", [1, 2], {"t": 0}) != exact_key("c", [1, 3], {"t": 0})


def test_exact_cache_is_lru_and_counts():
    cache: ExactCache[str] = ExactCache(max_entries=2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")  # evicts b
    assert cache.get("b") is None and cache.get("c") == "C" and cache.get("a") == "A"
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)


def test_semantic_cache_matches_close_questions_in_the_same_scope():
    emb = BagOfWords()
    cache: SemanticCache[str] = SemanticCache(emb, threshold=0.8, max_entries=8)
    scope = ("chat", 0.0, 32)
    cache.put(cache.vector("What is the capital of France?"), scope, "Paris")
    assert cache.get(cache.vector("what is the capital of france"), scope) == "Paris"
    assert cache.last_similarity > 0.99
    assert cache.get(cache.vector("the capital city of France is what"), scope) == "Paris"
    assert cache.get(cache.vector("What is the weather today?"), scope) is None
    assert cache.last_similarity < 0.8
    assert cache.get(cache.vector("What is the capital of France?"), ("chat", 0.7, 32)) is None  # other settings
    assert (cache.hits, cache.misses) == (2, 2)


def test_prefix_store_finds_the_longest_shared_prefix():
    store: PrefixStore[str] = PrefixStore(max_tokens=30, min_match=3)
    assert store.lookup([1, 2, 3, 4]) == (0, None)
    store.insert([1, 2, 3, 4, 5, 6], "six")
    store.insert([1, 2, 9, 9], "four")
    assert store.lookup([1, 2, 3, 4, 7]) == (4, "six")
    assert store.lookup([1, 2, 3, 4, 5, 6]) == (5, "six")  # the last prompt token is always recomputed
    assert store.lookup([1, 2, 8]) == (0, None)  # 2 shared tokens: below min_match
    assert (store.hits, store.misses, store.tokens_reused) == (2, 2, 9)
    store.insert(list(range(100, 125)), "long")  # 25 more tokens: the oldest entry goes
    assert store.tokens_held <= 30 and store.lookup([1, 2, 3, 4, 7]) == (0, None)
    assert common_prefix([1, 2, 3], [1, 2]) == 2
