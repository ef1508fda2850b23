"""The OpenVINO engine: runs variants written by the OpenVINO exporter (float32, int8 or int4 weights) on
OpenVINO's CPU plugin.

The graph and the decode loop are :mod:`slipstream.engines.kv_graph`'s; this module runs one step. Each step
gives the infer request new OpenVINO tensors of the step's shapes for its outputs, which the plugin writes
into, and the ``present.*`` ones are set as the next step's ``past.*`` inputs: the KV cache stays in
OpenVINO tensors (no copy through numpy per step), and no step writes over a tensor another still holds, so
decodes may be interleaved (one thread at a time: the request is shared). The model is compiled with
``INFERENCE_PRECISION_HINT`` f32 unless asked otherwise: the plugin's own default is bf16 wherever the CPU
has bf16 instructions. No PyTorch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slipstream.engines.kv_graph import KVGraphEngine
from slipstream.engines.options import OpenVINOOptions
from slipstream.engines.protocol import EngineInfo
from slipstream.extras import require


class OpenVINOEngine(KVGraphEngine):
    name = "openvino"

    def __init__(self, path: Path, *, device: str = "cpu", options: OpenVINOOptions | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.OpenVINOOptions`), then ``changes`` by name."""
        o = OpenVINOOptions.of(options, **changes)
        path = Path(path)
        self._open(path, o, device, "the OpenVINO engine here uses the CPU plugin")
        ov = require("openvino", "openvino", "the OpenVINO engine")
        from slipstream.exporters.openvino import MODEL_FILE

        self._ov = ov
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self._threads, "NUM_STREAMS": 1,
                                  "INFERENCE_PRECISION_HINT": o.inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if o.dynamic_quantization is not None:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = o.dynamic_quantization
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(str(path / MODEL_FILE)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._past = [i.get_any_name() for i in self._compiled.inputs if i.get_any_name().startswith("past.")]
        self._present = [o.get_any_name() for o in self._compiled.outputs if o.get_any_name().startswith("present.")]
        shape = self._compiled.input(self._past[0]).get_partial_shape()  # [batch, kv_heads, past, head_dim]
        self._kv_heads, self._head_dim = shape[1].get_length(), shape[3].get_length()
        self._vocab = self._compiled.output("logits").get_partial_shape()[2].get_length()
        self._dynamic_quantization = self._compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")

    def info(self) -> EngineInfo:
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32"
        return EngineInfo("openvino", self.device, self.quantization, self._threads,
                          {"openvino": self._ov.__version__, "inference_precision": precision,
                           "dynamic_quantization": self._dynamic_quantization})

    def close(self) -> None:
        self._request = None
        self._compiled = None

    # one forward step -----------------------------------------------------------------------
    def _empty_past(self, batch: int) -> list[Any]:
        empty = self._ov.Tensor(np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=np.float32))
        return [empty] * len(self._past)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                 past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Run one step into output tensors made for it; return the logits (a numpy view of its tensor) and
        the presents (OpenVINO tensors, to be set as the next step's past)."""
        ov, request = self._ov, self._request
        (batch, new), total = ids.shape, mask.shape[1]
        for name, value in (("input_ids", ids), ("attention_mask", mask), ("position_ids", positions)):
            request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value, dtype=np.int64)))
        for name, tensor in zip(self._past, past):
            request.set_tensor(name, tensor)
        logits = ov.Tensor(ov.Type.f32, [batch, new, self._vocab])
        present = [ov.Tensor(ov.Type.f32, [batch, self._kv_heads, total, self._head_dim]) for _ in self._present]
        request.set_tensor("logits", logits)
        for name, tensor in zip(self._present, present):
            request.set_tensor(name, tensor)
        request.infer()
        return logits.data, present
