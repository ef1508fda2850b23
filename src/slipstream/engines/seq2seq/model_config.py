"""What both seq2seq engines read from a model's transformers config: the longest source it takes, the tokens
it may never generate, and their shared refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from slipstream.errors import InvalidConfig, Unsupported


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` beside the weights, or in ``tokenizer/`` where an exporter keeps it."""
    for candidate in (Path(directory) / "config.json", Path(directory) / "tokenizer" / "config.json"):
        if candidate.exists():
            config = json.loads(candidate.read_text())
            if "model_type" in config:
                return config
    raise InvalidConfig(f"{Path(directory).name}: no transformers config.json")


def max_source_tokens(config: dict[str, Any]) -> int:
    """Learned positions bound the source (Marian, BART); T5's relative positions do not, so its
    ``n_positions`` (the length it was trained on) is taken."""
    for key in ("max_position_embeddings", "n_positions", "max_length"):
        if config.get(key):
            return int(config[key])
    return 512


def never_generated(config: dict[str, Any]) -> list[int]:
    """Marian's decoder starts from ``<pad>`` (the last id) and must never emit it: CTranslate2 drops it
    from the target vocabulary, and OPUS-MT's generation config bans it."""
    if config.get("model_type") == "marian" and config.get("pad_token_id") is not None:
        return [int(config["pad_token_id"])]
    return []


def check_sources(sources: Sequence[Sequence[int]], limit: int) -> None:
    for s in sources:
        if not s:
            raise InvalidConfig("a source has no tokens")
        if len(s) > limit:
            raise InvalidConfig(f"a source has {len(s)} tokens; this model takes at most {limit}")


def no_scoring(engine: str) -> Unsupported:
    return Unsupported(f"engine {engine!r} on an encoder-decoder model: score and logprobs are next-token "
                       "scores of one sequence, which a translation model does not give (it scores a target "
                       "given a source); evaluate it by generation (BLEU, chrF)")
