"""Calibration data for techniques that look at activations (SmoothQuant, GPTQ, AWQ, pruning).

A calibration set is a setting: a bundled text set or ``file:PATH``, a sample count and a sequence
length. Samples are produced one at a time from text read line by line, so memory stays bounded
whatever the file size. The bundled default is WikiText-2 *validation*, which never overlaps the
WikiText-2 *test* text that evaluation scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from slipstream.tokenizer import Tokenizer
from slipstream.errors import InvalidConfig, NotFound

BUNDLED = {"wikitext2-valid": "wikitext2/valid.txt"}
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
