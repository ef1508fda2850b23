"""SmoothQuant smoothing is exact in full precision and makes CTranslate2 int8 lose less."""

from __future__ import annotations

import json
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


def test_auto_alpha_is_exact_and_loses_no_more_than_a_fixed_one(outlier_store):
    """alpha=auto smooths each group at its own alpha: still exact in full precision, the choice recorded
    per group, and CTranslate2's int8 after it loses no more than after the fixed default."""
    pytest.importorskip("ctranslate2")
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation.run import EvalSettings, evaluate
    from slipstream.pipeline import build

    calib = {"samples": 8, "sequence_length": 64}
    auto = build("outl", [make_config("smoothquant", calib | {"alpha": "auto", "search_samples": 4})],
                 store=outlier_store)
    assert auto.name == "outl-sq-auto-n4"
    a, b = open_engine("outl", store=outlier_store, threads=1), open_engine(auto, store=outlier_store, threads=1)
    ids = [a.tokenizer.encode("The game was released in Japan in 2011 and sold")]
    np.testing.assert_allclose(a.logprobs(ids)[0], b.logprobs(ids)[0], atol=2e-4)
    from slipstream.store.manifest import Manifest

    chosen = Manifest.read(Path(outlier_store.get(auto.name).path)).extra["facts"]["smoothquant_auto"]["groups"]
    config = json.loads((Path(outlier_store.get("outl").path) / "config.json").read_text())
    assert len(chosen) == 4 * config["num_hidden_layers"]
    for name, g in chosen.items():
        best = min(g["relative_error"].values())
        assert g["relative_error"][str(g["alpha"])] == best
        if "input_layernorm" in name:  # x40 outliers on 3 channels: smoothing them pays
            assert g["alpha"] != "none" and best < 0.5 * g["relative_error"]["none"], (name, g)

    settings = EvalSettings(window=128, stride=128, max_tokens=2048, threads=1)
    kl = {}
    for alpha in (0.7, "auto"):
        extra = {"search_samples": 4} if alpha == "auto" else {}
        variant = build("outl", [make_config("smoothquant", calib | {"alpha": alpha} | extra),
                                 make_config("ctranslate2", {"quantization": "int8"})], store=outlier_store)
        kl[alpha] = evaluate(variant.name, reference="outl", settings=settings, store=outlier_store).metrics["kl_mean"]
    assert kl["auto"] <= 1.05 * kl[0.7], kl


def test_search_finds_the_outliers_a_down_projection_reads(tiny_llama_dir):
    """A model rewritten exactly so that 4 channels of each down projection's input are 60x the rest:
    the search smooths that group, to a fraction of the unsmoothed int8 error."""
    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize.smoothquant import activation_maxima, search_alphas, smoothing_groups

    model = load_model(tiny_llama_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[:4] *= 60
            layer.mlp.down_proj.weight[:, :4] /= 60
    g = torch.Generator().manual_seed(0)
    samples = [torch.randint(3, model.config.vocab_size, (64,), generator=g).tolist() for _ in range(4)]
    groups = smoothing_groups(model)
    maxima = activation_maxima(model, groups, samples)
    chosen, relative = search_alphas(model, groups, maxima, samples)
    for group, alpha, row in zip(groups, chosen, relative):
        if group.name.endswith("up_proj->down_proj"):  # row[0]: no smoothing
            assert alpha is not None and row[0] > 5 * min(row), (group.name, row)


def test_auto_smoothing_of_a_tied_head_is_exact(store, tiny_gemma3_dir):
    """``lm_head=true`` unties Gemma's head from its embedding and smooths the final norm into it: the
    function is unchanged, and the head's alpha is chosen with the others."""
    from slipstream.engines.loading import open_engine
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store.manifest import Manifest

    import_model(str(tiny_gemma3_dir), "gem", store=store)
    smoothed = optimize("gem", "smoothquant", {"samples": 4, "sequence_length": 64, "alpha": "auto",
                                               "search_samples": 2, "lm_head": True}, store=store)
    assert smoothed.name == "gem-sq-auto-n2-head"
    a, b = open_engine("gem", store=store, threads=1), open_engine(smoothed, store=store, threads=1)
    ids = [a.tokenizer.encode("The game was released in Japan in 2011 and sold")]
    np.testing.assert_allclose(a.logprobs(ids)[0], b.logprobs(ids)[0], atol=2e-4)
    groups = Manifest.read(Path(store.get(smoothed.name).path)).extra["facts"]["smoothquant_auto"]["groups"]
    assert "norm->lm_head" in groups


def test_a_head_is_searched_on_a_sample_of_its_rows(tiny_llama_dir, monkeypatch):
    """Past SEARCH_ROWS output rows (a large vocabulary) the search measures a fixed sample of them:
    the relative errors stay close to those over every row."""
    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize import smoothquant

    model = load_model(tiny_llama_dir)
    g = torch.Generator().manual_seed(0)
    samples = [torch.randint(3, model.config.vocab_size, (64,), generator=g).tolist() for _ in range(2)]
    head = smoothquant.smoothing_groups(model, lm_head=True)[-1:]
    maxima = smoothquant.activation_maxima(model, head, samples)
    _, every = smoothquant.search_alphas(model, head, maxima, samples)
    monkeypatch.setattr(smoothquant, "SEARCH_ROWS", model.config.vocab_size // 4)
    _, sampled = smoothquant.search_alphas(model, head, maxima, samples)
    assert sampled[0] != every[0]  # a different estimate ...
    np.testing.assert_allclose(sampled[0], every[0], rtol=0.25)  # ... of the same errors


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
    with pytest.raises(InvalidConfig, match="alpha=auto only"):
        make_config("smoothquant", {"search_samples": "4"})
    with pytest.raises(InvalidConfig, match="search_samples must be >= 1"):
        make_config("smoothquant", {"alpha": "auto", "search_samples": "0"})
    assert make_config("smoothquant", {"alpha": "auto"}).slug() == "sq-auto"


def test_activation_maxima_are_measured_once_per_model_and_shared(outlier_store, monkeypatch):
    # A second alpha, and the head as well, on the same calibration set read the maxima the first measured
    # (kept in the store by the model's digest); what they make equals what a fresh measurement makes.
    import shutil

    from safetensors.torch import load_file

    from slipstream.pipeline import optimize
    from slipstream.store.manifest import Manifest
    from slipstream.techniques.quantize import smoothquant

    calls = []
    real = smoothquant.activation_maxima
    monkeypatch.setattr(smoothquant, "activation_maxima", lambda *a: (calls.append(len(a[1])), real(*a))[1])
    opts = {"samples": 3, "sequence_length": 40}
    first = optimize("outl", "smoothquant", opts | {"alpha": 0.5}, name="outl-shared-a", store=outlier_store)
    second = optimize("outl", "smoothquant", opts | {"alpha": 0.3, "lm_head": True}, name="outl-shared-b",
                      store=outlier_store)
    assert len(calls) == 1  # measured once, every group and the head's input together
    facts = [Manifest.read(v.path).extra["facts"] for v in (first, second)]
    assert [f["calibration_statistics"] for f in facts] == ["measured", "read"]
    assert list((outlier_store.home / "cache" / "calibration").glob("smoothquant-maxima-*.pt"))

    shutil.rmtree(outlier_store.home / "cache" / "calibration")
    fresh = optimize("outl", "smoothquant", opts | {"alpha": 0.3, "lm_head": True}, name="outl-shared-c",
                     store=outlier_store)
    assert len(calls) == 2 and Manifest.read(fresh.path).extra["facts"]["calibration_statistics"] == "measured"
    got, want = (load_file(next(Path(v.path).glob("*.safetensors"))) for v in (second, fresh))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
