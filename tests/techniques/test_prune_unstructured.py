"""Unstructured and 2:4 pruning: the measured sparsity is the one asked for, 2:4 holds, nothing shrinks."""

from __future__ import annotations

import pytest

from slipstream.errors import InvalidConfig
from slipstream.store.manifest import Manifest
from slipstream.techniques.prune.unstructured import UnstructuredPrune

FEW = {"samples": 4, "sequence_length": 64}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.5), ("unstructured", 0.3), ("2:4", 0.5)])
def test_measured_sparsity_is_the_requested_one(tiny_store, method, structure, sparsity):
    if method != "magnitude":
        pytest.importorskip("llmcompressor")
    from slipstream.pipeline import optimize

    options = {"method": method, "sparsity": sparsity, "structure": structure} | FEW
    variant = optimize("tiny", "prune-unstructured", options, store=tiny_store)
    facts = Manifest.read(variant.path).extra["facts"]
    # Wanda and SparseGPT prune per row: int(row * sparsity) weights, within one weight of the request
    assert facts["sparsity"] == pytest.approx(sparsity, abs=1 / 64)
    assert facts["layer_sparsity_min"] == pytest.approx(sparsity, abs=1e-2)
    assert facts["speedup_engines"] == [] and "no engine" in facts["engines"]
    # the saved weights hold the zeros (counted again from the file), lm_head and embeddings untouched
    weights = _weights(variant.path)
    pruned = {k: w for k, w in weights.items() if ".layers." in k and k.endswith("proj.weight")}
    zeros = sum(int((w == 0).sum()) for w in pruned.values()) / sum(w.numel() for w in pruned.values())
    assert zeros == pytest.approx(facts["sparsity"], abs=1e-6)
    assert float((weights["lm_head.weight"] == 0).float().mean()) < 0.01
    if structure == "2:4":
        assert facts["two_four_groups_valid"] == 1.0
        for w in pruned.values():
            assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2).all())
    # saved dense: the size is the parent's
    assert variant.size_bytes == pytest.approx(tiny_store.get("tiny").size_bytes, rel=0.02)


def test_wanda_variant_converts_to_ctranslate2(tiny_store):
    pytest.importorskip("llmcompressor")
    pytest.importorskip("ctranslate2")
    from slipstream.pipeline import build
    from slipstream.techniques.registry import make_config

    steps = [make_config("prune-unstructured", {"method": "wanda", "sparsity": 0.5} | FEW),
             make_config("ctranslate2", {"quantization": "int8"})]
    variant = build("tiny", steps, store=tiny_store)
    assert (variant.path / "model.bin").exists()


def test_bad_sparsity_is_refused():
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(InvalidConfig, match=r"sparsity must be in \(0, 1\)"):
            UnstructuredPrune(sparsity=bad)
    with pytest.raises(InvalidConfig, match="2:4 means 50%"):
        UnstructuredPrune(sparsity=0.6, structure="2:4")
    with pytest.raises(InvalidConfig):
        UnstructuredPrune(method="random")
