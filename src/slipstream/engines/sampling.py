"""Choosing the next token from a row of logits with numpy, for engines that return raw logits
(ONNX Runtime, llama.cpp). Same rules as the transformers engine: greedy is argmax; otherwise
temperature, then top-k, then top-p (the smallest set whose probability reaches ``top_p``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slipstream.engines.protocol import SamplingParams


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None = None,
         banned: Sequence[int] = ()) -> int:
    """One token id from a 1-D row of logits; ``banned`` ids (end-of-sequence before min_tokens) never win."""
    row = np.array(logits, dtype=np.float64)
    if banned:
        row[list(banned)] = -np.inf
    if params.greedy:
        return int(row.argmax())
    scores = row / params.temperature
    if params.top_k:
        k = min(params.top_k, scores.size)
        kth = np.partition(scores, -k)[-k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]  # mass of the tokens ranked above each one
        drop = order[before > params.top_p]
        probs[drop] = 0.0
        probs /= probs.sum()
    rng = rng or np.random.default_rng()
    return int(rng.choice(probs.size, p=probs))
