"""The ``onnx`` technique's entry point: decoders go through :mod:`slipstream.exporters.onnx` (a graph with a
KV cache), encoders (embedding and classification models) through :mod:`slipstream.exporters.onnx_encoder`."""

from __future__ import annotations

from pathlib import Path

from slipstream.exporters.onnx import ONNX
from slipstream.progress import Progress


def export(src: Path, out: Path, config: ONNX, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.models.tasks import ENCODER_TASKS, detect

    if (task := detect(src)) in ENCODER_TASKS:
        from slipstream.exporters import onnx_encoder

        return onnx_encoder.export(src, out, config, task, device, progress)
    from slipstream.exporters import onnx

    return onnx.export(src, out, config, device, progress)
