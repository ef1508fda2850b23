"""Half-precision casts: store the weights in float16 or bfloat16 and compute in that type.

The variant's facts carry ``engine_options = {"dtype": ...}``, so the transformers engine computes
in the stored type (not float32) wherever it is opened: evaluation and benchmarks measure what a
deployment of this variant would run. On a CPU without native half-precision instructions PyTorch
emulates them, several times slower than float32: the cast warns before any work is done, and
refuses where PyTorch cannot compute in the type at all.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Literal

from slipstream.errors import Unsupported
from slipstream.machine import cpu_flags
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

Dtype = Literal["float16", "bfloat16"]
SHORT = {"float16": "fp16", "bfloat16": "bf16"}
# CPU flags (Linux /proc/cpuinfo) that give PyTorch's oneDNN kernels a native path for each type.
NATIVE_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}


@dataclasses.dataclass(frozen=True)
class Cast(TechniqueConfig):
    """Cast every floating-point weight to ``dtype``; engines compute in ``dtype``."""

    technique = "cast"
    dtype: Dtype = "bfloat16"

    def slug(self) -> str:
        return SHORT[self.dtype]


def check_device(dtype: str, device: str) -> bool:
    """Refuse a type the device cannot compute in; return whether it has a native (fast) path."""
    from slipstream.extras import require

    torch = require("torch", "core")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Unsupported("device 'cuda' asked for, but torch sees no CUDA device here")
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise Unsupported("this GPU cannot compute in bfloat16; use float16")
        return True
    try:
        a = torch.ones(4, 8, dtype=getattr(torch, dtype))
        torch.nn.functional.linear(a, torch.ones(3, 8, dtype=a.dtype))
    except RuntimeError as exc:
        raise Unsupported(f"PyTorch {torch.__version__} cannot compute in {dtype} on {device}: {exc}") from exc
    native = bool(cpu_flags() & set(NATIVE_FLAGS[dtype]))
    if not native:
        warnings.warn(
            f"this CPU has none of {', '.join(NATIVE_FLAGS[dtype])}: {dtype} compute is emulated and will be "
            "several times slower than float32 (the variant is still half the size on disk)", stacklevel=2)
    return native


# Architectures whose activations leave float16's range (its largest value is 65504): float16 logits
# come out NaN (Gemma-3-270m does; Gemma 2 shares the architecture's scale;
# docs/techniques.md#bitsandbytes-and-casts).
FLOAT16_OVERFLOWS = ("gemma2", "gemma3", "gemma3_text")


def check_model(src: Path, dtype: str) -> None:
    import json

    model_type = json.loads((Path(src) / "config.json").read_text()).get("model_type", "")
    if dtype == "float16" and model_type in FLOAT16_OVERFLOWS:
        raise Unsupported(f"cast: {model_type}'s activations overflow float16 (NaN logits on Gemma-3-270m); "
                          "use dtype=bfloat16, which keeps float32's range")


def apply(src: Path, out: Path, config: Cast, device: str = "cpu", progress: Progress | None = None) -> dict:
    check_model(src, config.dtype)
    native = check_device(config.dtype, device)
    from slipstream.techniques.hf_io import load_model, save_model

    with or_null(progress).task(f"casting to {config.dtype}"):
        model = load_model(src, dtype=config.dtype)
        save_model(model, src, out)
    return {"engine_options": {"dtype": config.dtype}, "native_cpu_support": native if device == "cpu" else None}
