"""The OpenVINO engine: runs variants written by the OpenVINO exporter (float32, int8 or int4 weights) on
OpenVINO's CPU plugin.

The graph and the decode loop are :mod:`slipstream.engines.kv_graph`'s; this module runs one step. Two
infer requests take turns: each step's ``present.*`` output tensors are set as the other request's
``past.*`` inputs, so the KV cache stays in OpenVINO's own tensors (no copy through numpy per step), and a
request never writes its outputs over the tensors it is reading. The model is compiled with
``INFERENCE_PRECISION_HINT`` f32 unless asked otherwise: the plugin's own default is bf16 wherever the CPU
has bf16 instructions. No PyTorch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slipstream.engines.kv_graph import KVGraphEngine, max_context
from slipstream.engines.options import OpenVINOOptions
from slipstream.engines.protocol import EngineInfo
from slipstream.errors import Unsupported
from slipstream.extras import require
from slipstream.tokenizer import Tokenizer


class OpenVINOEngine(KVGraphEngine):
    name = "openvino"

    def __init__(self, path: Path, *, device: str = "cpu", options: OpenVINOOptions | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.OpenVINOOptions`), then ``changes`` by name."""
        o = OpenVINOOptions.of(options, **changes)
        if device != "cpu":
            raise Unsupported(f"the OpenVINO engine here uses the CPU plugin; device {device!r} is not available")
        ov = require("openvino", "openvino", "the OpenVINO engine")
        from slipstream.exporters.files import TOKENIZER_DIR
        from slipstream.exporters.onnx import stored_quantization
        from slipstream.exporters.openvino import MODEL_FILE

        path = Path(path)
        self._ov = ov
        self.options = o
        self.device = device
        self.batch_size = o.batch_size
        self._threads = o.threads or (os.cpu_count() or 1)
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self._threads, "NUM_STREAMS": 1,
                                  "INFERENCE_PRECISION_HINT": o.inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if o.dynamic_quantization is not None:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = o.dynamic_quantization
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(str(path / MODEL_FILE)), "CPU", config)
        self._requests = [self._compiled.create_infer_request() for _ in range(2)]
        self._turn = 0
        self._past = [i.get_any_name() for i in self._compiled.inputs if i.get_any_name().startswith("past.")]
        self._present = [o.get_any_name() for o in self._compiled.outputs if o.get_any_name().startswith("present.")]
        shape = self._compiled.input(self._past[0]).get_partial_shape()  # [batch, kv_heads, past, head_dim]
        self._kv_heads, self._head_dim = shape[1].get_length(), shape[3].get_length()
        self._dynamic_quantization = self._compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
        self.quantization = stored_quantization(path) or "float32"
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.max_context = o.max_context or max_context(path / TOKENIZER_DIR)

    def info(self) -> EngineInfo:
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32"
        return EngineInfo("openvino", self.device, self.quantization, self._threads,
                          {"openvino": self._ov.__version__, "inference_precision": precision,
                           "dynamic_quantization": self._dynamic_quantization})

    def close(self) -> None:
        self._requests = []
        self._compiled = None

    # one forward step -----------------------------------------------------------------------
    def _empty_past(self, batch: int) -> list[Any]:
        empty = self._ov.Tensor(np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=np.float32))
        return [empty] * len(self._past)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                 past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Run one step on the request whose turn it is; return the logits (a view of its output, valid
        until its next turn) and the presents as its own output tensors (the other request's next past)."""
        request = self._requests[self._turn]
        self._turn ^= 1
        for name, value in (("input_ids", ids), ("attention_mask", mask), ("position_ids", positions)):
            request.set_tensor(name, self._ov.Tensor(np.ascontiguousarray(value, dtype=np.int64)))
        for name, tensor in zip(self._past, past):
            request.set_tensor(name, tensor)
        request.infer()
        return request.get_tensor("logits").data, [request.get_tensor(name) for name in self._present]
