"""Every technique slipstream knows, listed in one place as data (:class:`TechniqueSpec`), which
:mod:`slipstream.techniques.registry` indexes by name. Config classes live in light modules (no heavy
import at module level); their functions are imported on use, by import path."""

from __future__ import annotations

from slipstream.exporters.ctranslate2 import CTranslate2
from slipstream.exporters.gguf import GGUF
from slipstream.exporters.onnx import ONNX
from slipstream.exporters.openvino import OpenVINO
from slipstream.techniques.distill.kd import Distill
from slipstream.techniques.prune.early_exit import EarlyExit
from slipstream.techniques.prune.structured import StructuredPrune
from slipstream.techniques.prune.unstructured import UnstructuredPrune
from slipstream.techniques.quantize.awq import AWQ
from slipstream.techniques.quantize.bnb import BitsAndBytes
from slipstream.techniques.quantize.cast import Cast
from slipstream.techniques.quantize.fp8 import FP8
from slipstream.techniques.quantize.gptq import GPTQ
from slipstream.techniques.quantize.int8_rows import Int8Rows
from slipstream.techniques.quantize.rtn import RTN
from slipstream.techniques.quantize.smoothquant import SmoothQuant
from slipstream.techniques.quantize.w8a8 import W8A8
from slipstream.techniques.spec import TechniqueSpec

_LLMC = "slipstream.techniques.quantize"

CATALOG: tuple[TechniqueSpec, ...] = (
    TechniqueSpec(
        name="ctranslate2",
        kind="export",
        config=CTranslate2,
        function="slipstream.exporters.ctranslate2:export",
        output_format="ctranslate2",
        summary="Convert to CTranslate2 with weight quantization (int8, int8_float16, int16, float16, ...)",
        extra="ctranslate2",
        tasks=("causal-lm", "seq2seq", "embedding", "classification"),
    ),
    TechniqueSpec(
        name="smoothquant",
        kind="transform",
        config=SmoothQuant,
        function="slipstream.techniques.quantize.smoothquant:apply",
        output_format="hf",
        summary="SmoothQuant smoothing: move activation outliers into weights (exact in full precision) "
        "so W8A8 engines such as CTranslate2 int8 lose less accuracy; alpha=auto picks alpha per layer",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="int8-rows",
        kind="transform",
        config=Int8Rows,
        function="slipstream.techniques.quantize.int8_rows:apply",
        output_format="hf",
        summary="GPTQ onto CTranslate2 int8's grid (one scale per weight row), kept in float: converting "
        "with ctranslate2 int8 afterwards stores GPTQ's rounding instead of round to nearest",
        needs_calibration=True,
    ),
    # llm-compressor techniques: each writes a compressed-tensors checkpoint (format "hf"), which the
    # transformers engine loads (compressed-tensors decompresses it) and vLLM serves (--engine vllm).
    TechniqueSpec(
        name="rtn",
        kind="transform",
        config=RTN,
        function=f"{_LLMC}.rtn:apply",
        output_format="hf",
        summary="Round-to-nearest weight-only int8/int4 (per channel or group-wise); the baseline calibrated "
        "methods must beat; compressed-tensors, via llm-compressor",
        extra="llmcompressor",
    ),
    TechniqueSpec(
        name="awq",
        kind="transform",
        config=AWQ,
        function=f"{_LLMC}.awq:apply",
        output_format="hf",
        summary="AWQ W4A16: activation-aware channel scaling, then group-wise int4 weights; compressed-tensors "
        "(vLLM loads it), via llm-compressor",
        extra="llmcompressor",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="gptq",
        kind="transform",
        config=GPTQ,
        function=f"{_LLMC}.gptq:apply",
        output_format="hf",
        summary="GPTQ W4A16: Hessian-corrected group-wise int4 weights; compressed-tensors (vLLM loads it), "
        "via llm-compressor",
        extra="llmcompressor",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="w8a8",
        kind="transform",
        config=W8A8,
        function=f"{_LLMC}.w8a8:apply",
        output_format="hf",
        summary="SmoothQuant + W8A8 int8: smoothed, int8 weights (GPTQ or RTN) and per-token int8 activations, "
        "the module kinds whose int8 inputs cost the most left in float (chosen per model, or named); "
        "compressed-tensors for vLLM's int8 kernels, via llm-compressor",
        extra="llmcompressor",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="fp8",
        kind="transform",
        config=FP8,
        function=f"{_LLMC}.fp8:apply",
        output_format="hf",
        summary="FP8 E4M3 weights and dynamic activations for GPUs with FP8 (compute capability 8.9+); "
        "compressed-tensors for vLLM, via llm-compressor",
        extra="llmcompressor",
        devices=("cuda",),
    ),
    TechniqueSpec(
        name="cast",
        kind="transform",
        config=Cast,
        function="slipstream.techniques.quantize.cast:apply",
        output_format="hf",
        summary="Cast weights to float16 or bfloat16; the transformers engine then computes in that type",
        tasks=("causal-lm", "seq2seq", "embedding", "classification"),
    ),
    TechniqueSpec(
        name="bitsandbytes",
        kind="transform",
        config=BitsAndBytes,
        function="slipstream.techniques.quantize.bnb:apply",
        output_format="hf",
        summary="bitsandbytes NF4/FP4 4-bit or LLM.int8 weights, stored as a checkpoint transformers reloads",
        extra="bitsandbytes",
    ),
    TechniqueSpec(
        name="onnx",
        kind="export",
        config=ONNX,
        function="slipstream.exporters.onnx_technique:export",
        output_format="onnx",
        summary="Export to ONNX (torch.onnx dynamo, with a KV cache) for ONNX Runtime: float32, dynamic int8, "
        "static int8 calibrated on calibration text, or blockwise int8 weights (MatMulNBits)",
        extra="onnx",
        modules=("onnx", "onnxruntime", "onnxscript"),
        needs_calibration=True,  # static int8 only
        tasks=("causal-lm", "embedding", "classification"),
    ),
    TechniqueSpec(
        name="gguf",
        kind="export",
        config=GGUF,
        function="slipstream.exporters.gguf:export",
        output_format="gguf",
        summary="Export to GGUF for llama.cpp: F32/F16/BF16, Q8_0, or K-quant mixes (Q5_K_M, Q4_K_M, ...)",
        extra="llamacpp",
        modules=("llama_cpp", "gguf"),
    ),
    TechniqueSpec(
        name="openvino",
        kind="export",
        config=OpenVINO,
        function="slipstream.exporters.openvino:export",
        output_format="openvino",
        summary="Export to OpenVINO IR (slipstream's ONNX graph with a KV cache, converted) for OpenVINO's CPU "
        "plugin: float32, or NNCF weight compression to int8 or group-wise int4 (symmetric or asymmetric, "
        "a ratio of the weights in int4, the rest int8)",
        extra="openvino",
        modules=("openvino", "nncf", "onnxscript"),
        devices=("cpu",),
    ),
    TechniqueSpec(
        name="prune-structured",
        kind="transform",
        config=StructuredPrune,
        function="slipstream.techniques.prune.structured:apply",
        output_format="hf",
        summary="Structured pruning: drop the most redundant layers, MLP channels and attention heads "
        "(ranked on calibration text) of a decoder or an encoder; a smaller model engines run faster",
        needs_calibration=True,
        tasks=("causal-lm", "embedding", "classification"),
    ),
    TechniqueSpec(
        name="prune-unstructured",
        kind="transform",
        config=UnstructuredPrune,
        function="slipstream.techniques.prune.unstructured:apply",
        output_format="hf",
        summary="Unstructured or 2:4 pruning by magnitude, Wanda or SparseGPT (llm-compressor); saved dense: "
        "no engine here turns the zeros into speed or size, it measures the accuracy cost alone",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="early-exit",
        kind="transform",
        config=EarlyExit,
        function="slipstream.techniques.prune.early_exit:apply",
        output_format="hf",
        summary="Early exit: keep the first decoder layers and the model's own final norm and head, the exit "
        "chosen by its KL from the full model on calibration text (max_kl) or named (layers); lossy, a smaller "
        "dense model every engine runs",
        needs_calibration=True,
    ),
    TechniqueSpec(
        name="distill",
        kind="transform",
        config=Distill,
        function="slipstream.techniques.distill.kd:apply",
        output_format="hf",
        summary="Knowledge distillation: train this variant (e.g. a pruned model) on its teacher's logits "
        "(KL with temperature, optional hidden-state MSE), or an embedding model on its teacher's sentence "
        "embeddings (cosine); resumable checkpoints, step/time budget",
        tasks=("causal-lm", "embedding"),
    ),
)
