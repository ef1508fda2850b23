"""Every technique slipstream knows, registered in one place. Config classes live in light
modules (no heavy import at module level); their functions are imported on use."""

from __future__ import annotations

from slipstream.exporters.ctranslate2 import CTranslate2
from slipstream.techniques.quantize.smoothquant import SmoothQuant
from slipstream.techniques.registry import TechniqueSpec, register

register(
    TechniqueSpec(
        name="ctranslate2",
        kind="export",
        config=CTranslate2,
        function="slipstream.exporters.ctranslate2:export",
        output_format="ctranslate2",
        summary="Convert to CTranslate2 with weight quantization (int8, int8_float16, int16, float16, ...)",
        extra="ctranslate2",
    )
)

register(
    TechniqueSpec(
        name="smoothquant",
        kind="transform",
        config=SmoothQuant,
        function="slipstream.techniques.quantize.smoothquant:apply",
        output_format="hf",
        summary="SmoothQuant smoothing: move activation outliers into weights (exact in full precision) "
        "so W8A8 engines such as CTranslate2 int8 lose less accuracy",
        needs_calibration=True,
    )
)
