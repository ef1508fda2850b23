"""CTranslate2 conversion, the first headline optimization: one config, one export function.

The variant directory holds CTranslate2's own files (``model.bin``, ``config.json``, vocabulary) and
a ``tokenizer/`` folder with the parent's tokenizer and transformers config, so it is self-contained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator, Literal

from slipstream.errors import Unsupported
from slipstream.exporters.files import copy_tokenizer
from slipstream.extras import require
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

Quantization = Literal[
    "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"
]
QUANTIZATIONS: tuple[str, ...] = Quantization.__args__  # type: ignore[attr-defined]

# What CTranslate2 can compute on CUDA (compute capability permitting); used when the target is
# a GPU this machine does not have. On a present device we ask CTranslate2 itself.
_CUDA_TYPES = frozenset({"float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16"})


@dataclasses.dataclass(frozen=True)
class CTranslate2(TechniqueConfig):
    """Convert a transformers model to CTranslate2, quantizing weights to ``quantization``."""

    technique = "ctranslate2"
    quantization: Quantization = "int8"

    def slug(self) -> str:
        return f"ct2-{self.quantization}"


def supported_types(device: str) -> frozenset[str]:
    ct2 = require("ctranslate2", "ctranslate2", "CTranslate2 conversion")
    if device == "cuda" and ct2.get_cuda_device_count() == 0:
        return _CUDA_TYPES
    return frozenset(ct2.get_supported_compute_types(device))


def check_device(config: CTranslate2, device: str) -> None:
    """Reject a quantization type the target device cannot run."""
    types = supported_types(device)
    if config.quantization not in types:
        hint = ""
        if device == "cpu":  # what would run it
            hint = ("; int16 needs CTranslate2's MKL backend (its default on Intel CPUs; CT2_USE_MKL=1 elsewhere)"
                    if config.quantization == "int16" else "; float16/bfloat16 types need a CUDA GPU (--device cuda)")
        raise Unsupported(
            f"CTranslate2 quantization {config.quantization!r} cannot run on {device} here "
            f"(supported: {', '.join(sorted(types))}){hint}"
        )


def export(src: Path, out: Path, config: CTranslate2, device: str = "cpu", progress: Progress | None = None) -> dict:
    """Convert the transformers model in ``src`` into ``out``; return facts for the manifest."""
    check_device(config, device)
    from slipstream.models.heads import kept_heads

    if kept_heads(src):
        raise Unsupported(f"{src.name}: its attention heads were pruned; CTranslate2's converter reads the head "
                          "count from num_attention_heads and cannot take it (ONNX Runtime and transformers can)")
    ct2 = require("ctranslate2", "ctranslate2", "CTranslate2 conversion")
    from ctranslate2.converters import TransformersConverter

    with or_null(progress).task(f"converting to CTranslate2 {config.quantization}"):
        converter = TransformersConverter(str(src), low_cpu_mem_usage=True)
        with explicit_head_dim(src), absolute_positions_by_default():
            try:
                converter.convert(str(out), quantization=config.quantization, force=True)
            except ValueError as exc:
                if "No conversion is registered" not in str(exc):
                    raise
                model_type = json.loads((src / "config.json").read_text()).get("model_type", "?")
                raise Unsupported(f"CTranslate2 {ct2.__version__} has no converter for {model_type!r} models "
                                  "(ONNX Runtime and transformers run them)") from None
    copy_tokenizer(src, out)
    return {"ctranslate2": ct2.__version__, "device": device}


@contextlib.contextmanager
def explicit_head_dim(src: Path) -> Iterator[None]:
    """CTranslate2's Llama/Qwen2 loaders infer ``head_dim = hidden_size / num_attention_heads``. A model
    whose attention heads were pruned keeps its ``head_dim`` (config.json says so) with fewer heads;
    for the duration of one conversion, the decoder spec is built with that head_dim passed on."""
    cfg = json.loads((src / "config.json").read_text()) if (src / "config.json").exists() else {}
    heads, hidden, head_dim = cfg.get("num_attention_heads"), cfg.get("hidden_size"), cfg.get("head_dim")
    if not (heads and hidden and head_dim) or heads * head_dim == hidden:
        yield
        return
    from ctranslate2.specs.transformer_spec import TransformerDecoderModelSpec

    original = TransformerDecoderModelSpec.__dict__["from_config"]

    def from_config(*args, **kwargs):
        if kwargs.get("head_dim") is None:
            kwargs["head_dim"] = head_dim
        return original.__func__(TransformerDecoderModelSpec, *args, **kwargs)

    TransformerDecoderModelSpec.from_config = from_config  # type: ignore[method-assign]
    try:
        yield
    finally:
        TransformerDecoderModelSpec.from_config = original  # type: ignore[method-assign]


@contextlib.contextmanager
def absolute_positions_by_default() -> Iterator[None]:
    """CTranslate2's BERT-family loaders assert ``config.position_embedding_type == "absolute"``; recent
    transformers no longer writes that key for the default (absolute) case, so the attribute is missing. For
    one conversion the config classes answer "absolute" when a config does not say."""
    import transformers

    classes = [getattr(transformers, n) for n in ("BertConfig", "RobertaConfig", "XLMRobertaConfig",
                                                  "CamembertConfig", "ElectraConfig") if hasattr(transformers, n)]
    added = [c for c in classes if "position_embedding_type" not in c.__dict__]
    for c in added:
        c.position_embedding_type = "absolute"
    try:
        yield
    finally:
        for c in added:
            del c.position_embedding_type


def check_runnable(path: Path, device: str, compute_type: str = "default") -> None:
    """Refuse to load a variant whose weights type the device cannot compute in, instead of letting
    CTranslate2 silently fall back to another type."""
    wanted = compute_type if compute_type not in ("default", "auto") else stored_quantization(path)
    if wanted is None:
        return
    types = supported_types(device)
    if wanted not in types:
        raise Unsupported(
            f"{path.name}: CTranslate2 {wanted!r} cannot run on {device} here (supported: "
            f"{', '.join(sorted(types))}); pass a supported compute_type to convert it at load time"
        )


def stored_quantization(path: Path) -> str | None:
    manifest = path / "slipstream.json"
    if manifest.exists():
        technique = json.loads(manifest.read_text()).get("technique") or {}
        return technique.get("quantization")
    return None
