"""Response caches: exact match for deterministic requests, and an opt-in semantic cache.

Model-free. A cached value is whatever the service stores for a finished request. The exact cache
only holds requests whose answer cannot change: greedy decoding (temperature 0) or a fixed seed. The
semantic cache answers a new question with the stored answer of an earlier one whose embedding is
close enough (cosine similarity >= ``threshold``), among requests with the same settings; the
embedder is behind :class:`Embedder`, so tests use a fake one. (Reuse of a shared prompt prefix lives
in the engine: :mod:`slipstream.engines.prefix_cache`.)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from slipstream.engines.protocol import SamplingParams

V = TypeVar("V")


def deterministic(params: SamplingParams) -> bool:
    """Whether a request's answer is fixed: greedy decoding, or sampling with a fixed seed."""
    return params.greedy or params.seed is not None


def exact_key(*parts: Any) -> str:
    """A stable key from JSON-serialisable parts (endpoint, prompt ids, settings)."""
    blob = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ExactCache(Generic[V]):
    """Least-recently-used map from :func:`exact_key` to a finished response."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text: ``[len(texts), dim]`` float32."""


class SemanticCache(Generic[V]):
    """Nearest earlier question (same ``scope``) by cosine similarity; a hit needs ``>= threshold``."""

    def __init__(self, embedder: Embedder, threshold: float = 0.92, max_entries: int = 1024):
        self.embedder, self.threshold, self.max_entries = embedder, threshold, max_entries
        self._items: OrderedDict[int, tuple[Hashable, np.ndarray, V]] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.last_similarity: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def vector(self, text: str) -> np.ndarray:
        v = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def get(self, vector: np.ndarray, scope: Hashable) -> V | None:
        with self._lock:
            best, best_sim = None, -1.0
            for key, (s, v, _) in self._items.items():
                if s == scope:
                    sim = float(v @ vector)
                    if sim > best_sim:
                        best, best_sim = key, sim
            self.last_similarity = best_sim if best is not None else None
            if best is None or best_sim < self.threshold:
                self.misses += 1
                return None
            self._items.move_to_end(best)
            self.hits += 1
            return self._items[best][2]

    def put(self, vector: np.ndarray, scope: Hashable, value: V) -> None:
        with self._lock:
            self._items[self._next] = (scope, vector, value)
            self._next += 1
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
