"""Prompt-lookup decoding gives plain greedy decoding's tokens, accepts drafts where the output repeats its
input, and reports how many it accepted."""

from __future__ import annotations

import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.engines.prompt_lookup import propose
from slipstream.engines.transformers import TransformersEngine


def test_propose_takes_the_latest_longest_match():
    assert propose([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], tokens=2) == [7, 5]  # latest match of (1, 2, 3)
    assert propose([4, 5, 6, 1, 2, 8, 2], tokens=3) == [8, 2]  # only the 1-gram (2) recurs
    assert propose([1, 2, 3, 4], tokens=3) == []
    assert propose([5, 5], tokens=4) == [5]


@pytest.fixture(scope="module")
def engines(tiny_llama_dir):
    plain = TransformersEngine(tiny_llama_dir, threads=1)
    lookup = TransformersEngine(tiny_llama_dir, threads=1, prompt_lookup=6)
    return plain, lookup


def grounded_prompts(tokenizer):
    text = ("The quarterly report says revenue rose by twelve percent while costs fell, and the board "
            "approved the new plan for the northern region. ")
    return [tokenizer.encode(text * 3), tokenizer.encode("Summary: " + text * 2),
            tokenizer.encode("A few unrelated words about the weather today.")]


@pytest.mark.parametrize("params", [SamplingParams(max_tokens=40), SamplingParams(max_tokens=40, ignore_eos=True),
                                    SamplingParams(max_tokens=25, min_tokens=10)])
def test_greedy_tokens_equal_plain_decoding(engines, params):
    plain, lookup = engines
    prompts = grounded_prompts(plain.tokenizer)
    want = plain.generate(prompts, params)
    got = lookup.generate(prompts, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    for prompt, completion in zip(prompts, want):
        assert list(lookup.stream(prompt, params)) == completion.token_ids


class Cache:
    """A key/value cache that only counts positions, as the fake model below needs."""

    def __init__(self):
        self.tokens: list[int] = []

    def get_seq_length(self) -> int:
        return len(self.tokens)

    def crop(self, change: int) -> None:  # as DynamicCache: a negative count of positions to remove
        assert change < 0
        self.tokens = self.tokens[:change]


class Copier:
    """A model by construction: after position j it predicts the token ``period`` places back (an induction
    head), except every ``twist``-th position, where it predicts something new. Its outputs repeat its
    input, with surprises that reject drafts."""

    def __init__(self, period: int, twist: int, vocab: int = 50):
        self.period, self.twist, self.vocab, self.calls = period, twist, vocab, 0

    def __call__(self, input_ids, past_key_values=None, use_cache=True):
        import torch
        from types import SimpleNamespace

        self.calls += 1
        cache = past_key_values or Cache()
        rows = []
        for token in input_ids[0].tolist():
            cache.tokens.append(token)
            j = len(cache.tokens) - 1
            want = (j * 7 + 3) % self.vocab if j % self.twist == 0 or j < self.period \
                else cache.tokens[j + 1 - self.period]
            rows.append(torch.nn.functional.one_hot(torch.tensor(want), self.vocab).float())
        return SimpleNamespace(logits=torch.stack(rows)[None], past_key_values=cache)


@pytest.mark.parametrize("twist", [5, 13, 1000])
def test_drafts_are_accepted_where_the_output_repeats_the_input(twist):
    from slipstream.engines.prompt_lookup import LookupStats, greedy

    prompt = [(i * 11) % 50 for i in range(12)]
    params = SamplingParams(max_tokens=60, ignore_eos=True)
    plain_model, plain_stats = Copier(period=12, twist=twist), LookupStats()
    want = list(greedy(plain_model, prompt, params, [], "cpu", 0, 3, plain_stats))  # no drafts: one token a pass
    model, stats = Copier(period=12, twist=twist), LookupStats()
    got = list(greedy(model, prompt, params, [], "cpu", 8, 3, stats))
    assert got == want and len(got) == 60
    assert plain_stats.drafted == 0 and plain_model.calls == 60
    assert stats.accepted > 0 and stats.tokens == 60
    assert model.calls < plain_model.calls  # fewer passes of the target model
    if twist < 1000:
        assert stats.accepted < stats.drafted  # the surprises rejected some drafts, and the output is unchanged
    else:
        assert stats.acceptance > 0.9


def test_sampled_requests_decode_as_before(engines):
    plain, lookup = engines
    prompt = plain.tokenizer.encode("Once upon a time")
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=3)
    assert lookup.generate([prompt], params)[0].token_ids == plain.generate([prompt], params)[0].token_ids
