"""FP8 (E4M3) weights and activations, for GPUs with FP8 tensor cores (compute capability 8.9+:
Ada, Hopper, Blackwell), where vLLM runs them with FP8 GEMMs.

Both schemes are data-free: ``dynamic`` scales weights per output channel and activations per token
at run time; ``block`` scales weights per 128x128 block and activations per group of 128.

An FP8 variant is made only for a CUDA target (``--device cuda``). Making one needs no GPU (the
weights are rounded on the CPU when no GPU is here), but running one does: on a CPU target, or on a
GPU without FP8 support, slipstream refuses before loading anything, instead of running a
dequantized emulation that would say nothing about FP8 speed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.errors import Unsupported
from slipstream.progress import Progress
from slipstream.config import TechniqueConfig

MIN_CAPABILITY = (8, 9)


@dataclasses.dataclass(frozen=True)
class FP8(TechniqueConfig):
    """FP8 E4M3 weights and dynamic FP8 activations (W8A8-FP8), for vLLM on Ada/Hopper GPUs."""

    technique = "fp8"
    scheme: Literal["dynamic", "block"] = "dynamic"

    def slug(self) -> str:
        return f"fp8-{self.scheme}"


def check_device(device: str) -> None:
    """Refuse a target that cannot compute in FP8 (checked before any model is loaded)."""
    if not device.startswith("cuda"):
        raise Unsupported(
            f"fp8: FP8 needs an NVIDIA GPU with compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+ "
            f"(Ada, Hopper or newer); the target here is {device!r}. Make it for such a GPU with --device cuda, "
            "or use an int8 technique (w8a8, rtn bits=8) on a CPU"
        )
    from slipstream.devices import cuda_available

    if cuda_available():
        import torch

        capability = torch.cuda.get_device_capability()
        if tuple(capability) < MIN_CAPABILITY:
            raise Unsupported(f"fp8: this GPU ({torch.cuda.get_device_name()}, compute capability "
                              f"{capability[0]}.{capability[1]}) has no FP8 support; it needs "
                              f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+")


def apply(src: Path, out: Path, config: FP8, device: str = "cpu", progress: Progress | None = None) -> dict:
    check_device(device)
    from slipstream.devices import cuda_available
    from slipstream.techniques.quantize import llmc

    llmc.require_llmcompressor("FP8 quantization")
    from llmcompressor.modifiers.quantization import QuantizationModifier

    work = device if cuda_available() else "cpu"  # data-free: rounding on the CPU is exact enough
    scheme = "FP8_DYNAMIC" if config.scheme == "dynamic" else "FP8_BLOCK"
    modifier = QuantizationModifier(targets=["Linear"], scheme=scheme, ignore=list(llmc.IGNORE))
    facts = llmc.run(src, out, [modifier], label=f"FP8 {config.scheme}", calibration=None, device=work,
                     progress=progress)
    return facts | {"made_on": work, "runs_on": "cuda (compute capability 8.9+)"}
