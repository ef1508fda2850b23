"""OpenVINO export: slipstream's own ONNX graph of a causal LM, converted to OpenVINO IR, its weights
optionally compressed by NNCF (int8 or int4, symmetric or asymmetric, group-wise).

The graph is :func:`slipstream.exporters.onnx.export_float`'s (flat ``input_ids``, ``attention_mask``,
``position_ids`` and ``past.{i}.key/value`` inputs; ``logits`` and ``present.{i}.key/value`` outputs), read
by OpenVINO's ONNX frontend (``openvino.convert_model``) and saved in float32 (``compress_to_fp16`` off, so
the float32 variant stays float32). optimum-intel is not used: it pins transformers below 5.

Weight compression is NNCF's data-free ``compress_weights``: int8 one scale per output channel, or int4
in groups of ``group_size`` along the input dimension with ``ratio`` of the weights (by parameter count) in
int4 and the rest, the embedding and the output head among them, in int8 (NNCF's backup precision,
asymmetric). A matrix whose input width ``group_size`` does not divide takes the largest power of two that
does, at least 32 (NNCF's ADJUST fallback), else int8. Activations stay float32; OpenVINO's CPU plugin
multiplies compressed weights by decompressing them (and, by default, quantizing activations dynamically:
the engine's ``dynamic_quantization`` option). The variant directory holds ``openvino_model.xml`` /
``openvino_model.bin`` and a ``tokenizer/`` folder with the parent's tokenizer and config.json.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Literal

from slipstream.config import TechniqueConfig
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.exporters.files import copy_tokenizer
from slipstream.extras import require
from slipstream.progress import Progress, or_null

Quantization = Literal["float32", "int8_asym", "int8_sym", "int4_sym", "int4_asym"]
QUANTIZATIONS: tuple[str, ...] = Quantization.__args__  # type: ignore[attr-defined]
MODEL_FILE = "openvino_model.xml"
_INT4 = ("int4_sym", "int4_asym")
_DEFAULT_GROUP, _DEFAULT_RATIO = 128, 1.0


@dataclasses.dataclass(frozen=True)
class OpenVINO(TechniqueConfig):
    """Export to OpenVINO IR, with NNCF weight compression unless ``quantization`` is float32."""

    technique = "openvino"
    quantization: Quantization = "int8_asym"
    # int4: weights sharing one scale (and zero point, asymmetric) along the input dimension; None: one per
    # output channel
    group_size: int | None = _DEFAULT_GROUP
    # int4: the share of the weights (by parameter count, embedding and output head apart) in int4, the rest
    # int8; NNCF picks which by a data-free sensitivity measure
    ratio: float = _DEFAULT_RATIO

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size is not None and (self.group_size < 16 or self.group_size & (self.group_size - 1)):
            raise InvalidConfig(f"openvino: group_size must be a power of two >= 16, or none for one scale per "
                                f"output channel; got {self.group_size}")
        if not 0.0 < self.ratio <= 1.0:
            raise InvalidConfig(f"openvino: ratio (the share of weights in int4) must be in (0, 1]; got {self.ratio}")
        if self.quantization not in _INT4 and (self.group_size != _DEFAULT_GROUP or self.ratio != _DEFAULT_RATIO):
            raise InvalidConfig(f"openvino: group_size and ratio apply to int4_sym and int4_asym only, not "
                                f"{self.quantization} (int8 has one scale per output channel)")

    def slug(self) -> str:
        if self.quantization == "float32":
            return "ov-fp32"
        name = "ov-" + self.quantization.replace("_", "-")
        if self.quantization in _INT4:
            name += f"-g{self.group_size}" if self.group_size else "-pc"
            name += "" if self.ratio == 1.0 else f"-r{self.ratio:g}"
        return name


def compress(model: Any, config: OpenVINO) -> tuple[Any, dict[str, Any]]:
    """``model`` (an ``openvino.Model``) with NNCF's weight compression; facts on what it did."""
    import logging

    nncf = require("nncf", "openvino", "OpenVINO weight compression")
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    mode = getattr(nncf.CompressWeightsMode, config.quantization.upper())
    kwargs: dict[str, Any] = {}
    if config.quantization in _INT4:
        kwargs = {"group_size": config.group_size or -1, "ratio": config.ratio,
                  "advanced_parameters": AdvancedCompressionParameters(
                      group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)}
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)  # its bit-width table goes into the facts instead
    try:
        model = nncf.compress_weights(model, mode=mode, **kwargs)
    finally:
        logger.setLevel(level)
    return model, {"nncf": nncf.__version__, "compressed_matrices": weight_types(model)}


def weight_types(model: Any) -> dict[str, int]:
    """How many weight matrices the model stores in each integer type (``u8``, ``i4``, ...)."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        shape = op.get_output_partial_shape(0)
        if op.get_type_name() != "Constant" or len(shape) < 2 or shape[-1].get_length() == 1:
            continue  # not a matrix, or a zero point (one per row or group)
        kind = op.get_output_element_type(0).get_type_name()
        if kind in ("u8", "i8", "u4", "i4"):
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def export(src: Path, out: Path, config: OpenVINO, device: str = "cpu", progress: Progress | None = None) -> dict:
    """Export the transformers model in ``src`` into ``out``; return facts for the manifest."""
    if device != "cpu":
        raise Unsupported(f"the OpenVINO export here targets OpenVINO's CPU plugin, not {device}")
    from slipstream.exporters.onnx import MODEL_FILE as ONNX_FILE, check_model, float_graph

    check_model(src)
    ov = require("openvino", "openvino", "OpenVINO export")
    require("onnxscript", "openvino", "OpenVINO export (through torch.onnx)")
    progress = or_null(progress)
    staging = out / "onnx.tmp"
    staging.mkdir()
    try:
        with progress.task("exporting to ONNX (torch.onnx, dynamo)"):
            shape = float_graph(src, staging / ONNX_FILE)
        with progress.task("converting to OpenVINO IR"):
            model = ov.convert_model(str(staging / ONNX_FILE))
        facts: dict[str, Any] = {k: shape[k] for k in ("layers", "kv_heads", "head_dim", "float_graph")}
        if config.quantization != "float32":
            with progress.task(f"compressing weights with NNCF ({config.quantization})"):
                model, done = compress(model, config)
            facts |= done
        ov.save_model(model, str(out / MODEL_FILE), compress_to_fp16=False)
        del model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    copy_tokenizer(src, out)
    return facts | {"openvino": ov.__version__}
