"""Prompt sets for benchmarks: bundled MT-bench and Vicuna questions, ``grounded`` (requests to rewrite, correct
or summarise a given passage, made from WikiText-2 *validation* paragraphs: the input-grounded work where an
output quotes its input, as prompt lookup needs), or the user's own JSONL.

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


GROUNDED_ASKS = ("Rewrite the following passage in plain English, keeping every fact:",
                 "Correct any errors in the following text and return the corrected text:",
                 "Copy the following passage, replacing every number with words:",
                 "Summarise the following passage, quoting its key sentences:")
WORKLOADS = ("fixed", *BUNDLED, "grounded")  # and file:PATH


def grounded(count: int = 16) -> list[str]:
    """``count`` input-grounded requests: each of :data:`GROUNDED_ASKS` in turn, on WikiText-2 validation
    paragraphs of 80-140 words (the calibration split, never the evaluated one)."""
    from slipstream.calibration import Calibration

    passages = [ln.strip() for ln in Calibration().lines() if 80 <= len(ln.split()) <= 140]
    return [f"{GROUNDED_ASKS[i % len(GROUNDED_ASKS)]}\n\n{passages[i * 5 % len(passages)]}" for i in range(count)]


def check_workload(workload: str) -> str:
    if workload not in WORKLOADS and not workload.startswith("file:"):
        raise InvalidConfig(f"unknown workload {workload!r}; use {', '.join(WORKLOADS)} or file:PATH")
    return workload


def load_prompts(workload: str, limit: int | None = None) -> list[str]:
    if workload == "grounded":
        return grounded(limit or 16)
    if workload in BUNDLED:
        path = resources.files("slipstream") / "data" / BUNDLED[workload]
    elif workload.startswith("file:"):
        path = Path(workload[5:])
        if not path.exists():
            raise NotFound(f"{path}: no such prompt file")
    else:
        raise NotFound(f"unknown workload {workload!r}; use {', '.join(WORKLOADS)} or file:PATH")
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
