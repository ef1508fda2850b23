"""Evaluation data that ships with slipstream (see ``slipstream/data/README.md`` for sources and licences)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from slipstream.errors import NotFound

DATA = resources.files("slipstream") / "data"

TEXT_SETS = {
    "wikitext2": ("wikitext2/test.txt", "WikiText-2 test split (word-tokenised v1, CC BY-SA 3.0)"),
}


def text_set(name: str) -> str:
    if name not in TEXT_SETS:
        raise NotFound(f"unknown text set {name!r}; known: {', '.join(TEXT_SETS)}")
    return (DATA / TEXT_SETS[name][0]).read_text(encoding="utf-8")


def read_text_file(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NotFound(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise NotFound(f"{path}: the file is empty")
    return text
