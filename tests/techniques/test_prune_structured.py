"""Structured pruning makes a smaller dense model that transformers and CTranslate2 both run."""

from __future__ import annotations

import json

import pytest

from slipstream.errors import InvalidConfig, Unsupported
from slipstream.store.manifest import Manifest
from slipstream.techniques.prune.structured import StructuredPrune, channels_to_keep, head_plan

FEW = {"samples": 2, "sequence_length": 64}


@pytest.fixture(scope="module")
def pruned_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from tests.conftest import build_tiny_llama

    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("home"))
    deep = build_tiny_llama(tmp_path_factory.mktemp("deep") / "model", seed=1, layers=4)
    import_model(str(tiny_llama_dir), "tiny", store=store)
    import_model(str(deep), "deep", store=store)
    return store


def _greedy_hf(path, prompt, n=12):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("options, check", [
    ({"layers": 0.5}, lambda c: c["num_hidden_layers"] == 2),
    ({"layers": 0.0, "mlp": 0.25}, lambda c: c["intermediate_size"] == 96),
    ({"layers": 0.0, "heads": 0.5}, lambda c: (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"])
     == (2, 2, 16)),
    ({"layers": 0.25, "mlp": 0.5, "heads": 0.5}, lambda c: (c["num_hidden_layers"], c["intermediate_size"],
                                                            c["num_attention_heads"]) == (3, 64, 2)),
])
def test_structured_prune_is_smaller_and_runs_in_transformers_and_ctranslate2(pruned_store, options, check):
    pytest.importorskip("ctranslate2")
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.pipeline import optimize

    variant = optimize("deep", "prune-structured", options | FEW, store=pruned_store)
    parent = pruned_store.get("deep")
    config = json.loads((variant.path / "config.json").read_text())
    assert check(config), config
    assert variant.parameters < parent.parameters
    assert variant.size_bytes < parent.size_bytes
    facts = Manifest.read(variant.path).extra["facts"]
    assert facts["parameters"] == variant.parameters and facts["parameter_ratio"] < 1
    # loads in transformers; CTranslate2 float32 gives the same greedy tokens
    ct2 = optimize(variant.name, "ctranslate2", {"quantization": "float32"}, store=pruned_store)
    prompt = [1, 45, 100, 200, 33, 7]
    hf_tokens = _greedy_hf(variant.path, prompt)
    engine = open_engine(ct2.name, store=pruned_store)
    ct2_tokens = engine.generate([prompt], SamplingParams(max_tokens=12, ignore_eos=True))[0].token_ids
    assert list(ct2_tokens) == hf_tokens


def test_layer_ranking_drops_the_most_similar_layers(pruned_store):
    from slipstream.pipeline import optimize

    variant = optimize("deep", "prune-structured", {"layers": 0.25} | FEW, store=pruned_store, name="deep-l25")
    layers = Manifest.read(variant.path).extra["facts"]["layers"]
    sim = layers["similarity"]
    assert layers["dropped"] == [max(range(4), key=lambda i: sim[i])]


def test_head_pruning_keeps_grouped_query_layout():
    assert head_plan(9, 3, 1 / 3) == (6, 3)  # SmolLM2: 3 groups of 3 -> 3 groups of 2
    assert head_plan(8, 8, 0.25) == (6, 6)  # multi-head: whole heads with their key/value heads
    with pytest.raises(InvalidConfig, match="attention layout"):
        head_plan(4, 2, 0.9)  # groups of 2 cannot lose 90%
    with pytest.raises(InvalidConfig, match="attention layout"):
        head_plan(9, 3, 0.1)  # rounds to removing nothing from a group of 3
    with pytest.raises(Unsupported):
        head_plan(9, 2, 0.3)
    assert channels_to_keep(1536, 0.25) == 1152


def test_bad_fractions_are_refused():
    with pytest.raises(InvalidConfig, match=r"in \[0, 1\)"):
        StructuredPrune(layers=1.0)
    with pytest.raises(InvalidConfig, match=r"in \[0, 1\)"):
        StructuredPrune(mlp=-0.1)
    with pytest.raises(InvalidConfig, match="nothing to prune"):
        StructuredPrune(layers=0.0)


def test_qwen2_shape(tmp_path):
    """Qwen2 (attention biases, layer_types) prunes to a model transformers loads with the same outputs."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from slipstream.techniques.prune.structured import prune_model

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    model.eval()
    batches = [torch.randint(0, 256, (1, 32)) for _ in range(2)]
    prune_model(model, StructuredPrune(layers=0.25, mlp=0.25, heads=0.5, **FEW), batches)
    with torch.no_grad():
        expected = model(input_ids=batches[0]).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 3 and reloaded.config.num_attention_heads == 2
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=batches[0]).logits, expected, atol=1e-5)
