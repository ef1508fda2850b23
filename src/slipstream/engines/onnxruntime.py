"""The ONNX Runtime engine: runs variants written by the ONNX exporter (float32 or int8).

The graph takes ``input_ids``, ``attention_mask``, ``position_ids`` and the past keys/values of each
layer, and returns logits and the presents. Decoding binds each step's presents straight back as
the next step's past through an IO binding, so the KV cache stays inside ONNX Runtime's own buffers
(no copy through numpy per step). A batch of prompts is left-padded, with positions counted from
each row's first real token, as transformers does. No PyTorch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import generate_by_steps, stream_by_steps
from slipstream.engines.options import OnnxRuntimeOptions
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule, log_softmax, pick
from slipstream.tokenizer import Tokenizer
from slipstream.errors import Unsupported
from slipstream.extras import require


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "cpu", options: OnnxRuntimeOptions | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.OnnxRuntimeOptions`), then ``changes`` by name."""
        o = OnnxRuntimeOptions.of(options, **changes)
        if device != "cpu":
            raise Unsupported(f"the ONNX Runtime engine here uses the CPU provider; device {device!r} is not available")
        ort = require("onnxruntime", "onnx", "the ONNX Runtime engine")
        from slipstream.exporters.files import TOKENIZER_DIR
        from slipstream.exporters.onnx import MODEL_FILE, stored_quantization

        path = Path(path)
        self._ort = ort
        self.options = o
        self.device = device
        self.batch_size = o.batch_size
        self._threads = o.threads or (os.cpu_count() or 1)
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
        self.quantization = stored_quantization(path) or "float32"
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.max_context = o.max_context or _max_context(path / TOKENIZER_DIR)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

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

    # scoring --------------------------------------------------------------------------------
    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = [list(s) for s in sequences[start : start + self.batch_size]]
            width = max(len(s) for s in batch)
            ids = np.full((len(batch), width), self._tokenizer.pad_token_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for i, s in enumerate(batch):  # right padding: positions count from 0 in every row
                ids[i, : len(s)] = s
                mask[i, : len(s)] = 1
            positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape)
            logits, _ = self._forward(ids, mask, positions, self._empty_past(len(batch)))
            out.extend(log_softmax(logits[i, : len(s)]) for i, s in enumerate(batch))
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = []
        for seq, lp in zip(sequences, self.logprobs(sequences)):
            target = np.asarray(seq[1:], dtype=np.int64)
            out.append(lp[np.arange(len(target)), target].astype(np.float32))
        return out

    # generation -----------------------------------------------------------------------------
    def _steps(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Iterator[list[int | None]]:
        """Yield, per step, the token each row produced (None once the row has finished)."""
        rng = np.random.default_rng(params.seed)
        rules = [StopRule(params, self._tokenizer.eos_token_ids) for _ in prompts]
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = np.full((n, width), self._tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, p in enumerate(prompts):  # left padding
            ids[i, width - len(p) :] = list(p)
            mask[i, width - len(p) :] = 1
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        logits, past = self._forward(ids, mask, positions, self._empty_past(n))
        rows = logits[:, -1]
        done = [False] * n
        while True:
            chosen = [None if done[i] else pick(rows[i], params, rng, rules[i].banned) for i in range(n)]
            yield chosen
            done = [d or rule.take(c) is not None for d, c, rule in zip(done, chosen, rules)]
            if all(done):
                return
            feed = np.array([[c if c is not None else self._tokenizer.pad_token_id] for c in chosen], dtype=np.int64)
            positions = positions[:, -1:] + 1
            mask = np.concatenate([mask, np.ones((n, 1), dtype=np.int64)], axis=1)
            logits, past = self._forward(feed, mask, positions, past)
            rows = logits[:, -1]

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        return generate_by_steps(self._steps, self._tokenizer, prompts, params, self.batch_size)

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        return stream_by_steps(self._steps, self._tokenizer, prompt, params)


def _max_context(tokenizer_dir: Path) -> int:
    import json

    f = tokenizer_dir / "config.json"
    if f.exists():
        cfg = json.loads(f.read_text())
        cfg = cfg.get("text_config", cfg)
        for key in ("max_position_embeddings", "n_positions"):
            if cfg.get(key):
                return int(cfg[key])
    return 2048
