"""Shared numbers for quantization tests: how far a variant's next-token distributions are from the
original's on a few prompts (mean KL, top-1 agreement), and greedy tokens."""

from __future__ import annotations

import numpy as np

PROMPTS = ["The game was", "In 1990 the band", "Robert Boulter is an English actor who", "A cat"]


def prompts(engine) -> list[list[int]]:
    return [engine.tokenizer.encode(p) for p in PROMPTS]


def distance(reference, engine) -> tuple[float, float]:
    """(mean KL(reference || engine) per position, top-1 agreement) over the prompts."""
    ids = prompts(reference)
    kls, agree = [], []
    for a, b in zip(reference.logprobs(ids), engine.logprobs(ids)):
        kls.append((np.exp(a) * (a - b)).sum(-1))
        agree.append(a.argmax(-1) == b.argmax(-1))
    return float(np.concatenate(kls).mean()), float(np.concatenate(agree).mean())
