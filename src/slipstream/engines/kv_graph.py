"""The decode loop shared by engines that run slipstream's exported causal-LM graph with a flat key/value cache
(ONNX Runtime, OpenVINO).

The graph (written by :func:`slipstream.exporters.onnx.export_float`) takes ``input_ids``,
``attention_mask``, ``position_ids`` and ``past.{i}.key`` / ``past.{i}.value`` per layer, and returns
``logits`` and ``present.{i}.key`` / ``present.{i}.value``, which the next step takes as its past. Prefill is
the same graph with a past of length 0. A batch of prompts is left-padded, with positions counted from each
row's first real token, as transformers does; scoring right-pads with positions from 0.

A subclass calls :meth:`KVGraphEngine._open` first, then opens its runtime, and provides only
:meth:`KVGraphEngine._forward` (one step in its runtime, the presents kept in the runtime's own tensors) and
:meth:`KVGraphEngine._empty_past`; the loop, sampling, scoring, ``generate`` and ``stream`` are here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import generate_by_steps, stream_by_steps, token_scores
from slipstream.engines.protocol import Completion, SamplingParams
from slipstream.engines.sampling import StopRule, log_softmax, pick
from slipstream.tokenizer import Tokenizer


class KVGraphEngine:
    """``generate``, ``stream``, ``score`` and ``logprobs`` over a flat-cache graph; subclasses set
    ``_tokenizer`` and ``batch_size`` and implement :meth:`_forward` and :meth:`_empty_past`."""

    _tokenizer: Tokenizer
    batch_size: int

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def _open(self, path: Path, options: Any, device: str, refusal: str) -> None:
        """What every runtime's constructor does first: refuse a device other than the CPU (``refusal`` says
        which CPU backend the runtime uses), keep the options, and read the thread count, the stored
        quantization, the tokenizer and the context length kept beside the graph."""
        from slipstream.errors import Unsupported
        from slipstream.exporters.files import TOKENIZER_DIR
        from slipstream.exporters.onnx import stored_quantization

        if device != "cpu":
            raise Unsupported(f"{refusal}; device {device!r} is not available")
        self.options, self.device, self.batch_size = options, device, options.batch_size
        self._threads = options.threads or (os.cpu_count() or 1)
        self.quantization = stored_quantization(path) or "float32"
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.max_context = options.max_context or max_context(path / TOKENIZER_DIR)

    # one forward step: the runtime's part ---------------------------------------------------
    def _empty_past(self, batch: int) -> list[Any]:
        """A past of length 0 for ``batch`` rows, one tensor per ``past.*`` input, in the runtime's type."""
        raise NotImplementedError

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                 past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Run one step; return the logits ([batch, tokens, vocab], valid until the next step after this
        one) and the presents in the runtime's own tensors (to be passed back as the next step's past)."""
        raise NotImplementedError

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
            positions = np.ascontiguousarray(np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape))
            logits, _ = self._forward(ids, mask, positions, self._empty_past(len(batch)))
            out.extend(log_softmax(logits[i, : len(s)]) for i, s in enumerate(batch))
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return token_scores(sequences, self.logprobs(sequences))

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


def max_context(tokenizer_dir: Path) -> int:
    """The parent model's context length, from the config.json kept beside the variant's tokenizer."""
    f = tokenizer_dir / "config.json"
    if f.exists():
        cfg = json.loads(f.read_text())
        cfg = cfg.get("text_config", cfg)
        for key in ("max_position_embeddings", "n_positions"):
            if cfg.get(key):
                return int(cfg[key])
    return 2048
