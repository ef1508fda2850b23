"""SmoothQuant + W8A8 int8 (Xiao et al., 2023) in compressed-tensors form, for engines with int8
GEMMs (vLLM on GPU and on CPU): activations smoothed into the weights, then int8 weights (one scale
per output channel, by llm-compressor's GPTQ or round to nearest) and int8 activations quantized per
token at run time.

The smoothing is slipstream's own (:mod:`~slipstream.techniques.quantize.smoothquant`, which alone
stops there and leaves the model full precision for CTranslate2's int8), not llm-compressor's
``SmoothQuantModifier``: that one smooths only the inputs of q/k/v and gate/up, leaving o_proj's and
down_proj's int8 inputs (where the activation outliers are largest) as they are, and its default
mapping for Gemma 2/3 divides ``post_attention_layernorm`` (which in Gemma feeds the residual, not
the MLP) and ignores Gemma's ``(1 + weight)`` norm, changing the model before any quantization.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig
from slipstream.progress import Progress
from slipstream.techniques.config import TechniqueConfig, modules_named


@dataclasses.dataclass(frozen=True)
class W8A8(TechniqueConfig):
    """int8 weights and dynamic per-token int8 activations, after SmoothQuant smoothing."""

    technique = "w8a8"
    smoothing: float | None = 0.8  # SmoothQuant's alpha; None: no smoothing
    weights: Literal["gptq", "rtn"] = "gptq"
    calibration: str = "wikitext2-valid"
    samples: int = 128
    sequence_length: int = 512
    # modules left in full precision (listed under compressed-tensors' ignore), by name or its last
    # parts ("down_proj", "layers.0.mlp.down_proj"); the head always is. The MLP down projections' inputs
    # carry the largest outliers that change from token to token, then q/k/v's: on Gemma-3-270m
    # ("down_proj", "q_proj", "k_proj", "v_proj") cuts W8A8's KL from 0.0140 to 0.0024 (BENCHMARKS.md)
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.smoothing is not None and not 0.0 < self.smoothing < 1.0:
            raise InvalidConfig(f"w8a8: smoothing must be in (0, 1) or none, got {self.smoothing}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        return ("w8a8" + (f"-sq{self.smoothing:g}" if self.smoothing is not None else "") + f"-{self.weights}"
                + "".join(f"-keep-{name.replace('.', '_')}" for name in self.keep_float))


def keep_in_float(plan: dict[str, int | None], patterns: tuple[str, ...]) -> dict[str, int | None]:
    """``plan`` with the modules ``patterns`` name marked 0 (full precision)."""
    return plan | dict.fromkeys(modules_named(plan, patterns, "w8a8"), 0)


ACTIVATIONS = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}


def apply(src: Path, out: Path, config: W8A8, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.quantize import llmc

    llmc.require_llmcompressor("W8A8 quantization")
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from slipstream.techniques.hf_io import load_model
    from slipstream.techniques.quantize.rtn import weight_args
    from slipstream.techniques.quantize.smoothquant import calibrate_and_smooth

    model = load_model(src, device=device)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    if config.smoothing is not None:
        calibrate_and_smooth(model, src, calibration, config.smoothing, progress)
    plan = keep_in_float(llmc.plan_groups(model, None), config.keep_float)  # per-channel weights
    groups = llmc.scheme_groups(plan, weight_args(8, True), ACTIVATIONS)
    quantizer = GPTQModifier if config.weights == "gptq" else QuantizationModifier
    modifiers = [quantizer(config_groups=groups, ignore=list(llmc.IGNORE))]
    facts = llmc.run(src, out, modifiers, label=f"W8A8 {config.slug()}", calibration=calibration, device=device,
                     progress=progress, model=model)
    return facts | llmc.plan_facts(plan)
