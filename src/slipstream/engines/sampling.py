"""The one rule every decode loop follows: how the next token is picked, and when a sequence ends.

Every engine applies it, whatever runs its forward pass: the transformers engine (``stream`` and the
continuous batch's steps), ONNX Runtime and llama.cpp (their step loops), CTranslate2 (its per-token
callback and ``stream``), vLLM (``stream``), and :func:`slipstream.engines.finishing.finish`, which turns
any engine's raw output into a :class:`~slipstream.engines.protocol.Completion`. So every engine reports
the same tokens and finish reasons for the same logits.

Picking: greedy is argmax (the first of equal maxima); otherwise temperature, then top-k, then top-p
(the smallest set whose probability reaches ``top_p``), then a draw. :func:`pick` does it on a numpy row
with a numpy generator (engines that return raw logits), :func:`pick_torch` on a torch row with a torch
generator (the transformers engine, whose seeds keep giving the tokens they gave).

Stopping (:class:`StopRule`): end-of-sequence tokens may not be picked before ``min_tokens`` tokens
(never, with ``ignore_eos``); after that one ends the sequence with ``"stop"`` and is not part of the
output; the ``max_tokens``-th token ends it with ``"length"``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from slipstream.engines.protocol import FinishReason, SamplingParams


class StopRule:
    """One sequence's progress against its params: which tokens it may not pick next, and whether the
    token it picked ends it."""

    __slots__ = ("params", "eos", "_eos_set", "floor", "generated")

    def __init__(self, params: SamplingParams, eos_token_ids: Iterable[int]):
        self.params = params
        self.eos = [int(t) for t in eos_token_ids]
        self._eos_set = frozenset(self.eos)
        # tokens before an end-of-sequence token may end the sequence
        self.floor: float = math.inf if params.ignore_eos else params.min_tokens
        self.generated = 0  # tokens output so far

    @property
    def banned(self) -> list[int]:
        """Token ids that may not be picked now (a list, to index a row of logits with)."""
        return self.eos if self.generated < self.floor else []

    def ends(self, token: int) -> bool:
        """Whether picking ``token`` now ends the sequence without outputting it."""
        return token in self._eos_set and self.generated >= self.floor

    def take(self, token: int) -> FinishReason | None:
        """Account for ``token``, just picked: ``"stop"`` if it ends the sequence (it is not output);
        otherwise it is output, and ``"length"`` if that makes ``max_tokens``; None to go on."""
        if self.ends(token):
            return "stop"
        self.generated += 1
        return "length" if self.generated >= self.params.max_tokens else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None = None,
         banned: Sequence[int] = ()) -> int:
    """One token id from a 1-D numpy row of logits; ``banned`` ids (:attr:`StopRule.banned`) never win."""
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


def pick_torch(logits: Any, params: SamplingParams, generator: Any = None, banned: Sequence[int] = ()) -> int:
    """One token id from a 1-D torch row of logits (changed in place where ``banned``), drawn with a torch
    ``generator``: the same rule as :func:`pick`."""
    import torch

    if banned:
        logits[list(banned)] = float("-inf")
    if params.greedy:
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            # numpy's argmax over a large vocabulary is several times faster than torch's on one core, and
            # takes the first of equal maxima as torch's does
            return int(logits.numpy().argmax())
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) > params.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
