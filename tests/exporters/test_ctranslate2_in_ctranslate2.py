"""CTranslate2 variants in a plain ``ctranslate2.Generator``, tokenized by the tokenizer files the variant
directory carries: the same greedy tokens as slipstream's CTranslate2 engine, with no slipstream code on
the inference path."""

from __future__ import annotations

import pytest

from tests.quant_checks import PROMPTS

ctranslate2 = pytest.importorskip("ctranslate2", reason="the ctranslate2 extra is not installed")


def plain_greedy(directory, prompt: str, max_tokens: int) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory / "tokenizer")
    generator = ctranslate2.Generator(str(directory), device="cpu", intra_threads=1)
    tokens = tok.convert_ids_to_tokens(tok(prompt)["input_ids"])
    result = generator.generate_batch([tokens], max_length=max_tokens, sampling_topk=1,
                                      include_prompt_in_result=False, end_token=tok.eos_token)[0]
    return result.sequences_ids[0]


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_plain_generator_gives_slipstreams_greedy_tokens(session_store, quantization):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    variant = session_store.get(f"tiny-ct2-{quantization}")
    assert {"model.bin", "config.json"} <= {p.name for p in variant.path.iterdir()}
    assert (variant.path / "tokenizer" / "tokenizer.json").exists()
    engine = open_engine(variant, store=session_store, threads=1)
    for prompt in PROMPTS:
        ours = engine.generate([engine.tokenizer.encode(prompt)], SamplingParams(max_tokens=16))[0]
        assert len(ours.token_ids) > 0
        assert plain_greedy(variant.path, prompt, 16) == ours.token_ids
