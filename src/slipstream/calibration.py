"""Calibration data for techniques that look at activations (SmoothQuant, GPTQ, AWQ, pruning).

A calibration set is a setting: a bundled text set or ``file:PATH``, a sample count and a sequence
length. Samples are produced one at a time from text read line by line, so memory stays bounded
whatever the file size. The bundled default is WikiText-2 *validation*, which never overlaps the
WikiText-2 *test* text that evaluation scores.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from slipstream.tokenizer import Tokenizer
from slipstream.errors import InvalidConfig, NotFound

BUNDLED = {"wikitext2-valid": "wikitext2/valid.txt"}
T = TypeVar("T")
EVALUATION_TEXTS = {"wikitext2": "wikitext2/test.txt"}


@dataclass(frozen=True)
class Calibration:
    source: str = "wikitext2-valid"
    samples: int = 64
    sequence_length: int = 512

    def __post_init__(self) -> None:
        if self.samples < 1 or self.sequence_length < 2:
            raise InvalidConfig("calibration needs samples >= 1 and sequence_length >= 2")
        if self.source in EVALUATION_TEXTS:
            raise InvalidConfig(f"calibration source {self.source!r} is evaluation text; use wikitext2-valid or a file")
        if self.source not in BUNDLED and not self.source.startswith("file:"):
            raise InvalidConfig(f"unknown calibration source {self.source!r}; use one of {', '.join(BUNDLED)} or file:PATH")

    def lines(self) -> Iterator[str]:
        if self.source.startswith("file:"):
            path = Path(self.source[5:])
            if not path.exists():
                raise NotFound(f"calibration file {path}: no such file")
            with open(path, encoding="utf-8") as f:
                yield from f
        else:
            with (resources.files("slipstream") / "data" / BUNDLED[self.source]).open(encoding="utf-8") as f:
                yield from f

    def batches(self, tokenizer: Tokenizer, bos: bool = False) -> Iterator[list[int]]:
        """``samples`` sequences of exactly ``sequence_length`` tokens, consecutive in the text; with
        ``bos``, each starts with the model's BOS token where its tokenizer adds one (as the model runs
        and as evaluation text is scored: Gemma without it is off its training distribution)."""
        if bos:
            prefix = tokenizer.bos_prefix()
            for ids in self.batches(tokenizer):
                yield prefix + ids[: len(ids) - len(prefix)]
            return
        buffer: list[int] = []
        made = 0
        for line in self.lines():
            if not line.strip():
                continue
            buffer.extend(tokenizer.encode(line, add_special_tokens=False))
            while len(buffer) >= self.sequence_length:
                yield buffer[: self.sequence_length]
                buffer = buffer[self.sequence_length :]
                made += 1
                if made == self.samples:
                    return
        if made == 0:
            raise InvalidConfig(f"calibration source {self.source!r} has fewer than {self.sequence_length} tokens")


# --- statistics shared by the recipes that need them ------------------------------------------------

def model_cache_dir(src: Path, folder: str = "calibration") -> tuple[Path, str] | None:
    """Where what is derived once per model from the store variant at ``src`` is kept (``cache/<folder>/`` of its
    store), and its content digest (None: ``src`` is not a variant of a store, so nothing is kept)."""
    src = Path(src).resolve()
    manifest = src / "slipstream.json"  # the store's manifest (slipstream.store.manifest.MANIFEST)
    if src.parent.name != "variants" or not manifest.exists():
        return None
    digest = json.loads(manifest.read_text()).get("sha256")
    return (src.parent.parent / "cache" / folder, digest) if digest else None


def shared_statistics(src: Path, kind: str, calibration: Calibration, compute: Callable[[], T],
                      **settings: Any) -> tuple[T, bool]:
    """``compute()``'s statistics of the model at ``src`` on ``calibration``, measured once per model: kept in the
    store (``cache/calibration/``) under the model's content digest, ``kind``, the calibration set and
    ``settings``, so every recipe and every later search that needs the same statistics of the same model reads
    them instead (SmoothQuant's activation maxima serve a fixed alpha, alpha="auto" and W8A8's smoothing alike).
    Returns them and whether they were read. ``compute`` returns what ``torch.save`` keeps with
    ``weights_only`` loading: tensors, numbers, strings, None, in lists and dicts."""
    import torch

    where = model_cache_dir(src)
    if where is None:
        return compute(), False
    root, digest = where
    key = json.dumps({"model": digest, "kind": kind, "calibration": asdict(calibration), **settings},
                     sort_keys=True, default=str)
    path = root / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True), True
        except Exception:  # a torn or foreign file: measure again and replace it
            pass
    value = compute()
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)  # whole or absent, even with two recipes measuring at once
    return value, False
