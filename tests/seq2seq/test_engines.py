"""The seq2seq engines against transformers' own ``generate``: greedy and beam search on transformers, and
CTranslate2's translator at float32 token for token; int8 conversions load and run."""

from __future__ import annotations

import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.errors import Unsupported
from slipstream.models.intake import import_model
from slipstream.models.tasks import task_of

SOURCES = ["The cat sat on the mat.", "A longer sentence about the history of the city of Paris and its river.",
           "He was born in 1950 .", "The game was released in Japan , and later in North America ."]
MAX = 16

pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module", params=["t5", "marian"])
def family(request, tmp_path_factory, tiny_t5_dir, tiny_marian_dir):
    """A store with the tiny model, imported, and its CTranslate2 variants of every type this CPU runs."""
    from slipstream.exporters.ctranslate2 import supported_types
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp(f"home-{request.param}"))
    source = {"t5": tiny_t5_dir, "marian": tiny_marian_dir}[request.param]
    import_model(str(source), request.param, store=store)
    for q in sorted(supported_types("cpu") & {"float32", "int8", "int8_float32", "int16"}):
        optimize(request.param, "ctranslate2", {"quantization": q}, name=f"{request.param}-ct2-{q}", store=store)
    return request.param, source, store


@pytest.fixture(scope="module")
def reference(family):
    """transformers' own ``generate`` on the model as saved (its generation config, less OPUS-MT's forced
    end token at max_length, which CTranslate2 does not force): greedy and 3 beams."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from slipstream.tokenizer import Tokenizer

    _, source_dir, _ = family
    model = AutoModelForSeq2SeqLM.from_pretrained(source_dir).eval()
    tok = Tokenizer.from_dir(source_dir)
    eos = model.generation_config.eos_token_id
    prompts = [tok.encode(s) for s in SOURCES]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [tok.pad_token_id] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    out = {}
    for beams in (1, 3):
        with torch.no_grad():
            rows = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX, do_sample=False,
                                  num_beams=beams, forced_eos_token_id=None)[:, 1:].tolist()
        out[beams] = [r[: r.index(eos)] if eos in r else r for r in rows]
    assert out[1] != out[3]  # the beams search finds other sentences here, so the beam checks mean something
    return prompts, out


def test_intake_records_seq2seq(family):
    name, _, store = family
    assert task_of(store.get(name)) == "seq2seq"
    assert task_of(store.get(f"{name}-ct2-int8")) == "seq2seq"
    assert (store.get(f"{name}-ct2-int8").path / "tokenizer" / "tokenizer.json").exists()


def test_transformers_greedy_and_beams_equal_generate(family, reference):
    from slipstream.engines.loading import open_engine

    name, _, store = family
    prompts, want = reference
    engine = open_engine(name, store=store)
    assert [engine.tokenizer.encode(s) for s in SOURCES] == prompts
    assert prompts[0][-1] in engine.tokenizer.eos_token_ids  # the source ends with </s>
    params = SamplingParams(max_tokens=MAX)
    assert [c.token_ids for c in engine.generate(prompts, params)] == want[1]
    assert [list(engine.stream(p, params)) for p in prompts] == want[1]  # one decoder step at a time
    beams = open_engine(name, store=store, beam_size=3)
    assert [c.token_ids for c in beams.generate(prompts, params)] == want[3]


def test_ctranslate2_float32_equals_transformers(family, reference):
    from slipstream.engines.loading import open_engine

    name, _, store = family
    prompts, want = reference
    params = SamplingParams(max_tokens=MAX)
    ct2 = open_engine(f"{name}-ct2-float32", store=store)
    assert type(ct2).__name__ == "CTranslate2Translator"
    assert [ct2.tokenizer.encode(s) for s in SOURCES] == prompts
    assert [c.token_ids for c in ct2.generate(prompts, params)] == want[1]
    assert [list(ct2.stream(p, params)) for p in prompts] == want[1]
    beams = open_engine(f"{name}-ct2-float32", store=store, beam_size=3)
    assert [c.token_ids for c in beams.generate(prompts, params)] == want[3]


@pytest.mark.parametrize("quantization", ["int8", "int8_float32", "int16"])
def test_quantized_conversions_load_and_run(family, quantization):
    from slipstream.engines.loading import open_engine
    from slipstream.exporters.ctranslate2 import supported_types
    from slipstream.pipeline import optimize

    name, _, store = family
    if quantization not in supported_types("cpu"):  # int16 without MKL (CTranslate2's backend on AMD CPUs)
        with pytest.raises(Unsupported, match=f"quantization '{quantization}' cannot run on cpu here"):
            optimize(name, "ctranslate2", {"quantization": quantization}, store=store)
        return
    engine = open_engine(f"{name}-ct2-{quantization}", store=store)
    assert engine.info().compute_type in (quantization, f"{quantization}_float32")  # int8: int8_float32 on a CPU
    prompts = [engine.tokenizer.encode(s) for s in SOURCES]
    done = engine.generate(prompts, SamplingParams(max_tokens=MAX))
    assert all(c.token_ids and len(c.token_ids) <= MAX for c in done)
    if quantization == "int8":  # sampling goes through the translator too
        sampled = engine.generate(prompts[:1], SamplingParams(max_tokens=8, temperature=1.0, seed=1))
        assert 1 <= len(sampled[0].token_ids) <= 8


def test_scoring_is_refused_in_one_line(family):
    from slipstream.engines.loading import open_engine

    name, _, store = family
    for variant in (name, f"{name}-ct2-float32"):
        engine = open_engine(variant, store=store)
        with pytest.raises(Unsupported, match="encoder-decoder model: score and logprobs"):
            engine.score([[1, 2, 3]])


def test_a_causal_lm_technique_or_engine_is_refused_in_one_line(family):
    from slipstream.engines.loading import open_engine
    from slipstream.pipeline import optimize

    name, _, store = family
    with pytest.raises(Unsupported, match=f"technique 'smoothquant' takes causal-lm models; '{name}' is a seq2seq"):
        optimize(name, "smoothquant", store=store)
    with pytest.raises(Unsupported, match=f"engine 'vllm' cannot run '{name}' \\(seq2seq, hf\\)"):
        open_engine(name, engine="vllm", store=store)
