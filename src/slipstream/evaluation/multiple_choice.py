"""Multiple-choice accuracy by log-likelihood, the way lm-evaluation-harness scores it.

For each choice the continuation ``" " + choice`` is scored after the context; ``acc`` picks the
choice with the highest summed log-probability, ``acc_norm`` divides by the choice's length in
characters first. Tokenization follows lm-evaluation-harness (``_encode_pair``): trailing spaces of
the context move to the continuation, and the continuation's tokens are what the whole string's
encoding adds after the context's.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from slipstream.engines.protocol import Engine
from slipstream.evaluation.datasets import MultipleChoiceItem
from slipstream.progress import Progress, or_null


def encode_pair(engine: Engine, context: str, continuation: str) -> tuple[list[int], list[int]]:
    tok = engine.tokenizer
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tok.encode(context + continuation, add_special_tokens=False)
    ctx = tok.encode(context, add_special_tokens=False)
    prefix = tok.bos_prefix()
    if not ctx and not prefix:
        prefix = [tok.eos_token_ids[0]] if tok.eos_token_ids else []
    return prefix + ctx, whole[len(ctx):]


def loglikelihoods(engine: Engine, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                   progress: Progress | None = None, greedy: bool = False,
                   label: str = "scoring continuations") -> list[tuple[float, bool | None]]:
    """For each (context, continuation): the continuation's summed log-probability and, with
    ``greedy=True`` (which needs full distributions), whether greedy decoding would produce it."""
    encoded = [encode_pair(engine, c, x) for c, x in pairs]
    out: list[tuple[float, bool | None]] = []
    with or_null(progress).task(label, total=len(encoded)) as bar:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            seqs = [ctx + cont for ctx, cont in chunk]
            if greedy:
                for (ctx, cont), dist in zip(chunk, engine.logprobs(seqs)):
                    rows = dist[len(ctx) - 1 : len(ctx) + len(cont) - 1]
                    ll = float(rows[np.arange(len(cont)), cont].sum())
                    out.append((ll, bool((rows.argmax(-1) == np.asarray(cont)).all())))
            else:
                for (ctx, cont), lp in zip(chunk, engine.score(seqs)):
                    out.append((float(np.sum(lp[len(ctx) - 1 :])), None))
            bar.advance(len(chunk))
    return out


def accuracy(engine: Engine, items: Sequence[MultipleChoiceItem], batch_size: int = 16,
             progress: Progress | None = None, label: str = "multiple choice") -> dict:
    pairs = [(item.context, " " + choice) for item in items for choice in item.choices]
    lls = [ll for ll, _ in loglikelihoods(engine, pairs, batch_size, progress, label=label)]
    correct, correct_norm, i = [], [], 0
    for item in items:
        scores = np.array(lls[i : i + len(item.choices)])
        lengths = np.array([float(len(c)) for c in item.choices])
        i += len(item.choices)
        correct.append(float(int(np.argmax(scores)) == item.answer))
        correct_norm.append(float(int(np.argmax(scores / lengths)) == item.answer))
    return {
        "acc": float(np.mean(correct)),
        "acc_stderr": _stderr(correct),
        "acc_norm": float(np.mean(correct_norm)),
        "acc_norm_stderr": _stderr(correct_norm),
        "items": len(items),
    }


def _stderr(values: list[float]) -> float:
    n = len(values)
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
