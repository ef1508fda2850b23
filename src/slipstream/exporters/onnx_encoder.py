"""ONNX export of encoders (embedding models and classifiers) for ONNX Runtime, the ``onnx`` technique's path
for models whose task is ``embedding`` or ``classification``.

The graph takes ``input_ids`` and ``attention_mask`` (batch and length dynamic) and returns the last hidden
states (an embedding model: pooling stays in the engine, as the model's pipeline says) or a classifier's
logits. Quantization: ``int8_dynamic`` (weights int8 per channel, activations per token or per tensor),
``int8_static`` (ONNX Runtime's ``quantize_static``, QDQ, activation ranges calibrated on sentences of the
calibration text: one sentence per sample, as an encoder sees them), or ``float32``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

from slipstream.errors import Unsupported
from slipstream.exporters.files import copy_tokenizer
from slipstream.extras import require
from slipstream.progress import Progress, or_null

MODEL_FILE = "model.onnx"
OPSET = 18
# Static int8's default float MatMuls per family: the projections out of the MLP (and attention), whose inputs
# (after GELU) carry outliers that one fixed range per tensor cannot follow (all-MiniLM-L6-v2's mean cosine
# to the original: 0.93 with every MatMul in int8, 0.99 with these in float; docs/encoders.md).
STATIC_KEEP_FLOAT = {"bert": ("output.dense",), "roberta": ("output.dense",), "xlm-roberta": ("output.dense",),
                     "camembert": ("output.dense",), "mpnet": ("output.dense",), "electra": ("output.dense",),
                     "distilbert": ("ffn.lin2",)}


def export_float(src: Path, path: Path, task: str) -> dict[str, Any]:
    torch = require("torch", "core")
    require("onnxscript", "onnx", "ONNX export")
    from slipstream.models.heads import load_pretrained

    model = load_pretrained(src, task, dtype=torch.float32, attn_implementation="eager").eval()
    output = "logits" if task == "classification" else "last_hidden_state"

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return getattr(self.inner(input_ids=input_ids, attention_mask=attention_mask), output)

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.config.max_position_embeddings)
    example = (torch.randint(5, model.config.vocab_size, (2, 7)), torch.ones(2, 7, dtype=torch.long))
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Wrapper(model), example, dynamo=True, input_names=["input_ids", "attention_mask"],
                                    output_names=[output], dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                                    opset_version=OPSET, verbose=False, optimize=True)
    program.save(str(path))
    return {"output": output, "opset": OPSET}


def _sentence_feeds(src: Path, config: Any, on_sample: Any) -> Iterator[dict[str, Any]]:
    """Calibration inputs for static int8: passages of the calibration text, each cut to the same length
    (at most ``sequence_length``, at most 128 tokens, with the model's special tokens): ONNX Runtime's
    histogram calibrators need samples of one shape."""
    import numpy as np

    from slipstream.tokenizer import Tokenizer

    calibration = config.calibration_settings()
    tokenizer = Tokenizer.from_dir(src)
    length = min(calibration.sequence_length, 128)
    made, passage = 0, ""
    for line in calibration.lines():
        if made >= calibration.samples:
            return
        passage += " " + line.strip()
        ids = tokenizer.encode(passage.strip())
        if len(ids) < length:
            continue
        ids = ids[: length - 1] + ids[-1:]  # keep the closing special token ([SEP], </s>)
        passage = ""
        made += 1
        on_sample()
        yield {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}


def export(src: Path, out: Path, config: Any, task: str, device: str = "cpu",
           progress: Progress | None = None) -> dict[str, Any]:
    """Export the encoder in ``src`` into ``out`` with ``config`` (the onnx technique's config)."""
    if device != "cpu":
        raise Unsupported(f"ONNX export here targets ONNX Runtime's CPU provider, not {device}")
    if config.quantization == "int8_blockwise":
        raise Unsupported("onnx: int8_blockwise (MatMulNBits) is for decoders' weight-bound steps; an encoder "
                          "takes float32, int8_dynamic or int8_static")
    ort = require("onnxruntime", "onnx", "ONNX export")
    progress = or_null(progress)
    target = out / MODEL_FILE
    staging = out / "float.tmp"
    staging.mkdir()
    try:
        with progress.task("exporting the encoder to ONNX (torch.onnx, dynamo)"):
            facts = export_float(src, staging / MODEL_FILE, task)
        if config.quantization == "float32":
            shutil.move(str(staging / MODEL_FILE), target)
        else:
            with progress.task(f"quantizing with ONNX Runtime ({config.quantization})"):
                facts |= _quantize(staging / MODEL_FILE, target, config, src, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for extra in out.glob("*.data"):  # a small encoder keeps its weights inside the graph
        extra.unlink()
    copy_tokenizer(src, out)
    return facts | {"onnxruntime": ort.__version__, "task": task}


def _quantize(inp: Path, out: Path, config: Any, src: Path, progress: Progress | None) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from slipstream.exporters.onnx import _reader, weight_matmuls

    # The config's defaults name decoder modules (down_proj, q_proj...): an encoder has its own.
    keep = config.keep_float or ()
    if keep == config.default_keep_float():
        import json

        model_type = json.loads((src / "config.json").read_text()).get("model_type", "")
        keep = STATIC_KEEP_FLOAT.get(model_type, ()) if config.quantization == "int8_static" else ()
    nodes, kept = weight_matmuls(inp, False, src, keep)
    reduce_range = config.resolved_reduce_range()
    facts: dict[str, Any] = {"quantized_matmuls": len(nodes), "float_matmuls": len(kept), "reduce_range": reduce_range}
    if config.quantization == "int8_dynamic" and config.activations == "per_token":
        from slipstream.exporters.onnx_per_token import quantize_per_token

        quantize_per_token(inp, out, nodes, per_channel=config.per_channel, reduce_range=reduce_range)
        return facts | {"activations": "per_token"}
    if config.quantization == "int8_dynamic":
        quantize_dynamic(str(inp), str(out), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                         per_channel=config.per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8)
        return facts | {"activations": "per_tensor"}
    calibration = config.calibration_settings()
    with or_null(progress).task(f"calibrating on {calibration.source}", total=calibration.samples) as bar:
        quantize_static(str(inp), str(out), _reader(_sentence_feeds(src, config, bar.advance), calibration.samples),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                        per_channel=config.per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax if config.ranges == "minmax" else
                        CalibrationMethod.Percentile, extra_options={"CalibPercentile": config.percentile})
    return facts | {"calibration": calibration.source, "samples": calibration.samples}
