"""Turning raw generated ids into a :class:`Completion`: end-of-sequence (by the one
:class:`~slipstream.engines.sampling.StopRule`) and stop strings.

Shared by every engine so that all of them report the same tokens, text and finish reason.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from slipstream.engines.protocol import Completion, SamplingParams
from slipstream.engines.sampling import StopRule
from slipstream.tokenizer import Tokenizer


def finish(tokenizer: Tokenizer, prompt_len: int, generated: Sequence[int], params: SamplingParams) -> Completion:
    rule = StopRule(params, tokenizer.eos_token_ids)
    ids: list[int] = []
    reason = "length"
    for t in generated:
        if rule.take(t) == "stop":
            reason = "stop"
            break
        ids.append(t)
    ids = ids[: params.max_tokens]
    text = tokenizer.decode(ids)
    if params.stop:
        cut = first_stop(text, params.stop)
        if cut is not None:
            text = text[:cut]
            ids = _tokens_covering(tokenizer, ids, text)
            reason = "stop"
    return Completion(token_ids=ids, text=text, finish_reason=reason, prompt_tokens=prompt_len)


# an engine's own decode loop: for a group of prompts, each step's chosen token per prompt (None once done)
Steps = Callable[[Sequence[Sequence[int]], SamplingParams], Iterator[list[int | None]]]


def generate_by_steps(steps: Steps, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]],
                      params: SamplingParams, batch_size: int) -> list[Completion]:
    """``Engine.generate`` for an engine that decodes ``batch_size`` prompts at a time with ``steps``."""
    out: list[Completion] = []
    for start in range(0, len(prompts), batch_size):
        group = prompts[start : start + batch_size]
        produced: list[list[int]] = [[] for _ in group]
        for step in steps(group, params):
            for i, tok in enumerate(step):
                if tok is not None:
                    produced[i].append(tok)
        out.extend(finish(tokenizer, len(p), ids, params) for p, ids in zip(group, produced))
    return out


def stream_by_steps(steps: Steps, tokenizer: Tokenizer, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
    """``Engine.stream`` over ``steps``: one prompt's tokens as they come, up to end of sequence."""
    rule = StopRule(params, tokenizer.eos_token_ids)
    for (tok,) in steps([prompt], params):
        if tok is None or rule.take(tok) == "stop":
            return
        yield tok


def token_scores(sequences: Sequence[Sequence[int]], logprobs: Sequence[Any]) -> list[Any]:
    """``Engine.score`` from ``Engine.logprobs``: each sequence's log-probability of every token after its
    first (float32), picked from the per-position log-softmax rows ``logprobs`` gives."""
    import numpy as np

    out = []
    for seq, lp in zip(sequences, logprobs):
        target = np.asarray(seq[1:], dtype=np.int64)
        out.append(lp[np.arange(len(target)), target].astype(np.float32))
    return out


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _tokens_covering(tokenizer: Tokenizer, ids: list[int], text: str) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded text reaches ``text`` (the part before a stop)."""
    for n in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:n])) >= len(text):
            return ids[:n]
    return ids
