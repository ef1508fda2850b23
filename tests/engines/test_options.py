"""Typed engine options: parsed from strings, checked, unknown keys refused by name, and taken by
``open_engine`` all the way to the engine and its continuous batch."""

from __future__ import annotations

import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.options import (
    OPTIONS,
    CTranslate2Options,
    EngineOptions,
    LlamaCppOptions,
    TransformersOptions,
    VLLMOptions,
    options_class,
)
from slipstream.errors import InvalidConfig


def test_values_from_strings_take_their_field_types():
    o = TransformersOptions.of({"gemm": "onednn", "int8_gemm": "off", "threads": "2", "fused-prefill": "0",
                                "kv_cache_dtype": "bfloat16"})
    assert (o.gemm, o.int8_gemm, o.threads, o.fused_prefill, o.kv_cache_dtype) == ("onednn", False, 2, False,
                                                                                   "bfloat16")
    assert o.given() == {"threads": 2, "gemm": "onednn", "int8_gemm": False, "fused_prefill": False,
                         "kv_cache_dtype": "bfloat16"}
    assert TransformersOptions.of(o, decode_attention="torch").decode_attention == "torch"
    assert TransformersOptions.of(o, gemm=None, threads=None) == o  # None: not given
    assert LlamaCppOptions.of({"flash_attention": "none", "context": "2048"}) == LlamaCppOptions(context=2048)
    assert VLLMOptions.of({"startup_timeout": "60", "eager": "false"}) == VLLMOptions(startup_timeout=60.0, eager=False)
    assert "gemm=onednn int8_gemm=off" in o.summary() and "threads=2" in o.summary()


def test_every_engine_has_threads_and_batch_size_and_its_own_class():
    assert set(OPTIONS) == {"transformers", "ctranslate2", "onnxruntime", "openvino", "llamacpp", "vllm"}
    for name, cls in OPTIONS.items():
        assert issubclass(cls, EngineOptions) and cls.engine == name and options_class(name) is cls
        assert {"threads", "batch_size"} <= set(cls.names())
        with pytest.raises(Exception):  # frozen
            cls().threads = 3  # type: ignore[misc]


@pytest.mark.parametrize("values,message", [
    ({"gem": "torch"}, "engine 'transformers' has no option 'gem'; its options: threads, batch_size, dtype, gemm, "
                       "int8_gemm, head_dtype, fused_prefill, decode_attention, kv_cache_dtype"),
    ({"gemm": "mkl"}, "gemm='mkl' is not valid; expected one of 'auto', 'torch', 'openblas', 'onednn'"),
    ({"decode_attention": "cuda"}, "decode_attention='cuda' is not valid; expected one of 'c', 'torch'"),
    ({"int8_gemm": "maybe"}, "int8_gemm='maybe' is not valid; expected bool"),
    ({"threads": "many"}, "threads='many' is not valid"),
    ({"threads": 0}, "threads=0 is not valid; expected at least 1"),
    ({"compute_type": "int8"}, "engine 'transformers' has no option 'compute_type'"),
])
def test_bad_options_are_refused_by_name(values, message):
    with pytest.raises(InvalidConfig) as info:
        TransformersOptions.of(values)
    assert message in str(info.value)


def test_options_of_another_engine_are_refused():
    with pytest.raises(InvalidConfig, match="options of engine 'ctranslate2', not of engine 'transformers'"):
        TransformersOptions.of(CTranslate2Options(compute_type="int8"))
    with pytest.raises(InvalidConfig, match="unknown engine 'mkl'"):
        options_class("mkl")


def test_open_engine_passes_options_to_the_engine_and_its_stepper(session_store):
    engine = open_engine("tiny", store=session_store, threads=1,
                         options={"gemm": "torch", "fused_prefill": "off", "decode_attention": "torch"})
    assert isinstance(engine.options, TransformersOptions)
    assert engine.options.given() == {"threads": 1, "gemm": "torch", "fused_prefill": False,
                                      "decode_attention": "torch"}
    assert engine.info().details["gemm"] == "torch"
    stepper = engine.stepper()
    assert not stepper.fused and not stepper.c_kernel
    assert engine.stepper(fused_prefill=True).fused  # an explicit argument still wins
    fused = open_engine("tiny", store=session_store, threads=1, options=TransformersOptions(kv_cache_dtype="bfloat16"))
    assert fused.stepper().fused and str(fused.stepper().kv_dtype) == "torch.bfloat16"


def test_open_engine_refuses_what_the_engine_does_not_take(session_store):
    with pytest.raises(InvalidConfig, match="engine 'transformers' has no option 'compute_type'"):
        open_engine("tiny", store=session_store, options={"compute_type": "int8"})
    with pytest.raises(InvalidConfig, match="threads given twice"):
        open_engine("tiny", store=session_store, threads=1, options={"threads": 2})


def test_open_engine_ctranslate2_options(session_store):
    pytest.importorskip("ctranslate2")
    engine = open_engine("tiny-ct2-float32", store=session_store, threads=1, batch_size=2)
    assert isinstance(engine.options, CTranslate2Options) and engine.batch_size == 2
    assert engine.info().compute_type == "float32" and engine.info().threads == 1
    with pytest.raises(InvalidConfig, match="engine 'ctranslate2' has no option 'gemm'"):
        open_engine("tiny-ct2-float32", store=session_store, gemm="torch")
