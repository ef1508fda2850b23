"""CTranslate2's ``Encoder``: BERT-family encoders converted by the CTranslate2 technique.

CTranslate2 returns the last hidden states; pooling and normalisation are the model's own (base.py), so its
vectors compare one to one with the transformers encoder's. Its converter takes BERT, DistilBERT, RoBERTa,
XLM-RoBERTa and CamemBERT encoders (not MPNet), and drops classification heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slipstream.engines.encoders.base import EncoderBase
from slipstream.engines.options import CTranslate2Options
from slipstream.extras import require


class CTranslate2Encoder(EncoderBase):
    name = "ctranslate2"

    def __init__(self, path: Path, *, device: str = "cpu", options: CTranslate2Options | None = None):
        o = options or CTranslate2Options()
        super().__init__(path, batch_size=o.batch_size, threads=o.threads)
        ct2 = require("ctranslate2", "ctranslate2", "the CTranslate2 encoder")
        from slipstream.exporters.ctranslate2 import check_runnable

        check_runnable(self.path, device, o.compute_type)
        if o.max_context:
            self.max_context = min(self.max_context, o.max_context)
        self._ct2 = ct2
        self.device = device
        self.encoder = ct2.Encoder(str(self.path), device=device, compute_type=o.compute_type,
                                   intra_threads=o.threads or 0)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lengths = mask.sum(1)
        batch = [row[:n].tolist() for row, n in zip(ids, lengths)]
        out = self.encoder.forward_batch(batch, token_type_ids=[[0] * len(b) for b in batch])
        hidden = np.asarray(out.last_hidden_state)
        if hidden.dtype != np.float32:
            hidden = hidden.astype(np.float32)
        return hidden

    def _compute_type(self) -> str:
        return self.encoder.compute_type

    def info(self):
        import os

        info = super().info()
        return type(info)(engine=self.name, device=self.device, compute_type=info.compute_type,
                          threads=self.threads or (os.cpu_count() or 1),
                          details=info.details | {"ctranslate2": self._ct2.__version__})

    def close(self) -> None:
        self.encoder = None
