"""AWQ (Lin et al., 2024): scale the input channels that carry large activations up before
rounding (and the layer feeding them down, exactly), choosing each scale by a grid search that
minimises the layer's output error on calibration text; then quantize the weights round to nearest.

llm-compressor's ``AWQModifier`` does the search, followed by a ``QuantizationModifier`` with the
same scheme. Two CPU issues of llm-compressor 0.14 are handled in our code: its activation cache
pins memory (fails without an accelerator; skipped by :func:`llmc.cpu_workarounds`), and its
weight means divide by zero when a balanced layer is left unquantized, so such a plan is refused
here, before any calibration, naming the layer.

Which layers are balanced against which is ``mappings``: ``auto`` takes llm-compressor's table for the
architecture; ``all`` balances every norm -> linear and linear -> linear pair of a Llama-style decoder
(input norm -> q/k/v, v -> o, MLP norm -> gate/up, up -> down). They differ on Gemma 3, where
llm-compressor leaves out input norm -> q/k/v (its issue 2522, reported for a 27B model); Gemma's
``(1 + weight)`` norms are handled by llm-compressor's offset-norm context either way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.progress import Progress
from slipstream.config import TechniqueConfig
from slipstream.techniques.quantize.rtn import RTN, check_group_size, weight_args, weight_slug


@dataclasses.dataclass(frozen=True)
class AWQ(TechniqueConfig):
    """Activation-aware weight-only int4 (W4A16) with group-wise scales."""

    technique = "awq"
    bits: Literal[4, 8] = 4
    group_size: int = 128
    symmetric: bool = True
    grid: int = 20  # scales tried per layer group
    duo_scaling: bool = True  # scales from activations and weights (False: activations only)
    mappings: Literal["auto", "all"] = "auto"  # auto: llm-compressor's per-architecture table
    calibration: str = "wikitext2-valid"
    samples: int = 128
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_size(self.technique, self.group_size)
        if self.grid < 1:
            raise InvalidConfig(f"awq: grid must be at least 1, got {self.grid}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        return f"awq-{weight_slug(self.bits, self.group_size, self.symmetric)}" + (
            "" if self.mappings == "auto" else f"-{self.mappings}")

    def stand_in(self) -> TechniqueConfig:
        """Round to nearest on the same grid: AWQ's scales are folded into the weights and the norms before
        them, so its checkpoint has the same format and shapes."""
        return RTN(bits=self.bits, group_size=self.group_size, symmetric=self.symmetric)


def all_mappings(model) -> list:
    """Every balancing pair of a Llama-style decoder (Llama, Mistral, Qwen2, Gemma 1-3), as
    llm-compressor ``AWQMapping`` entries."""
    from llmcompressor.modifiers.transform.awq import AWQMapping

    layer = getattr(getattr(model, "model", None), "layers", [None])[0]
    if layer is None or not hasattr(layer, "self_attn") or not hasattr(getattr(layer, "mlp", None), "up_proj"):
        raise Unsupported(f"awq: mappings='all' knows Llama-style decoders only, not {model.config.model_type!r}; "
                          "use mappings='auto'")
    ffn_norm = "pre_feedforward_layernorm" if hasattr(layer, "pre_feedforward_layernorm") else "post_attention_layernorm"
    return [
        AWQMapping("re:.*input_layernorm$", ["re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"]),
        AWQMapping("re:.*v_proj$", ["re:.*o_proj$"]),
        AWQMapping(f"re:.*{ffn_norm}$", ["re:.*gate_proj$", "re:.*up_proj$"]),
        AWQMapping("re:.*up_proj$", ["re:.*down_proj$"]),
    ]


def apply(src: Path, out: Path, config: AWQ, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.quantize import llmc

    llmc.require_llmcompressor("AWQ quantization")
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    from slipstream.techniques.hf_io import load_model

    model = load_model(src, device=device)
    plan = llmc.plan_groups(model, config.group_size)
    left = [name for name, g in plan.items() if g == 0]
    if left:
        raise Unsupported(f"awq: no group size from {llmc.MIN_GROUP} to {config.group_size} divides the input width "
                          f"of {left[0]} ({len(left)} layer(s)); llm-compressor's AWQ cannot balance a layer left "
                          "in full precision; use a smaller group_size")
    groups = llmc.scheme_groups(plan, weight_args(config.bits, config.symmetric))
    modifiers = [
        AWQModifier(n_grid=config.grid, duo_scaling=config.duo_scaling,
                    **({"mappings": all_mappings(model)} if config.mappings == "all" else {})),
        QuantizationModifier(config_groups=groups, ignore=list(llmc.IGNORE)),
    ]
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    facts = llmc.run(src, out, modifiers, label=f"AWQ {config.slug()}", calibration=calibration, device=device,
                     progress=progress, model=model)
    return facts | llmc.plan_facts(plan)
