"""The transformers (PyTorch) encoder: the reference every other encoder engine is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slipstream.engines.encoders.base import EncoderBase
from slipstream.engines.options import TransformersOptions
from slipstream.extras import require


class TransformersEncoder(EncoderBase):
    name = "transformers"

    def __init__(self, path: Path, *, device: str = "cpu", options: TransformersOptions | None = None,
                 trust_remote_code: bool = False):
        options = options or TransformersOptions()
        super().__init__(path, batch_size=options.batch_size, threads=options.threads)
        torch = require("torch", "core")
        from slipstream.models.heads import load_pretrained

        if options.threads:
            torch.set_num_threads(options.threads)
        self._torch = torch
        self.device = device
        self.dtype = options.dtype
        self.model = load_pretrained(self.path, self.task, dtype=getattr(torch, options.dtype),
                                     trust_remote_code=trust_remote_code).to(device).eval()

    def _run(self, ids: np.ndarray, mask: np.ndarray, **kwargs):
        torch = self._torch
        with torch.inference_mode():
            return self.model(input_ids=torch.from_numpy(ids).to(self.device),
                              attention_mask=torch.from_numpy(mask).to(self.device), **kwargs)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return self._run(ids, mask, output_hidden_states=True).hidden_states[-1].float().cpu().numpy()
        return self._run(ids, mask).last_hidden_state.float().cpu().numpy()

    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(ids, mask).logits.float().cpu().numpy()

    def _compute_type(self) -> str:
        return self.dtype

    def info(self):
        info = super().info()
        return type(info)(engine=info.engine, device=self.device, compute_type=info.compute_type,
                          threads=self._torch.get_num_threads(), details=info.details)
