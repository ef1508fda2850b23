"""The transformers engine's float32 linear layers through oneDNN with reordered weights
(``gemm="onednn"``): the same numbers and greedy tokens as PyTorch's own product, one by one and in a
continuous batch; weights tied to the embeddings are copied, untied ones released; and when auto takes it."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.torch.kernels import blas
from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.errors import Unsupported
from tests.engines.test_stepping import TEXTS, run_staggered

pytestmark = pytest.mark.skipif(not blas.onednn_available(), reason="this PyTorch has no oneDNN")


@pytest.fixture(scope="module")
def pair(session_store):
    return (open_engine("tiny", store=session_store, threads=1, gemm="torch"),
            open_engine("tiny", store=session_store, threads=1, gemm="onednn"))


def test_same_numbers_and_tokens_as_torch(pair):
    torch_gemm, onednn = pair
    assert onednn.info().details["gemm"] == "onednn"
    prompts = [torch_gemm.tokenizer.encode(t) for t in TEXTS]
    for a, b in zip(torch_gemm.logprobs(prompts), onednn.logprobs(prompts)):
        np.testing.assert_allclose(a, b, atol=2e-4)
    params = SamplingParams(max_tokens=16)
    assert [c.token_ids for c in torch_gemm.generate(prompts, params)] == \
        [c.token_ids for c in onednn.generate(prompts, params)]


def test_continuous_batch_through_onednn_equals_generate(pair):
    _, onednn = pair
    prompts = [onednn.tokenizer.encode(t) for t in TEXTS]
    params = [SamplingParams(max_tokens=m) for m in (20, 6, 30, 12, 16)]
    expected = [onednn.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    got, _ = run_staggered(onednn.stepper(), prompts, params, joins=[0, 0, 3, 7, 7])
    assert [got[i] for i in range(5)] == expected


def test_untied_weights_are_released_and_tied_ones_kept(pair):
    import torch

    torch_gemm, onednn = pair
    layers = [m for m in onednn.model.modules() if hasattr(m, "_onednn_weight")]
    assert len(layers) == len([m for m in torch_gemm.model.modules() if type(m) is torch.nn.Linear])
    embed = onednn.model.get_input_embeddings().weight
    for m in layers:
        tied = m.weight.data_ptr() == embed.data_ptr()
        assert tied or m.weight.numel() == 0  # no second float copy of an untied weight
    torch.testing.assert_close(embed, torch_gemm.model.get_input_embeddings().weight)


def test_auto_takes_onednn_for_the_float_layers_of_an_int8_model():
    assert blas.resolve("auto", "cpu", "float32", threads=1, int8_model=True) == "onednn"
    assert blas.resolve("auto", "cpu", "float32", threads=1, int8_model=False) in ("torch", "openblas")
    assert blas.resolve("onednn", "cpu", "float32") == "onednn"
    assert blas.resolve("auto", "cuda", "float32", int8_model=True) == "torch"
    with pytest.raises(Unsupported, match="multiplies float32 on the CPU"):
        blas.resolve("onednn", "cpu", "bfloat16")


def test_a_bfloat16_head_stays_close_to_float32_and_frees_an_untied_weight(pair, session_store):
    # the tiny Llama's head is untied: its float32 weight is released, the rest of the model is unchanged
    import torch

    from slipstream.errors import InvalidConfig

    torch_gemm, _ = pair
    bf16 = open_engine("tiny", store=session_store, threads=1, gemm="onednn", head_dtype="bfloat16")
    head = bf16.model.get_output_embeddings()
    assert bf16.info().details["head_dtype"] == "bfloat16" and head.weight.numel() == 0
    assert head._bf16_weight.dtype == torch.bfloat16
    assert not hasattr(head, "_onednn_weight") and hasattr(bf16.model.model.layers[0].mlp.up_proj, "_onednn_weight")
    prompts = [torch_gemm.tokenizer.encode(t) for t in TEXTS]
    for a, b in zip(torch_gemm.logprobs(prompts), bf16.logprobs(prompts)):
        kl = np.sum(np.exp(a) * (a - b), axis=-1)
        assert kl.max() < 1e-2 and (a.argmax(-1) == b.argmax(-1)).mean() > 0.9
        assert np.abs(a - b).max() > 1e-5  # it did run in bfloat16
    with pytest.raises(InvalidConfig, match="head_dtype"):
        open_engine("tiny", store=session_store, threads=1, head_dtype="float16")
