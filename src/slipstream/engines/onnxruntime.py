"""The ONNX Runtime engine: runs variants written by the ONNX exporter (float32 or int8).

The graph and the decode loop are :mod:`slipstream.engines.kv_graph`'s; this module runs one step.
Decoding binds each step's presents straight back as the next step's past through an IO binding, so the
KV cache stays inside ONNX Runtime's own buffers (no copy through numpy per step). No PyTorch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slipstream.engines.kv_graph import KVGraphEngine
from slipstream.engines.options import OnnxRuntimeOptions
from slipstream.engines.protocol import EngineInfo
from slipstream.extras import require


class OnnxRuntimeEngine(KVGraphEngine):
    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "cpu", options: OnnxRuntimeOptions | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.OnnxRuntimeOptions`), then ``changes`` by name."""
        o = OnnxRuntimeOptions.of(options, **changes)
        path = Path(path)
        self._open(path, o, device, "the ONNX Runtime engine here uses the CPU provider")
        ort = require("onnxruntime", "onnx", "the ONNX Runtime engine")
        from slipstream.exporters.onnx import MODEL_FILE

        self._ort = ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past = [n for n in inputs if n.startswith("past.")]
        self._present = [o.name for o in self.session.get_outputs() if o.name.startswith("present.")]
        shape = inputs[self._past[0]].shape  # [batch, kv_heads, past, head_dim]
        self._kv_heads, self._head_dim = int(shape[1]), int(shape[3])

    def info(self) -> EngineInfo:
        return EngineInfo("onnxruntime", self.device, self.quantization, self._threads,
                          {"onnxruntime": self._ort.__version__})

    def close(self) -> None:
        self.session = None

    # one forward step -----------------------------------------------------------------------
    def _empty_past(self, batch: int) -> list[Any]:
        empty = np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=np.float32)
        return [self._ort.OrtValue.ortvalue_from_numpy(empty) for _ in self._past]

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                 past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Run one step; return the logits and the presents as OrtValues (to bind as the next past)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions, dtype=np.int64))
        for name, value in zip(self._past, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), present
