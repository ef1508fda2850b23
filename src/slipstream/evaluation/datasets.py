"""Reading evaluation items from JSONL files, with errors that name the file and line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from slipstream.errors import InvalidConfig, NotFound

DATA = resources.files("slipstream") / "data"


@dataclass(frozen=True)
class MultipleChoiceItem:
    id: str
    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class GenerationItem:
    id: str
    prompt: str
    references: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def read_jsonl(path: Path | Any, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record); a bad line raises an error naming ``path:line``."""
    name = str(path)
    if isinstance(path, Path) and not path.exists():
        raise NotFound(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidConfig(f"{name}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise InvalidConfig(f"{name}:{number}: expected a JSON object, got {type(record).__name__}")
            for key in required:
                if key not in record:
                    raise InvalidConfig(f"{name}:{number}: no field {key!r} (fields: {', '.join(record) or 'none'})")
            yield number, record


def arc(subset: str, limit: int | None = None) -> list[MultipleChoiceItem]:
    """AI2 ARC test items, in lm-evaluation-harness's format: ``Question: ...\\nAnswer:`` + each choice."""
    path = DATA / "arc" / f"ARC-{subset}-Test.jsonl"
    items = []
    for number, r in read_jsonl(path, ("question", "answerKey")):
        q = r["question"]
        labels = [c["label"] for c in q["choices"]]
        if r["answerKey"] not in labels:
            raise InvalidConfig(f"{path}:{number}: answerKey {r['answerKey']!r} is not one of {labels}")
        items.append(MultipleChoiceItem(
            id=r.get("id", str(number)),
            context=f"Question: {q['stem']}\nAnswer:",
            choices=tuple(c["text"] for c in q["choices"]),
            answer=labels.index(r["answerKey"]),
        ))
        if limit is not None and len(items) >= limit:
            break
    return items


FLORES_LANGS = {"en": ("eng_Latn", "English"), "de": ("deu_Latn", "German"), "fr": ("fra_Latn", "French")}


def flores(source: str, target: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(source sentence, reference translation) pairs from FLORES-200 devtest."""
    def lines(lang: str) -> list[str]:
        code = FLORES_LANGS[lang][0]
        return (DATA / "flores200" / f"{code}.devtest").read_text(encoding="utf-8").splitlines()

    pairs = list(zip(lines(source), lines(target)))
    return pairs[:limit] if limit is not None else pairs
