"""Reuse of shared prompt prefixes: the longest cached prefix of a new prompt, least recently used out.

Model-free: a payload is whatever the engine keeps for a prompt (a stepper keeps its key/value
tensors) and ``lookup`` says how many leading tokens of it are valid for the new prompt. In a causal
model the state of the first ``k`` tokens depends only on those tokens, so a request whose prompt
shares a system prompt (or a few-shot preamble) with an earlier one skips recomputing that part.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Sequence, TypeVar

T = TypeVar("T")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixStore(Generic[T]):
    """Payloads keyed by the prompt they were computed for, bounded by the number of tokens held."""

    def __init__(self, max_tokens: int, min_match: int = 8):
        self.max_tokens = max_tokens
        self.min_match = min_match  # shorter matches are not worth a lookup's copy
        self._entries: OrderedDict[tuple[int, ...], T] = OrderedDict()
        self._held = 0
        self.hits = self.misses = self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens_held(self) -> int:
        return self._held

    def lookup(self, prompt: Sequence[int]) -> tuple[int, T | None]:
        """``(k, payload)``: the first ``k`` tokens of ``prompt`` can be taken from ``payload``.

        ``k`` is at most ``len(prompt) - 1``: the last prompt token is always run, to get the logits
        of the first generated token. ``(0, None)`` on a miss.
        """
        best_key, best = None, 0
        for key in self._entries:
            k = common_prefix(key, prompt)
            if k > best:
                best_key, best = key, k
        best = min(best, len(prompt) - 1)
        if best_key is None or best < self.min_match:
            self.misses += 1
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.tokens_reused += best
        return best, self._entries[best_key]

    def insert(self, prompt: Sequence[int], payload: T) -> None:
        key = tuple(prompt)
        if len(key) < self.min_match or len(key) > self.max_tokens:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = payload
        self._held += len(key)
        while self._held > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self._held -= len(old)
