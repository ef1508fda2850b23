"""SmoothQuant smoothing is exact in full precision and makes CTranslate2 int8 lose less."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slipstream.errors import InvalidConfig
from slipstream.techniques.registry import make_config


def _with_outliers(src, dest):
    """The tiny model, rewritten (exactly) so a few input channels of every linear carry large
    activations, as trained LLMs do: RMSNorm weights x40 on 3 channels, matching weights /40."""
    from slipstream.techniques.hf_io import load_model, save_model

    model = load_model(src)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm, linears in ((layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj,
                                                             layer.self_attn.v_proj]),
                                  (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj])):
                norm.weight[:3] *= 40
                for lin in linears:
                    lin.weight[:, :3] /= 40
    save_model(model, src, dest)
    return dest


@pytest.fixture(scope="module")
def outlier_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("sq-home"))
    src = _with_outliers(tiny_llama_dir, tmp_path_factory.mktemp("outliers") / "model")
    import_model(str(src), "outl", store=store)
    return store


def test_smoothing_leaves_the_function_unchanged(outlier_store):
    from slipstream.engines.loading import open_engine
    from slipstream.pipeline import optimize

    smoothed = optimize("outl", "smoothquant", {"samples": 8, "sequence_length": 64}, store=outlier_store)
    assert smoothed.name == "outl-sq0.7" and smoothed.format == "hf"
    a = open_engine("outl", store=outlier_store, threads=1)
    b = open_engine(smoothed, store=outlier_store, threads=1)
    ids = [a.tokenizer.encode("The game was released in Japan in 2011 and sold")]
    np.testing.assert_allclose(a.logprobs(ids)[0], b.logprobs(ids)[0], atol=2e-4)


def test_smoothing_a_gemma3_leaves_the_function_unchanged(store, tiny_gemma3_dir):
    """Gemma's norms scale by ``1 + weight`` and its MLP reads ``pre_feedforward_layernorm`` (its
    ``post_attention_layernorm`` feeds the residual): smoothing must divide the right norm, offset included."""
    from slipstream.engines.loading import open_engine
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize

    import_model(str(tiny_gemma3_dir), "gem", store=store)
    smoothed = optimize("gem", "smoothquant", {"samples": 8, "sequence_length": 64, "alpha": 0.8}, store=store)
    a = open_engine("gem", store=store, threads=1)
    b = open_engine(smoothed, store=store, threads=1)
    ids = [a.tokenizer.encode("The game was released in Japan in 2011 and sold")]
    np.testing.assert_allclose(a.logprobs(ids)[0], b.logprobs(ids)[0], atol=2e-4)
    from safetensors.numpy import load_file

    before, after = (load_file(str(next(Path(m.path).glob("*.safetensors"))))
                     for m in (store.get("gem"), store.get(smoothed.name)))
    key = "model.layers.0.pre_feedforward_layernorm.weight"
    assert not np.allclose(before[key], after[key])  # it did smooth


def test_smoothing_reduces_int8_error(outlier_store):
    pytest.importorskip("ctranslate2")
    from slipstream.evaluation.run import EvalSettings, evaluate
    from slipstream.pipeline import build

    plain = build("outl", [make_config("ctranslate2", {"quantization": "int8"})], store=outlier_store)
    smooth = build("outl", [make_config("smoothquant", {"samples": 8, "sequence_length": 64}),
                            make_config("ctranslate2", {"quantization": "int8"})], store=outlier_store)
    settings = EvalSettings(window=128, stride=128, max_tokens=2048, threads=1)
    kl_plain = evaluate(plain.name, reference="outl", settings=settings, store=outlier_store).metrics["kl_mean"]
    kl_smooth = evaluate(smooth.name, reference="outl", settings=settings, store=outlier_store).metrics["kl_mean"]
    assert kl_smooth < 0.5 * kl_plain, (kl_smooth, kl_plain)


def test_recipe_reuses_finished_steps(outlier_store):
    from slipstream.pipeline import build

    steps = [make_config("smoothquant", {"samples": 8, "sequence_length": 64})]
    first = build("outl", steps, store=outlier_store)
    before = len(outlier_store.list())
    again = build("outl", steps, store=outlier_store)
    assert again.name == first.name and len(outlier_store.list()) == before


def test_bad_settings():
    with pytest.raises(InvalidConfig, match="alpha must be in"):
        make_config("smoothquant", {"alpha": "1.5"})
    with pytest.raises(InvalidConfig, match="evaluation text"):
        make_config("smoothquant", {"calibration": "wikitext2"})
