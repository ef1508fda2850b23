"""W8A8 int8 checkpoints multiplied in int8 (``slipstream.engines.torch.kernels.int8_gemm``): each layer's numbers
equal compressed-tensors' own float path, the model stays int8 (no decompression), its scores and
greedy tokens match the float path, a continuous batch equals one-by-one generation, and checkpoints of
other schemes are left alone."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engines.test_stepping import TEXTS, run_staggered

pytest.importorskip("llmcompressor", reason="the llmcompressor extra is not installed")

CAL = {"samples": 16, "sequence_length": 128, "weights": "rtn", "keep_float": ""}  # every linear in int8


@pytest.fixture(scope="module")
def w8a8_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("int8-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    optimize("tiny", "w8a8", CAL, store=store)
    optimize("tiny", "rtn", {"bits": 4, "group_size": 32}, store=store)
    return store


@pytest.fixture(scope="module")
def pair(w8a8_store):
    from slipstream.engines.loading import open_engine

    name = "tiny-w8a8-sq0.8-rtn-keep-none"
    return (open_engine(name, store=w8a8_store, threads=1, int8_gemm=False),
            open_engine(name, store=w8a8_store, threads=1))


def test_each_layer_equals_compressed_tensors_float_path(w8a8_store):
    import torch
    from transformers import AutoModelForCausalLM

    from slipstream.engines.torch.kernels.int8_gemm import int8_forward, use_int8_gemm

    path = w8a8_store.get("tiny-w8a8-sq0.8-rtn-keep-none").path
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert use_int8_gemm(model) == 14  # 2 layers x 7 projections; lm_head stays float
    with torch.inference_mode():
        reference(torch.tensor([[1, 2, 3]]))  # compressed-tensors decompresses on the first forward
    checked = 0
    for (name, ref), mod in zip(reference.named_modules(), model.modules()):
        if mod.forward.__func__ is not int8_forward:
            continue
        assert mod.weight.dtype == torch.int8 and ref.weight.dtype == torch.float32
        xin = torch.randn(2, 5, mod.in_features) * 3
        xin[0, 1] = 0.0  # a zero token: its scale is eps, not a division by zero
        xin[1, 2, 7] = 400.0  # an outlier token: only its own scale grows
        with torch.inference_mode():
            want, got = ref(xin), mod(xin)
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * float(want.abs().max()), msg=name)
        assert float(got[0, 1].abs().max()) == 0.0
        checked += 1
    assert checked == 14


def test_engine_keeps_int8_weights_and_matches_the_float_path(pair):
    import torch

    from slipstream.engines.protocol import SamplingParams

    floats, int8 = pair
    assert int8.info().details["int8_gemm_layers"] == 14
    assert int8.info().details["gemm"] == "onednn"  # the float head: see slipstream.engines.torch.kernels.blas
    assert int8.info().compute_type == "int8_float32" and floats.info().compute_type == "float32"
    assert "int8_gemm_layers" not in floats.info().details
    prompts = [int8.tokenizer.encode(t) for t in TEXTS]
    a, b = floats.logprobs(prompts), int8.logprobs(prompts)
    kl = np.mean([float((np.exp(p) * (p - q)).sum(-1).mean()) for p, q in zip(a, b)])
    assert kl < 1e-4  # rounding flips only; int8 against the original is ~1e-2 here
    layer = int8.model.model.layers[0].mlp.down_proj
    assert layer.weight.dtype == torch.int8  # never decompressed
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    same = sum(x.token_ids == y.token_ids for x, y in zip(floats.generate(prompts, params),
                                                         int8.generate(prompts, params)))
    assert same >= len(prompts) - 1  # a random tiny model's near-ties may flip one


def test_continuous_batch_in_int8_equals_generate(pair):
    from slipstream.engines.protocol import SamplingParams

    _, int8 = pair
    prompts = [int8.tokenizer.encode(t) for t in TEXTS]
    params = [SamplingParams(max_tokens=m) for m in (20, 6, 30, 12, 16)]
    expected = [int8.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    got, _ = run_staggered(int8.stepper(), prompts, params, joins=[0, 0, 3, 7, 7])
    assert [got[i] for i in range(5)] == expected


def test_other_schemes_are_left_to_compressed_tensors(w8a8_store):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine("tiny-rtn-w4g32", store=w8a8_store, threads=1)
    assert "int8_gemm_layers" not in engine.info().details
    out = engine.generate([engine.tokenizer.encode(TEXTS[0])], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(out[0].token_ids) == 4


def test_without_an_int8_dot_product_the_float_path_stays(w8a8_store, monkeypatch):
    """oneDNN's int8 kernels saturate without VNNI (measured with ONEDNN_MAX_CPU_ISA=AVX2: sums off by
    85,001 on random int8 data), so such CPUs keep compressed-tensors' float path."""
    import torch
    from transformers import AutoModelForCausalLM

    from slipstream.engines.torch.kernels import int8_gemm

    monkeypatch.setattr("slipstream.machine.has_int8_dot_product", lambda: False)
    assert "saturate" in int8_gemm.available()
    model = AutoModelForCausalLM.from_pretrained(w8a8_store.get("tiny-w8a8-sq0.8-rtn-keep-none").path, dtype=torch.float32)
    assert int8_gemm.use_int8_gemm(model) == 0
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]))
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.float32  # decompressed as before


def test_the_float_path_on_request(w8a8_store, monkeypatch):
    """``SLIPSTREAM_INT8_GEMM=0``, read at the CLI's edge, is the engine option ``int8_gemm=off``."""
    from slipstream.cli.engine_options import engine_options
    from slipstream.engines.loading import open_engine

    monkeypatch.setenv("SLIPSTREAM_INT8_GEMM", "0")
    options = engine_options("transformers")
    assert options == {"int8_gemm": "off"}
    engine = open_engine("tiny-w8a8-sq0.8-rtn-keep-none", store=w8a8_store, threads=1, options=options)
    assert "int8_gemm_layers" not in engine.info().details and engine.info().details["gemm"] != "onednn"
