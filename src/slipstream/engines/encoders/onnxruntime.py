"""ONNX Runtime for encoders exported by the onnx technique (float32, dynamic or static int8). No PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from slipstream.engines.encoders.base import EncoderBase
from slipstream.engines.options import OnnxRuntimeOptions
from slipstream.errors import Unsupported
from slipstream.extras import require


class OnnxRuntimeEncoder(EncoderBase):
    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "cpu", options: OnnxRuntimeOptions | None = None):
        o = options or OnnxRuntimeOptions()
        if device != "cpu":
            raise Unsupported(f"the ONNX Runtime engine here uses the CPU provider; device {device!r} is not available")
        super().__init__(path, batch_size=o.batch_size, threads=o.threads)
        ort = require("onnxruntime", "onnx", "the ONNX Runtime encoder")
        from slipstream.exporters.onnx import stored_quantization
        from slipstream.exporters.onnx_encoder import MODEL_FILE

        if o.max_context:
            self.max_context = min(self.max_context, o.max_context)
        self._ort = ort
        self.threads = o.threads or (os.cpu_count() or 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path / MODEL_FILE), so, providers=["CPUExecutionProvider"])
        self._output = self.session.get_outputs()[0].name
        self.quantization = stored_quantization(self.path) or "float32"

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {"input_ids": ids.astype(np.int64),
                                                 "attention_mask": mask.astype(np.int64)})[0]

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._output != "last_hidden_state":
            raise Unsupported(f"{self.path.name}: this ONNX graph returns a classifier's logits, not embeddings")
        return self._run(ids, mask)

    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(ids, mask)

    def _compute_type(self) -> str:
        return self.quantization

    def info(self):
        info = super().info()
        return type(info)(engine=self.name, device="cpu", compute_type=info.compute_type, threads=self.threads,
                          details=info.details | {"onnxruntime": self._ort.__version__})

    def close(self) -> None:
        self.session = None
