"""How an embedding model turns token states into one vector: its sentence-transformers pipeline's pooling
(``modules.json``, ``1_Pooling/config.json``) and whether it normalises. Read by every encoder engine and by
the techniques that train encoders, so all pool the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Mode = str  # "mean" | "cls" | "max" | "lasttoken"


@dataclass(frozen=True)
class Pooling:
    mode: Mode = "mean"
    normalize: bool = True

    @classmethod
    def from_dir(cls, path: Path) -> "Pooling":
        """Read a sentence-transformers pipeline's pooling; a bare encoder gets mean pooling, normalised (what
        most sentence encoders use, and OpenAI's embeddings are unit length)."""
        path = Path(path)
        modules_file = path / "modules.json"
        if not modules_file.exists():
            return cls()
        modules = json.loads(modules_file.read_text())
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        mode = "mean"
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                config_file = path / m.get("path", "1_Pooling") / "config.json"
                config = json.loads(config_file.read_text()) if config_file.exists() else {}
                for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                                  ("pooling_mode_lasttoken", "lasttoken"), ("pooling_mode_mean_tokens", "mean")):
                    if config.get(key):
                        mode = name
                        break
        return cls(mode=mode, normalize=normalize)

    def __call__(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = hidden.astype(np.float32, copy=False)
        m = mask[..., None].astype(np.float32)
        if self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = np.where(m > 0, hidden, -np.inf).max(axis=1)
        elif self.mode == "lasttoken":
            pooled = hidden[np.arange(len(hidden)), mask.sum(1).astype(int) - 1]
        else:
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        if self.normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32)

    def torch(self, hidden, mask):  # noqa: ANN001 - torch tensors, imported by the caller
        """The same pooling on torch tensors (``[b, t, d]`` states, ``[b, t]`` mask), differentiable."""
        import torch

        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
        elif self.mode == "lasttoken":
            pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
        else:
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled
