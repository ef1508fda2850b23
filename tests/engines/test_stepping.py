"""Continuous batching on the transformers engine and row callbacks on CTranslate2 give the same tokens
as each engine's own ``generate`` for the same prompt."""

from __future__ import annotations

import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.engines.stepping import Stepper, can_step

TEXTS = ["The game was", "In 1990 the band played a long show", "A cat",
         "Robert Boulter is an English actor who", "The game was played in the"]


@pytest.fixture(scope="module")
def hf(session_store):
    return open_engine("tiny", store=session_store, threads=1)


def run_staggered(stepper, prompts, params, joins):
    """Add prompt i at step joins[i]; collect tokens and finish reasons."""
    got = {i: [] for i in range(len(prompts))}
    reasons, step = {}, 0
    while step <= max(joins) or stepper.active:
        for i, j in enumerate(joins):
            if j == step:
                stepper.add(i, prompts[i], params[i])
        for out in stepper.step():
            if out.token is not None:
                got[out.seq_id].append(out.token)
            if out.finish_reason:
                reasons[out.seq_id] = out.finish_reason
        step += 1
    return got, reasons


def test_greedy_tokens_equal_generate_when_sequences_join_and_leave(hf):
    prompts = [hf.tokenizer.encode(t) for t in TEXTS]
    params = [SamplingParams(max_tokens=m) for m in (20, 6, 30, 12, 16)]
    expected = [hf.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    stepper = hf.stepper()
    assert isinstance(stepper, Stepper) and can_step(hf)
    got, reasons = run_staggered(stepper, prompts, params, joins=[0, 0, 3, 7, 7])
    assert [got[i] for i in range(5)] == expected
    assert all(reasons[i] == ("length" if len(expected[i]) == params[i].max_tokens else "stop") for i in range(5))
    assert stepper.stats()["peak_batch"] >= 3 and stepper.active == 0


def test_a_removed_sequence_frees_its_row_and_the_others_are_unaffected(hf):
    prompts = [hf.tokenizer.encode(t) for t in TEXTS[:3]]
    params = SamplingParams(max_tokens=15)
    expected = [hf.generate([p], params)[0].token_ids for p in prompts]
    stepper = hf.stepper()
    for i, p in enumerate(prompts):
        stepper.add(i, p, params)
    got = {i: [] for i in range(3)}
    for step in range(40):
        if step == 4:
            stepper.remove(0)  # the first row leaves; the last row moves into its place
        for out in stepper.step():
            if out.token is not None:
                got[out.seq_id].append(out.token)
        if not stepper.active:
            break
    assert len(got[0]) == 4 and got[0] == expected[0][:4]
    assert got[1] == expected[1] and got[2] == expected[2]


def test_prefix_reuse_gives_the_same_tokens_and_counts_hits(hf):
    shared = "Robert Boulter is an English actor who played in the game that the band"
    prompts = [hf.tokenizer.encode(shared + tail) for tail in (" was", " played a", " is")]
    params = SamplingParams(max_tokens=12)
    expected = [hf.generate([p], params)[0].token_ids for p in prompts]
    stepper = hf.stepper(prefix_cache_tokens=4096)
    got, _ = run_staggered(stepper, prompts, [params] * 3, joins=[0, 2, 4])
    assert [got[i] for i in range(3)] == expected
    stats = stepper.stats()
    assert stats["prefix_hits"] == 2 and stats["prefix_misses"] == 1
    assert stats["prefix_tokens_reused"] >= 2 * (len(hf.tokenizer.encode(shared)) - 2)


def test_seeded_sampling_equals_stream_and_eos_rules_hold(hf):
    prompt = hf.tokenizer.encode(TEXTS[3])
    sampled = SamplingParams(max_tokens=15, temperature=1.2, top_k=40, seed=3)
    stepper = hf.stepper()
    got, _ = run_staggered(stepper, [prompt, prompt], [sampled, SamplingParams(max_tokens=9, ignore_eos=True)],
                           joins=[0, 1])
    assert got[0] == list(hf.stream(prompt, sampled))
    assert len(got[1]) == 9


def test_ctranslate2_rows_equal_generate_and_stop_early(session_store):
    ct2 = open_engine("tiny-ct2-float32", store=session_store, threads=1)
    prompts = [ct2.tokenizer.encode(t) for t in TEXTS[:4]]
    params = [SamplingParams(max_tokens=m) for m in (20, 7, 30, 12)]
    expected = [ct2.generate([p], q)[0] for p, q in zip(prompts, params)]
    seen = {i: [] for i in range(4)}

    def on_token(row, token):
        seen[row].append(token)
        return row == 3 and len(seen[row]) >= 4  # stop row 3 early, as a cancelled request would

    results = ct2.generate_rows(prompts, params, on_token)
    for i in range(3):
        assert seen[i] == expected[i].token_ids == results[i].token_ids
        assert results[i].finish_reason == expected[i].finish_reason
    assert seen[3] == expected[3].token_ids[:4] == results[3].token_ids
    with pytest.raises(ValueError, match="batch_key"):
        ct2.generate_rows(prompts[:2], [params[0], SamplingParams(temperature=0.5)], on_token)


def test_grouped_decode_attention_equals_sdpa_with_repeated_heads(hf):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from slipstream.engines.torch.attention import ROWS_ATTENTION, grouped_decode_attention

    hf.stepper()
    assert hf.model.config._attn_implementation == ROWS_ATTENTION  # the stepper switched the model over
    torch.manual_seed(0)
    rows, heads, kv_heads, width, dim = 5, 6, 2, 11, 8
    buffer = torch.randn(rows, kv_heads, 16, dim)  # a cache buffer wider than the columns in use
    key, value = buffer[:, :, :width], torch.randn(rows, kv_heads, 16, dim)[:, :, :width]
    query = torch.randn(rows, heads, 1, dim)
    lengths = torch.tensor([11, 3, 7, 1, 9])
    mask = (torch.arange(width)[None, :] < lengths[:, None])[:, None, None, :]
    module = type("M", (), {"num_key_value_groups": heads // kv_heads, "is_causal": True, "training": False})()
    got, _ = grouped_decode_attention(module, query, key, value, mask, scaling=0.3)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert got.shape == want.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory, tiny_gemma3_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("gemma3-home"))
    import_model(str(tiny_gemma3_dir), "tiny-gemma3", store=store)
    return open_engine("tiny-gemma3", store=store, threads=1)


@pytest.mark.parametrize("model", ["llama", "gemma3"])
def test_fused_steps_give_generate_tokens_with_prefix_reuse_and_sliding_windows(hf, gemma3, model, monkeypatch):
    # newcomers' prompts ride in the running rows' decode pass; Gemma's 160-token prompt spans more than
    # its 64-token sliding window; its row attends apart from the short ones (row groups)
    from slipstream.engines.torch.attention import StepPlan

    groups = []
    build = StepPlan.build.__func__
    monkeypatch.setattr(StepPlan, "build", classmethod(
        lambda cls, *a: (plan := build(cls, *a), groups.append(len(plan.groups)))[0]))
    engine = hf if model == "llama" else gemma3
    texts = TEXTS + [" ".join(TEXTS * 3), TEXTS[4] + " middle of a long show and"]
    prompts = [engine.tokenizer.encode(t) for t in texts]
    params = [SamplingParams(max_tokens=m) for m in (20, 6, 30, 12, 16, 25, 18)]
    expected = [engine.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    stepper = engine.stepper(prefix_cache_tokens=4096, fused_prefill=True)
    assert stepper.fused and not engine.stepper(fused_prefill=False).fused
    got, reasons = run_staggered(stepper, prompts, params, joins=[0, 0, 3, 7, 7, 9, 12])
    assert [got[i] for i in range(len(prompts))] == expected
    stats = stepper.stats()
    assert stats["prefix_hits"] >= 1 and stats["prefills"] == 5 and stats["peak_batch"] >= 4
    assert stepper.active == 0 and max(groups) >= 2


def lookup_engine(plain, **options):
    from slipstream.engines.options import TransformersOptions

    return type(plain)(plain.path, options=TransformersOptions(threads=1, prompt_lookup=5, **options))


GROUNDED = "The board approved the new plan for the northern region, and revenue rose by twelve percent. "


@pytest.mark.parametrize("model", ["llama", "gemma3"])
def test_prompt_lookup_drafts_in_the_continuous_batch_and_keeps_greedy_tokens(hf, gemma3, model):
    # rows join at different steps; greedy rows draft from their own context (n-grams) and ride as segments of
    # their own rows; a sampled row does not draft; every row's tokens equal its plain greedy (or seeded) decode
    plain = hf if model == "llama" else gemma3
    engine = lookup_engine(plain, prompt_lookup_max_batch=3)
    texts = [GROUNDED * 3, "Summary: " + GROUNDED * 2, TEXTS[1], GROUNDED * 2 + "The board", TEXTS[3]]
    prompts = [engine.tokenizer.encode(t) for t in texts]
    params = [SamplingParams(max_tokens=m) for m in (30, 24, 12, 28)] + [
        SamplingParams(max_tokens=10, temperature=0.8, seed=4)]
    expected = [plain.generate([p], q)[0].token_ids for p, q in zip(prompts[:4], params[:4])]
    expected.append(list(plain.stream(prompts[4], params[4])))
    stepper = engine.stepper(fused_prefill=True)
    assert stepper.lookup == 5 and engine.stepper(fused_prefill=False).lookup == 0  # drafts need the fused step
    got, reasons = run_staggered(stepper, prompts, params, joins=[0, 0, 2, 5, 6])
    assert [got[i] for i in range(len(prompts))] == expected
    assert stepper.stats()["lookup_drafted"] > 0 and stepper.active == 0
    # a batch through generate goes through a continuous batch of its own, with the same tokens
    assert [c.token_ids for c in engine.generate(prompts[:4], SamplingParams(max_tokens=20))] == [
        plain.generate([p], SamplingParams(max_tokens=20))[0].token_ids for p in prompts[:4]]


def test_drafts_the_model_agrees_with_are_kept_and_the_rest_rejected(hf, monkeypatch):
    # A random model rarely repeats its input, so the drafts here come from an oracle: its own plain greedy
    # tokens for rows 0 and 2 (every draft token kept), the same with one token changed for rows 1 and 3 (the
    # rest of that draft rejected). The rows' tokens still equal plain greedy decoding, in fewer passes.
    from slipstream.engines.torch import stepper as module

    prompts = [hf.tokenizer.encode(t) for t in (GROUNDED, TEXTS[1], TEXTS[3], TEXTS[4])]
    params = [SamplingParams(max_tokens=24, ignore_eos=True)] * 4
    expected = [hf.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]

    def oracle(context, tokens, max_ngram=3):
        i = next(i for i, p in enumerate(prompts) if context[: len(p)] == p)
        done = len(context) - len(prompts[i])
        draft = list(expected[i][done: done + tokens])
        if i % 2 and len(draft) > 1:
            draft[1] = (draft[1] + 1) % hf.tokenizer.vocab_size
        return draft

    monkeypatch.setattr(module, "propose", oracle)
    engine = lookup_engine(hf)
    stepper = engine.stepper(fused_prefill=True)
    got, _ = run_staggered(stepper, prompts, params, joins=[0, 0, 1, 3])
    assert [got[i] for i in range(4)] == expected
    stats = stepper.stats()
    assert 0 < stats["lookup_accepted"] < stats["lookup_drafted"]
    # every pass gives each row at least two tokens once it drafts (the last row joins at step 3): plain
    # decoding would take 3 + 24 passes
    assert stats["decode_steps"] <= 3 + 24 // 2
    assert engine.lookup_stats.tokens == sum(map(len, expected)) - 4  # every token after each row's first


def test_row_groups_isolate_long_rows_and_cover_every_row_once():
    from slipstream.engines.torch.attention import row_groups

    assert row_groups([100] * 16) == [(0, 16)]
    assert row_groups([100] * 7 + [400] + [100] * 8) == [(0, 7), (7, 8), (8, 16)]
    assert row_groups([100] * 7 + [104] + [100] * 8) == [(0, 16)]  # a cut would cost more than it saves
    lengths = [100, 300, 100, 290, 100, 120, 80, 400, 5, 7, 900, 3]
    groups = row_groups(lengths, max_groups=5)
    assert len(groups) <= 5 and [r for a, b in groups for r in range(a, b)] == list(range(len(lengths)))
    cost = sum((b - a) * (max(lengths[a:b]) + 1) for a, b in groups)
    assert cost < 0.5 * len(lengths) * (max(lengths) + 1)


def test_a_fused_newcomer_gets_the_logits_of_a_plain_forward_pass(gemma3):
    # exact to float32 rounding, sliding window included (ignoring the window moves these logits by ~4)
    import torch

    running = [gemma3.tokenizer.encode(t) for t in TEXTS[:3]]
    newcomer = gemma3.tokenizer.encode(" ".join(TEXTS * 3))
    assert len(newcomer) > gemma3.model.config.sliding_window
    stepper = gemma3.stepper(fused_prefill=True)
    for i, p in enumerate(running):
        stepper.add(i, p, SamplingParams(max_tokens=30))
    for _ in range(3):
        stepper.step()
    seen = {}
    choose = stepper._choose
    stepper._choose = lambda s, logits: (seen.setdefault(s.seq_id, logits.clone()), choose(s, logits))[1]
    stepper.add(9, newcomer, SamplingParams(max_tokens=30))
    stepper.step()
    assert set(seen) == {0, 1, 2, 9}
    with torch.inference_mode():
        want = gemma3.model(input_ids=torch.tensor([newcomer])).logits[0, -1].float()
    torch.testing.assert_close(seen[9], want, atol=1e-4, rtol=1e-4)


def test_a_bfloat16_cache_holds_bfloat16_and_stays_close_to_float32(hf):
    import torch

    prompts = [hf.tokenizer.encode(t) for t in TEXTS]
    stepper = hf.stepper(kv_cache_dtype="bfloat16")
    seen = {}
    choose = stepper._choose
    stepper._choose = lambda s, logits: (seen.setdefault(s.seq_id, logits.clone()), choose(s, logits))[1]
    got, _ = run_staggered(stepper, prompts, [SamplingParams(max_tokens=12)] * len(prompts), joins=[0, 0, 2, 4, 4])
    assert stepper.cache.keys[0].dtype == stepper.cache.values[-1].dtype == torch.bfloat16
    with torch.inference_mode():
        for i, p in enumerate(prompts):  # each prompt's first distribution against a float32 forward pass
            want = torch.log_softmax(hf.model(input_ids=torch.tensor([p])).logits[0, -1].float(), -1)
            have = torch.log_softmax(seen[i], -1)
            assert float(torch.sum(want.exp() * (want - have))) < 1e-3 and int(want.argmax()) == int(have.argmax())
    expected = [hf.generate([p], SamplingParams(max_tokens=12))[0].token_ids for p in prompts]
    assert sum(got[i] == expected[i] for i in range(len(prompts))) >= 3  # rounding may flip a near-tie


def test_a_cache_dtype_other_than_the_models_needs_the_fused_step(hf):
    with pytest.raises(ValueError, match="fused step"):
        hf.stepper(kv_cache_dtype="bfloat16", fused_prefill=False)
