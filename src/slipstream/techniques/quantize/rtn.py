"""Round-to-nearest (RTN) weight-only quantization: the baseline every calibrated method must beat.

Each weight is rounded to the nearest point of a symmetric (or asymmetric) integer grid whose scale
is set per output channel, or per group of ``group_size`` input columns. No calibration data; the
output is a compressed-tensors checkpoint (``pack-quantized`` for 4 bits, ``int-quantized`` for 8)
made by llm-compressor's ``QuantizationModifier``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.errors import InvalidConfig
from slipstream.progress import Progress
from slipstream.config import TechniqueConfig


@dataclasses.dataclass(frozen=True)
class RTN(TechniqueConfig):
    """Weight-only int8 or int4, round to nearest; the model's activations stay in full precision."""

    technique = "rtn"
    bits: Literal[4, 8] = 4
    group_size: int | None = 128  # None: one scale per output channel
    symmetric: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_size(self.technique, self.group_size)

    def slug(self) -> str:
        return f"rtn-{weight_slug(self.bits, self.group_size, self.symmetric)}"


def check_group_size(technique: str, group_size: int | None) -> None:
    if group_size is not None and (group_size < 16 or group_size & (group_size - 1)):
        raise InvalidConfig(f"{technique}: group_size must be a power of two >= 16, or none for per-channel "
                            f"scales; got {group_size}")


def weight_slug(bits: int, group_size: int | None, symmetric: bool) -> str:
    return f"w{bits}" + (f"g{group_size}" if group_size else "") + ("" if symmetric else "-asym")


def weight_args(bits: int, symmetric: bool) -> dict:
    """QuantizationArgs fields for integer weights, one scale per output channel (group fields are
    added per layer by :func:`slipstream.techniques.quantize.llmc.scheme_groups`)."""
    return {"num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": "channel", "dynamic": False}


def apply(src: Path, out: Path, config: RTN, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.quantize import llmc

    llmc.require_llmcompressor("RTN quantization")
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from slipstream.techniques.hf_io import load_model

    model = load_model(src, device=device)
    plan = llmc.plan_groups(model, config.group_size)
    modifier = QuantizationModifier(config_groups=llmc.scheme_groups(plan, weight_args(config.bits, config.symmetric)),
                                    ignore=list(llmc.IGNORE))
    facts = llmc.run(src, out, [modifier], label=f"RTN {config.slug()}", calibration=None, device=device,
                     progress=progress, model=model)
    return facts | llmc.plan_facts(plan)
