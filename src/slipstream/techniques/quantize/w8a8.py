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
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.progress import Progress
from slipstream.config import TechniqueConfig, modules_named


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
    # parts ("down_proj", "layers.0.mlp.down_proj"); the head always is. "auto": chosen per model on the
    # calibration text (slipstream.techniques.quantize.int8_sensitivity): W8A8 simulated in float32, the
    # module kinds whose int8 inputs cost the most kept in float until the simulated KL from the original
    # is within kl_budget. SmolLM2-135M keeps its down projections, Gemma-3-270m its down projections and
    # q/k/v (docs/techniques.md#llm-compressor-rtn-awq-gptq-w8a8-fp8; figures: BENCHMARKS.md#quantization).
    # (): every linear in int8
    kl_budget: float = 0.005  # "auto": the simulated KL (nats per token) allowed
    auto_samples: int = 8  # "auto": calibration samples the simulation is measured on
    keep_float: Literal["auto"] | tuple[str, ...] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.smoothing is not None and not 0.0 < self.smoothing < 1.0:
            raise InvalidConfig(f"w8a8: smoothing must be in (0, 1) or none, got {self.smoothing}")
        Calibration(self.calibration, self.samples, self.sequence_length)
        if not self.kl_budget > 0 or self.auto_samples < 1:
            raise InvalidConfig(f"w8a8: kl_budget must be > 0 and auto_samples >= 1, got {self.kl_budget} "
                                f"and {self.auto_samples}")
        if self.keep_float != "auto" and not self._auto_defaults():
            raise InvalidConfig("w8a8: kl_budget and auto_samples apply to keep_float=auto only")

    def slug(self) -> str:
        return ("w8a8" + (f"-sq{self.smoothing:g}" if self.smoothing is not None else "") + f"-{self.weights}"
                + self._keep_slug())

    def stand_in(self) -> "W8A8":
        """int8 weights rounded to nearest instead of by GPTQ: the same modules in int8 (``keep_float=auto``
        chooses them on the smoothed model, before the weights are rounded), the same checkpoint."""
        return self if self.weights == "rtn" else dataclasses.replace(self, weights="rtn")

    def _auto_defaults(self) -> bool:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return (self.kl_budget, self.auto_samples) == (defaults["kl_budget"], defaults["auto_samples"])

    def _keep_slug(self) -> str:
        if self.keep_float == "auto":
            return "" if self._auto_defaults() else f"-auto-kl{self.kl_budget:g}-n{self.auto_samples}"
        if not self.keep_float:
            return "-keep-none"
        return "".join(f"-keep-{name.replace('.', '_')}" for name in self.keep_float)


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
    plan = llmc.plan_groups(model, None)  # per-channel weights
    facts: dict = {}
    keep = config.keep_float
    if keep == "auto":
        choice = auto_keep_float(model, src, plan, config, progress)
        keep, facts = choice.keep, choice.facts()
    plan = keep_in_float(plan, keep)
    if all(g == 0 for g in plan.values()):
        raise Unsupported(f"w8a8: even with every linear in float the simulated KL is above kl_budget="
                          f"{config.kl_budget}; nothing left to quantize")
    groups = llmc.scheme_groups(plan, weight_args(8, True), ACTIVATIONS)
    quantizer = GPTQModifier if config.weights == "gptq" else QuantizationModifier
    modifiers = [quantizer(config_groups=groups, ignore=list(llmc.IGNORE))]
    run_facts = llmc.run(src, out, modifiers, label=f"W8A8 {config.slug()}", calibration=calibration,
                         device=device, progress=progress, model=model)
    return facts | run_facts | llmc.plan_facts(plan)


def auto_keep_float(model, src: Path, plan: dict[str, int | None], config: W8A8, progress: Progress | None):
    """keep_float="auto": the module kinds to leave in float, from W8A8 simulated on the first
    ``auto_samples`` calibration samples (after smoothing, as it will be quantized)."""
    from slipstream.tokenizer import Tokenizer
    from slipstream.techniques.quantize.int8_sensitivity import choose_keep_float

    calibration = Calibration(config.calibration, config.auto_samples, config.sequence_length)
    samples = list(calibration.batches(Tokenizer.from_dir(src), bos=True))
    return choose_keep_float(model, list(plan), samples, config.kl_budget, progress)
