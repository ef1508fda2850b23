"""The transformers engine's linear layers through numpy's OpenBLAS: the same numbers as PyTorch's own
product, the same greedy tokens (one by one and in a continuous batch), and the choice of GEMM."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.torch.kernels import blas
from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import SamplingParams
from slipstream.errors import InvalidConfig, Unsupported
from tests.engines.test_stepping import TEXTS, run_staggered

pytestmark = pytest.mark.skipif(blas.numpy_blas() != "openblas", reason="numpy here does not use OpenBLAS")


@pytest.fixture(scope="module")
def pair(session_store):
    return (open_engine("tiny", store=session_store, threads=1, gemm="torch"),
            open_engine("tiny", store=session_store, threads=1, gemm="openblas"))


def test_same_numbers_and_tokens_as_torch(pair):
    torch_gemm, openblas = pair
    assert torch_gemm.info().details["gemm"] == "torch" and openblas.info().details["gemm"] == "openblas"
    prompts = [torch_gemm.tokenizer.encode(t) for t in TEXTS]
    for a, b in zip(torch_gemm.logprobs(prompts), openblas.logprobs(prompts)):
        np.testing.assert_allclose(a, b, atol=2e-4)
    params = SamplingParams(max_tokens=16)
    assert [c.token_ids for c in torch_gemm.generate(prompts, params)] == \
        [c.token_ids for c in openblas.generate(prompts, params)]


def test_continuous_batch_through_openblas_equals_generate(pair):
    _, openblas = pair
    prompts = [openblas.tokenizer.encode(t) for t in TEXTS]
    params = [SamplingParams(max_tokens=m) for m in (20, 6, 30, 12, 16)]
    expected = [openblas.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    got, _ = run_staggered(openblas.stepper(), prompts, params, joins=[0, 0, 3, 7, 7])
    assert [got[i] for i in range(5)] == expected


def test_gradients_fall_back_to_torch(pair):
    import torch

    _, openblas = pair
    layer = next(m for m in openblas.model.modules() if hasattr(m, "_blas_weight"))
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer(x).sum().backward()  # a numpy product would have no gradient
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_auto_takes_openblas_off_intel_for_float32_at_one_thread(monkeypatch):
    monkeypatch.setattr("slipstream.machine.cpu_vendor", lambda: "AuthenticAMD")
    assert blas.resolve("auto", "cpu", "float32", threads=1) == "openblas"
    assert blas.resolve("auto", "cpu", "float32", threads=2) == "torch"  # two thread pools contend
    assert blas.resolve("auto", "cpu", "float32") == "torch"  # all cores
    assert blas.resolve("auto", "cpu", "bfloat16", threads=1) == "torch"
    assert blas.resolve("auto", "cuda", "float32", threads=1) == "torch"
    monkeypatch.setattr("slipstream.machine.cpu_vendor", lambda: "GenuineIntel")
    assert blas.resolve("auto", "cpu", "float32", threads=1) == "torch"
    assert blas.resolve("openblas", "cpu", "float32") == "openblas"
    with pytest.raises(Unsupported, match="multiplies float32 on the CPU"):
        blas.resolve("openblas", "cpu", "bfloat16")
    with pytest.raises(InvalidConfig, match="gemm must be one of"):
        blas.resolve("mkl", "cpu", "float32")
