"""Loading and saving transformers models for transforms (model in, model out, same format)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from slipstream.extras import require
from slipstream.models.checks import CONFIG_FILES, TOKENIZER_FILES, copy_sentence_files


def load_model(src: Path, dtype: str = "float32", device: str = "cpu") -> Any:
    """The model in ``src`` with the head its task needs (a causal LM's, a classifier's, none for an encoder)."""
    torch = require("torch", "core")
    from slipstream.models.heads import load_pretrained
    from slipstream.models.tasks import detect

    model = load_pretrained(src, detect(src), dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model


def save_model(model: Any, src: Path, out: Path) -> None:
    """Save ``model`` as safetensors beside the parent's tokenizer files."""
    model.save_pretrained(out)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (src / name).exists() and not (out / name).exists():
            shutil.copy2(src / name, out / name)
    for name in CONFIG_FILES:
        if not (out / name).exists() and (src / name).exists():
            shutil.copy2(src / name, out / name)
    copy_sentence_files(src, out)


def pad_batch(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    """Token-id lists as one right-padded ``[batch, longest]`` tensor and its attention mask."""
    torch = require("torch", "core")
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    return ids, mask
