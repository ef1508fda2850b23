"""Prompt-lookup decoding (Saxena, 2023; transformers' ``prompt_lookup_num_tokens``): lossless speculative
decoding with no draft model. The draft is the continuation of the most recent earlier occurrence of the
text's last n-gram (in the prompt or in what was generated); the target model checks the whole draft in one
forward pass and keeps its longest prefix that greedy decoding would have produced, plus its own next token.
Every kept token is the target's own argmax, so the output equals plain greedy decoding (up to the float
rounding of a multi-token forward pass against one-token steps, which can only matter at exact ties).

It pays where the output repeats its input: summarising, rewriting, extracting, code edits, RAG answers that
quote their sources. On chat with little overlap almost no draft is accepted and each step costs a little
more than a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from slipstream.engines.protocol import SamplingParams
from slipstream.engines.sampling import StopRule, pick_torch


def propose(context: Sequence[int], tokens: int, max_ngram: int = 3) -> list[int]:
    """Up to ``tokens`` draft tokens: what followed the latest earlier occurrence of the context's last
    ``n``-gram, trying the longest ``n`` (at most ``max_ngram``) first; [] when no n-gram recurs."""
    size = len(context)
    for n in range(min(max_ngram, size - 1), 0, -1):
        tail = list(context[size - n:])
        for start in range(size - n - 1, -1, -1):
            if list(context[start:start + n]) == tail:
                follow = list(context[start + n:start + n + tokens])
                if follow:
                    return follow
    return []


@dataclass
class LookupStats:
    """Drafted and accepted tokens, over every sequence decoded with prompt lookup."""

    steps: int = 0  # target forward passes after the prompt
    drafted: int = 0
    accepted: int = 0
    tokens: int = 0  # tokens output
    per_sequence: list[float] = field(default_factory=list)  # acceptance rate of each sequence

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "drafted": self.drafted, "accepted": self.accepted, "tokens": self.tokens,
                "acceptance_rate": round(self.acceptance, 4),
                "tokens_per_step": round(self.tokens / self.steps, 3) if self.steps else None}


def decode(first: Any, forward: Callable[[list[int]], Any], rollback: Callable[[int], None],
           choose: Callable[[Any, list[int]], int], prompt: Sequence[int], params: SamplingParams,
           eos: Sequence[int], draft_tokens: int, max_ngram: int, stats: LookupStats) -> Iterator[int]:
    """Greedy decoding with prompt-lookup drafts over any engine: ``first`` is the logits row after the
    prompt, ``forward(tokens)`` runs tokens through the model (after everything kept so far) and returns one
    logits row per token, ``rollback(n)`` drops the cache beyond the first ``n`` positions, ``choose(row,
    banned)`` is the engine's greedy pick. Yields each picked token as plain decoding would pick it, the
    ending end-of-sequence token included (as ``generate`` returns it)."""
    rule = StopRule(params, eos)
    context = list(prompt)
    drafted = accepted = 0
    row = first
    try:
        while True:
            token = choose(row, rule.banned)
            yield token
            if rule.take(token) is not None:
                return
            context.append(token)
            room = params.max_tokens - rule.generated  # never draft past max_tokens
            draft = propose(context, min(draft_tokens, room), max_ngram) if room > 0 else []
            stats.steps += 1
            rows = forward([token, *draft])
            drafted += len(draft)
            kept = 0
            for i, guess in enumerate(draft):  # row i: the model's choice after token and draft[:i]
                if choose(rows[i], rule.banned) != guess:
                    break
                yield guess
                kept += 1
                if rule.take(guess) is not None:
                    return
                context.append(guess)
            accepted += kept
            if kept < len(draft):
                rollback(len(context))  # drop the rejected draft's keys and values
            row = rows[kept]
    finally:
        stats.drafted += drafted
        stats.accepted += accepted
        stats.tokens += rule.generated
        if drafted:
            stats.per_sequence.append(accepted / drafted)


def until_stop(tokens: Iterator[int], params: SamplingParams, eos: Sequence[int]) -> Iterator[int]:
    """A raw token stream (its ending end-of-sequence token included) as ``Engine.stream`` yields it."""
    rule = StopRule(params, eos)
    for token in tokens:
        if rule.take(token) == "stop":
            return
        yield token


def greedy(model: Any, prompt: Sequence[int], params: SamplingParams, eos: Sequence[int], device: str,
           draft_tokens: int, max_ngram: int, stats: LookupStats) -> Iterator[int]:
    """:func:`decode` on a transformers model and its key/value cache."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
        cache = out.past_key_values

        def forward(tokens: list[int]) -> Any:
            return model(input_ids=torch.tensor([tokens], device=device), past_key_values=cache,
                         use_cache=True).logits[0]

        def choose(row: Any, banned: list[int]) -> int:
            return pick_torch(row.float().cpu(), params, None, banned)

        def rollback(length: int) -> None:  # crop takes how many to remove, as a negative count
            cache.crop(length - cache.get_seq_length())

        yield from decode(out.logits[0, -1], forward, rollback, choose, prompt, params, eos, draft_tokens,
                          max_ngram, stats)
