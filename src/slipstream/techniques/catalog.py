"""Every technique slipstream knows, registered in one place. Config classes live in light
modules (no heavy import at module level); their functions are imported on use."""

from __future__ import annotations

from slipstream.exporters.ctranslate2 import CTranslate2
from slipstream.exporters.gguf import GGUF
from slipstream.exporters.onnx import ONNX
from slipstream.techniques.quantize.bnb import BitsAndBytes
from slipstream.techniques.quantize.cast import Cast
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

register(
    TechniqueSpec(
        name="cast",
        kind="transform",
        config=Cast,
        function="slipstream.techniques.quantize.cast:apply",
        output_format="hf",
        summary="Cast weights to float16 or bfloat16; the transformers engine then computes in that type",
    )
)

register(
    TechniqueSpec(
        name="bitsandbytes",
        kind="transform",
        config=BitsAndBytes,
        function="slipstream.techniques.quantize.bnb:apply",
        output_format="hf",
        summary="bitsandbytes NF4/FP4 4-bit or LLM.int8 weights, stored as a checkpoint transformers reloads",
        extra="bitsandbytes",
    )
)

register(
    TechniqueSpec(
        name="onnx",
        kind="export",
        config=ONNX,
        function="slipstream.exporters.onnx:export",
        output_format="onnx",
        summary="Export to ONNX (torch.onnx dynamo, with a KV cache) for ONNX Runtime: float32, dynamic int8, "
        "or static int8 calibrated on calibration text",
        extra="onnx",
        needs_calibration=True,  # static int8 only
    )
)

register(
    TechniqueSpec(
        name="gguf",
        kind="export",
        config=GGUF,
        function="slipstream.exporters.gguf:export",
        output_format="gguf",
        summary="Export to GGUF for llama.cpp: F32/F16/BF16, Q8_0, or K-quant mixes (Q5_K_M, Q4_K_M, ...)",
        extra="llamacpp",
    )
)
