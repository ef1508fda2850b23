"""Typed options per engine: every setting a deployment may give the engine that runs a variant.

One frozen dataclass per engine, in the manner of vLLM's ``EngineArgs``: each knob is a typed field with
a default, ``Literal`` values are checked, and an unknown key is refused, naming it and listing the valid
ones, so a typo fails before anything loads. Values may be given as strings (a command line, the
environment) and are parsed by each field's annotation.

They reach an engine three ways: ``open_engine(variant, options=...)`` (an instance, or a mapping);
``slipstream bench`` and ``slipstream serve`` with ``--engine-option key=value``; and a deployment's
settings file, in its ``engine:`` section. docs/engines.md#engine-options has the table. This module imports nothing
heavy: the CLI and the server's settings read it before any engine is chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, TypeVar

from slipstream.config import check_fields, field_hints, from_mapping
from slipstream.errors import InvalidConfig

O = TypeVar("O", bound="EngineOptions")

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class EngineOptions:
    """What every engine takes. Subclasses add their own fields and name their engine."""

    engine: ClassVar[str] = ""

    threads: int | None = None  # CPU threads (None: the engine's default, all cores)
    batch_size: int = 8  # prompts per call in generate, score and logprobs

    def __post_init__(self) -> None:
        check_fields(self, owner=f"engine {self.engine!r}")
        for name in ("threads", "batch_size", "beam_size", "prompt_lookup_ngram", "prompt_lookup_max_batch"):
            value = getattr(self, name, None)
            if value is not None and value < 1:
                raise InvalidConfig(f"engine {self.engine!r}: {name}={value} is not valid; expected at least 1")
        if getattr(self, "prompt_lookup", 0) < 0:
            raise InvalidConfig(f"engine {self.engine!r}: prompt_lookup={self.prompt_lookup} is not valid; expected 0 "
                                f"(off) or a number of draft tokens")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def of(cls: type[O], values: "EngineOptions | Mapping[str, Any] | None" = None, **changes: Any) -> O:
        """Options of this engine from an instance or a mapping (values or strings), then ``changes``. A value
        of None means "not given": the field keeps its default (or the instance's value)."""
        if isinstance(values, EngineOptions) and not isinstance(values, cls):
            raise InvalidConfig(f"{type(values).__name__} are options of engine {values.engine!r}, "
                                f"not of engine {cls.engine!r}")
        given = values.to_dict() if isinstance(values, EngineOptions) else dict(values or {})
        merged = {k: v for part in (given, changes) for k, v in part.items() if v is not None}
        return from_mapping(cls, merged, owner=f"engine {cls.engine!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def given(self) -> dict[str, Any]:
        """The fields set to something other than their defaults."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

    def summary(self) -> str:
        """``key=value`` for every option, as the server's banner prints them."""
        return " ".join(f"{k}={_show(v)}" for k, v in self.to_dict().items())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "default" if value is None else str(value)


@dataclass(frozen=True)
class TransformersOptions(EngineOptions):
    """The transformers (PyTorch) engine and its continuous batch."""

    engine: ClassVar[str] = "transformers"

    dtype: Dtype = "float32"  # what the model computes in (a cast variant records its own)
    # float32 products on the CPU: auto, torch, openblas or onednn (slipstream.engines.torch.kernels.blas)
    gemm: Literal["auto", "torch", "openblas", "onednn"] = "auto"
    # W8A8 int8 checkpoints multiplied in int8 on the CPU (slipstream.engines.torch.kernels.int8_gemm);
    # off: compressed-tensors' float path, the reference the int8 products are checked against
    int8_gemm: bool = True
    # the output head's dtype on the CPU: auto is the model's; bfloat16 multiplies a float32 model's head
    # in bfloat16 through oneDNN
    head_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # continuous batching: newcomers' prompts ride in the decode step's forward pass where the model allows
    fused_prefill: bool = True
    # continuous batching: the fused step's decode attention, the C kernel (float32 caches) or PyTorch's
    decode_attention: Literal["c", "torch"] = "c"
    # continuous batching: the key/value cache's dtype (auto: the model's)
    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # generate and stream, greedy requests: prompt-lookup speculative decoding with drafts of up to this many
    # tokens (slipstream.engines.prompt_lookup; 0: off); output equals plain greedy decoding
    prompt_lookup: int = 0
    prompt_lookup_ngram: int = 3  # the longest n-gram matched to find a draft
    # continuous batching with prompt_lookup: rows draft only while the batch holds at most this many (a large
    # batch already keeps the cores busy, and every drafted token is extra work for it)
    prompt_lookup_max_batch: int = 4
    # encoder-decoder (seq2seq) models: beams searched for a greedy request (1: greedy search)
    beam_size: int = 1


@dataclass(frozen=True)
class CTranslate2Options(EngineOptions):
    engine: ClassVar[str] = "ctranslate2"

    # default: the type the variant was converted to; another type converts at load time
    compute_type: Literal["default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                          "float16", "bfloat16", "float32"] = "default"
    max_context: int | None = None  # None: the model's own context length
    # encoder-decoder (seq2seq) models: beams searched for a greedy request (1: greedy search)
    beam_size: int = 1


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    engine: ClassVar[str] = "onnxruntime"

    max_context: int | None = None  # None: the model's own context length


@dataclass(frozen=True)
class OpenVINOOptions(EngineOptions):
    engine: ClassVar[str] = "openvino"

    max_context: int | None = None  # None: the model's own context length
    # what the CPU plugin computes in: OpenVINO's own default is bf16 wherever the CPU has bf16 instructions,
    # which would make a float32 variant silently lossy; f32 keeps it exact
    inference_precision: Literal["f32", "bf16"] = "f32"
    # compressed (int8/int4) weights: activations quantized to int8 in groups of this many values at run time
    # (None: OpenVINO's default; 0: off, activations stay in inference_precision)
    dynamic_quantization: int | None = None


@dataclass(frozen=True)
class LlamaCppOptions(EngineOptions):
    engine: ClassVar[str] = "llamacpp"

    context: int = 4096  # the context's cells, shared by the sequences of a batch (at most the model's)
    kv_type: Literal["auto", "f32", "f16"] = "auto"  # auto: f32 for an F32 file, else f16
    flash_attention: bool | None = None  # None: llama.cpp decides
    # greedy requests: prompt-lookup speculative decoding with drafts of up to this many tokens, checked in one
    # llama_decode call (slipstream.engines.prompt_lookup; 0: off); output equals plain greedy decoding
    prompt_lookup: int = 0
    prompt_lookup_ngram: int = 3


@dataclass(frozen=True)
class VLLMOptions(EngineOptions):
    engine: ClassVar[str] = "vllm"

    dtype: Dtype | None = None  # None: chosen for the checkpoint and device
    python: str | None = None  # the interpreter with vLLM (default: see slipstream.engines.vllm_server)
    max_model_len: int | None = None  # None: the model's, at most 8192
    eager: bool = True  # no CUDA graphs / torch.compile (a faster start)
    startup_timeout: float = 600  # seconds for the server to come up
    # LoRA adapters through vLLM's own support (--enable-lora): at most this many in one batch (0: off)
    max_loras: int = 0
    max_lora_rank: int = 16  # the largest adapter rank vLLM reserves room for


OPTIONS: dict[str, type[EngineOptions]] = {
    cls.engine: cls for cls in (TransformersOptions, CTranslate2Options, OnnxRuntimeOptions, OpenVINOOptions,
                                LlamaCppOptions, VLLMOptions)
}


def options_class(engine: str) -> type[EngineOptions]:
    try:
        return OPTIONS[engine]
    except KeyError:
        raise InvalidConfig(f"unknown engine {engine!r}; known: {', '.join(OPTIONS)}") from None


def known_option(key: str) -> bool:
    """Whether some engine takes option ``key`` (a settings file is read before the engine is known)."""
    return any(key.replace("-", "_") in field_hints(cls) for cls in OPTIONS.values())


def all_option_names() -> list[str]:
    return sorted({name for cls in OPTIONS.values() for name in cls.names()})
