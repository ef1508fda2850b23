"""Prompt sets for benchmarks: bundled MT-bench and Vicuna questions, or the user's own JSONL.

A JSONL file may hold ``{"prompt": ...}``, ``{"instruction": ...}`` (AlpacaEval) or ``{"turns": [...]}``
(MT-bench / Vicuna) records; the first turn is the request.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from slipstream.errors import InvalidConfig, NotFound
from slipstream.evaluation.datasets import read_jsonl

BUNDLED = {"mt-bench": "prompts/mt-bench.jsonl", "vicuna": "prompts/vicuna.jsonl"}
FIELDS = ("prompt", "instruction", "turns")


def load_prompts(workload: str, limit: int | None = None) -> list[str]:
    if workload in BUNDLED:
        path = resources.files("slipstream") / "data" / BUNDLED[workload]
    elif workload.startswith("file:"):
        path = Path(workload[5:])
        if not path.exists():
            raise NotFound(f"{path}: no such prompt file")
    else:
        raise NotFound(f"unknown workload {workload!r}; use fixed, {', '.join(BUNDLED)} or file:PATH")
    prompts = []
    if str(path).endswith(".json"):
        import json

        records = [(i + 1, r) for i, r in enumerate(json.loads(Path(str(path)).read_text()))]
    else:
        records = list(read_jsonl(path))
    for number, record in records:
        field = next((f for f in FIELDS if f in record), None)
        if field is None:
            raise InvalidConfig(f"{path}:{number}: no prompt field (one of {', '.join(FIELDS)})")
        value = record[field]
        prompts.append(value[0] if isinstance(value, list) else str(value))
        if limit and len(prompts) >= limit:
            break
    if not prompts:
        raise InvalidConfig(f"{path}: no prompts")
    return prompts
