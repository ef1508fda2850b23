"""GPTQ (Frantar et al., 2023): quantize weights column by column, correcting the error of each
rounding with the inverse Hessian of the layer's inputs, measured on calibration text.

llm-compressor's ``GPTQModifier`` runs layer by layer (its sequential pipeline): only one decoder
layer's calibration activations are held at a time, kept on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig
from slipstream.progress import Progress
from slipstream.config import TechniqueConfig
from slipstream.techniques.quantize.rtn import RTN, check_group_size, weight_args, weight_slug


@dataclasses.dataclass(frozen=True)
class GPTQ(TechniqueConfig):
    """Weight-only int4 (or int8) with GPTQ's error correction; W4A16 by default."""

    technique = "gptq"
    bits: Literal[4, 8] = 4
    group_size: int | None = 128
    symmetric: bool = True
    dampening: float = 0.01  # added to the Hessian's diagonal, as a fraction of its mean
    actorder: Literal["static", "weight", "none"] = "static"  # column order (static: by activation size)
    calibration: str = "wikitext2-valid"
    samples: int = 128
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_size(self.technique, self.group_size)
        if not 0 < self.dampening < 1:
            raise InvalidConfig(f"gptq: dampening must be in (0, 1), got {self.dampening}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        return f"gptq-{weight_slug(self.bits, self.group_size, self.symmetric)}"

    def stand_in(self) -> TechniqueConfig:
        """Round to nearest on the same grid: the same checkpoint format without the calibration. Activation
        order "weight" stores a column permutation (g_idx) that rounding to nearest would not."""
        if self.actorder == "weight":
            return self
        return RTN(bits=self.bits, group_size=self.group_size, symmetric=self.symmetric)


def apply(src: Path, out: Path, config: GPTQ, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.quantize import llmc

    llmc.require_llmcompressor("GPTQ quantization")
    from llmcompressor.modifiers.gptq import GPTQModifier

    from slipstream.techniques.hf_io import load_model

    model = load_model(src, device=device)
    plan = llmc.plan_groups(model, config.group_size)
    modifier = GPTQModifier(
        config_groups=llmc.scheme_groups(plan, weight_args(config.bits, config.symmetric)),
        ignore=list(llmc.IGNORE), dampening_frac=config.dampening,
        actorder=None if config.actorder == "none" else config.actorder,
    )
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    facts = llmc.run(src, out, [modifier], label=f"GPTQ {config.slug()}", calibration=calibration, device=device,
                     progress=progress, model=model)
    return facts | llmc.plan_facts(plan)
