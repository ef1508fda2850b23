"""What every encoder engine shares: the model's pooling, batching by length, and truncation.

An engine supplies ``_hidden(ids, mask)`` (the last hidden states of one padded batch) and, for classifiers,
``_logits``; this class pads, pools and normalises exactly as the model's sentence-transformers pipeline
says (``modules.json``, ``1_Pooling/config.json``), so every engine returns the same kind of vector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from slipstream.engines.protocol import EngineInfo
from slipstream.models.pooling import Pooling
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.tokenizer import Tokenizer

def config_dir(path: Path) -> Path:
    """Where a variant keeps its transformers config and tokenizer: beside the weights, or in ``tokenizer/``."""
    return path / "tokenizer" if (path / "tokenizer" / "config.json").exists() else path


class EncoderBase:
    name = "encoder"

    def __init__(self, path: Path, *, batch_size: int, threads: int | None):
        from slipstream.models.tasks import detect

        self.path = Path(path)
        cfg_dir = config_dir(self.path)
        self.config: dict[str, Any] = json.loads((cfg_dir / "config.json").read_text())
        self.task = detect(self.path)
        if self.task not in ("embedding", "classification"):
            raise Unsupported(f"{self.path.name}: a {self.task} model, not an encoder")
        self._tokenizer = Tokenizer.from_dir(cfg_dir)
        self.pooling = Pooling.from_dir(cfg_dir)
        st = cfg_dir / "sentence_bert_config.json"
        st_max = json.loads(st.read_text()).get("max_seq_length") if st.exists() else None
        positions = int(self.config.get("max_position_embeddings") or 512)
        # RoBERTa-style models offset positions by the padding index: their usable length is 2 less.
        usable = positions - (2 if self.config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "mpnet")
                              else 0)
        self.max_context = int(min(st_max or usable, usable))
        self.dimensions = int(self.config.get("hidden_size") or 0)
        self.batch_size = batch_size
        self.threads = threads
        self.pad_id = int(self.config.get("pad_token_id") or self._tokenizer.pad_token_id or 0)
        self.labels = dict((self.config.get("id2label") or {}).items()) if self.task == "classification" else {}

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    # -- what an engine implements --------------------------------------------------------------
    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise Unsupported(f"engine {self.name!r} does not run classification heads")

    # -- the protocol -----------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with the model's special tokens, cut to ``max_context`` (the end token kept)."""
        out = []
        for text in texts:
            ids = self._tokenizer.encode(text)
            if len(ids) > self.max_context:
                ids = ids[: self.max_context - 1] + ids[-1:]
            out.append(ids)
        return out

    def embed(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        return self._batched(sequences, lambda ids, mask: self.pooling(self._hidden(ids, mask), mask),
                             self.dimensions)

    def classify(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        if self.task != "classification":
            raise Unsupported(f"{self.path.name} has no classification head (an {self.task} model)")
        return self._batched(sequences, self._logits, len(self.labels) or None)

    def _batched(self, sequences, run, width) -> np.ndarray:
        seqs = [list(map(int, s)) for s in sequences]
        for s in seqs:
            if not s:
                raise InvalidConfig("an input has no tokens")
            if len(s) > self.max_context:
                raise InvalidConfig(f"an input has {len(s)} tokens; this model takes at most {self.max_context}")
        if not seqs:
            return np.zeros((0, width or 0), np.float32)
        # Sorted by length so a batch pads little; answers go back in the order given.
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: list[np.ndarray | None] = [None] * len(seqs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width_t = max(len(seqs[i]) for i in chunk)
            ids = np.full((len(chunk), width_t), self.pad_id, np.int64)
            mask = np.zeros((len(chunk), width_t), np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            result = run(ids, mask)
            for row, i in enumerate(chunk):
                out[i] = result[row]
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device="cpu", compute_type=self._compute_type(),
                          threads=self.threads or 0,
                          details={"task": self.task, "pooling": self.pooling.mode,
                                   "normalize": self.pooling.normalize, "dimensions": self.dimensions})

    def _compute_type(self) -> str:
        return "float32"

    def close(self) -> None:
        pass
