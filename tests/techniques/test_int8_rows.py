"""int8-rows: GPTQ onto CTranslate2 int8's per-row grid, which CTranslate2's own conversion then keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slipstream.errors import InvalidConfig
from slipstream.techniques.registry import make_config


def _ct2_int8(weight: np.ndarray) -> np.ndarray:
    """CTranslate2's own int8 conversion of a linear's weights, dequantized."""
    from ctranslate2.specs import common_spec, model_spec

    spec = common_spec.LinearSpec()
    spec.weight = model_spec.NumpyVariable(weight.astype(np.float32))
    spec.bias = model_spec.NumpyVariable(np.zeros(weight.shape[0], np.float32))
    spec.optimize(quantization="int8")
    return spec.weight.numpy().astype(np.float32) / spec.weight_scale.numpy()[:, None]


def _correlated_layer(rows=96, columns=256, tokens=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, 32, generator=g) @ torch.randn(32, columns, generator=g)  # correlated inputs
    x += 0.1 * torch.randn(tokens, columns, generator=g)
    x[:, :4] *= 20  # a few outlier channels, as trained models have
    w = torch.randn(rows, columns, generator=g) * 0.05
    return w, x.T @ x / tokens


def test_gptq_rows_beats_rounding_to_nearest_and_ctranslate2_keeps_it():
    pytest.importorskip("ctranslate2")
    from slipstream.techniques.quantize.int8_rows import gptq_rows, output_error
    from slipstream.techniques.quantize.int8_sensitivity import fake_int8

    w, h = _correlated_layer()
    rounded, figures = gptq_rows(w, h, block_size=64, chunk_rows=40)  # several row chunks and column blocks
    rtn = fake_int8(w, dim=1)
    assert output_error(rounded - w, h) < 0.5 * output_error(rtn - w, h)
    np.testing.assert_allclose(figures["error_gptq"], output_error(rounded - w, h), rtol=1e-3)
    np.testing.assert_allclose(figures["error_rtn"], output_error(rtn - w, h), rtol=1e-3)
    np.testing.assert_allclose(_ct2_int8(w.numpy()), rtn.numpy(), rtol=1e-6, atol=1e-7)  # the grid is CT2's
    ct2 = _ct2_int8(rounded.numpy())  # CTranslate2 converting GPTQ's weights stores exactly them
    np.testing.assert_allclose(ct2, rounded.numpy(), rtol=1e-6, atol=1e-7)
    assert figures["nearest_rows"] < w.shape[0] // 4
    moved = (rounded - rtn).abs() > 1e-7
    assert moved.any(dim=1).float().mean() > 0.5  # most rows are not simply rounded to nearest


def test_every_row_keeps_its_scale_and_none_is_worse_than_rounding_to_nearest():
    """GPTQ's updates can move a row's largest weight below code 127, which would change the scale
    CTranslate2 derives: such rows get their largest weight pinned back; and a row where GPTQ ends up
    no closer than rounding to nearest is rounded to nearest."""
    from slipstream.techniques.quantize.int8_rows import gptq_rows, row_errors
    from slipstream.techniques.quantize.int8_sensitivity import fake_int8

    w, h = _correlated_layer(rows=64, columns=128, seed=1)
    w[:, 5] = w.abs().amax(1) * 0.999  # a second near-maximum in every row, in a column GPTQ updates
    rounded, figures = gptq_rows(w, h)
    scale = w.abs().amax(1, keepdim=True) / 127
    codes = rounded / scale
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)  # on the grid ...
    assert torch.all(codes.abs().amax(1).round() == 127)  # ... with the row's scale
    assert torch.all(row_errors(rounded - w, h) <= row_errors(fake_int8(w, dim=1) - w, h) * (1 + 1e-6))
    assert figures["error_gptq"] < figures["error_rtn"]


def test_int8_rows_then_ctranslate2_int8_loses_less(tiny_llama_dir, store):
    """In float, the GPTQ-rounded weights stay closer to the original than CTranslate2's own rounding
    would; converted to CTranslate2 int8 (whose per-token int8 inputs are most of a random model's
    loss) the variant loses less than the plain conversion."""
    pytest.importorskip("ctranslate2")
    from slipstream.engines.loading import open_engine
    from slipstream.evaluation.run import EvalSettings, evaluate
    from slipstream.models.intake import import_model
    from slipstream.pipeline import build
    from slipstream.store.manifest import Manifest
    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize.int8_sensitivity import fake_int8

    import_model(str(tiny_llama_dir), "tiny", store=store)
    calib = {"samples": 8, "sequence_length": 64}
    gptq = build("tiny", [make_config("int8-rows", calib)], store=store)
    assert gptq.name == "tiny-gptq-rows"
    facts = Manifest.read(Path(store.get(gptq.name).path)).extra["facts"]["int8_rows"]
    assert facts["output_error_gptq"] < 0.8 * facts["output_error_rtn"], facts
    assert facts["head"] and facts["rows_left_to_nearest"] < 0.05 * facts["rows"], facts

    from slipstream.evaluation.data import text_set

    reference = open_engine("tiny", store=store, threads=1)
    ids = [reference.tokenizer.encode(text_set("wikitext2"), add_special_tokens=False)[:256]]
    ref = torch.tensor(reference.logprobs(ids)[0])
    nearest = load_model(tiny_llama_dir)
    with torch.no_grad():
        for m in nearest.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(fake_int8(m.weight, dim=1))
        rtn = torch.log_softmax(nearest(input_ids=torch.tensor(ids)).logits[0].float(), -1)
    ours = torch.tensor(open_engine(gptq, store=store, threads=1).logprobs(ids)[0])
    kl = {name: float((ref.exp() * (ref - lp)).sum(-1).mean()) for name, lp in (("rtn", rtn), ("gptq", ours))}
    assert kl["gptq"] < 0.9 * kl["rtn"], (kl, facts)

    settings = EvalSettings(window=128, stride=128, max_tokens=2048, threads=1)
    for label, steps in (("plain", []), ("gptq", [make_config("int8-rows", calib)])):
        variant = build("tiny", steps + [make_config("ctranslate2", {"quantization": "int8"})], store=store)
        kl[label] = evaluate(variant.name, reference="tiny", settings=settings, store=store).metrics["kl_mean"]
    assert kl["gptq"] < kl["plain"], kl


def test_a_tied_head_is_left_alone_and_readers_of_one_input_share_its_hessian(tiny_gemma3_dir):
    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize.int8_rows import hessians, targets

    model = load_model(tiny_gemma3_dir)
    assert model.config.tie_word_embeddings
    linears = targets(model)
    assert "lm_head" not in linears and any(n.endswith("down_proj") for n in linears)
    g = torch.Generator().manual_seed(0)
    h = hessians(model, linears, [torch.randint(3, model.config.vocab_size, (32,), generator=g).tolist()])
    attn, mlp = "model.layers.0.self_attn.", "model.layers.0.mlp."
    assert h[attn + "q_proj"] is h[attn + "k_proj"] is h[attn + "v_proj"]
    assert h[mlp + "gate_proj"] is h[mlp + "up_proj"] and h[mlp + "down_proj"] is not h[mlp + "up_proj"]
    assert set(h) == set(linears)


def test_bad_settings():
    with pytest.raises(InvalidConfig, match="dampening"):
        make_config("int8-rows", {"dampening": "0"})
    with pytest.raises(InvalidConfig, match="evaluation text"):
        make_config("int8-rows", {"calibration": "wikitext2"})
