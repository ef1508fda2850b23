"""How a byte-level BPE tokenizer's pre-tokenizer is named in a GGUF file, both ways.

llama.cpp does not run a tokenizer.json: it runs its own BPE with one of a fixed set of splitting
rules, chosen by the file's ``tokenizer.ggml.pre`` (llama-vocab.cpp). llama.cpp's converter picks that
name by hashing how the Hugging Face tokenizer splits a test string; slipstream reads the
tokenizer.json's pre-tokenizer instead and maps it onto the llama.cpp rule that splits text the same
way. A pre-tokenizer with no such rule is refused rather than written under a wrong name, which would
make llama.cpp tokenize text differently from the model's own tokenizer.

The same table rebuilds the Hugging Face pre-tokenizer of a byte-level GGUF on import: transformers'
GGUF conversion keeps only the byte-level step (SmolLM2 loses its digit splitting) and adds a
byte-fallback that byte-level vocabularies never use.
"""

from __future__ import annotations

import json
from typing import Any

_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


# llama.cpp pre-tokenizer name -> the Hugging Face pre-tokenizer that splits text the same way, and
# whether the BPE model must take a pre-token that is itself in the vocabulary whole (llama.cpp's
# ``ignore_merges``, set for these names in llama-vocab.cpp).
PRE_TOKENIZERS: dict[str, tuple[dict[str, Any], bool]] = {
    "gpt-2": (_byte_level(True), False),
    # StarCoder's rule; llama.cpp's converter writes "smollm" for SmolLM's tokenizer (same split, no
    # clean-up of spaces on decode) and "starcoder" for StarCoder's
    "smollm": ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                       _byte_level(True)]}, False),
    "starcoder": ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                          _byte_level(True)]}, False),
    "llama-bpe": ({"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]}, True),
    "qwen2": ({"type": "Sequence", "pretokenizers": [_split(_QWEN2_REGEX), _byte_level(False)]}, False),
}


def _signature(pre: dict[str, Any] | None) -> tuple:
    """The parts of a pre-tokenizer that decide how text is split (not offsets)."""
    if pre is None:
        return ()
    kind = pre.get("type")
    if kind == "Sequence":
        return tuple(s for p in pre.get("pretokenizers", []) for s in _signature(p))
    if kind == "ByteLevel":
        return (("ByteLevel", bool(pre.get("add_prefix_space", True)), bool(pre.get("use_regex", True))),)
    if kind == "Digits":
        return (("Digits", bool(pre.get("individual_digits", False))),)
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return (("Split", pattern.get("Regex", pattern.get("String")), pre.get("behavior"),
                 bool(pre.get("invert", False))),)
    return ((kind, json.dumps(pre, sort_keys=True)),)


def is_byte_level(tokenizer_json: dict[str, Any]) -> bool:
    """A byte-level BPE vocabulary (GPT-2's bytes-as-characters), llama.cpp's ``gpt2`` model."""
    return any(part[0] == "ByteLevel" for part in _signature(tokenizer_json.get("pre_tokenizer")))


def pre_tokenizer_name(tokenizer_json: dict[str, Any], clean_up_spaces: bool = False) -> str:
    """llama.cpp's name for this byte-level BPE tokenizer's splitting rule; refuse one it has no rule for.
    ``clean_up_spaces`` is the tokenizer config's ``clean_up_tokenization_spaces``."""
    from slipstream.errors import Unsupported

    signature = _signature(tokenizer_json.get("pre_tokenizer"))
    ignore_merges = bool(tokenizer_json.get("model", {}).get("ignore_merges", False))
    for name, (pre, wants_ignore_merges) in PRE_TOKENIZERS.items():
        if name == ("smollm" if clean_up_spaces else "starcoder"):
            continue  # same split: pick by whether decoding cleans up spaces, as llama.cpp's names do
        if _signature(pre) == signature and ignore_merges == wants_ignore_merges:
            return name
    raise Unsupported(
        "GGUF export: llama.cpp has no pre-tokenizer that splits text as this tokenizer does "
        f"({json.dumps(tokenizer_json.get('pre_tokenizer'))[:200]}); known: {', '.join(PRE_TOKENIZERS)}")


def restore_byte_level(state: dict[str, Any], pre_name: str) -> dict[str, Any] | None:
    """A tokenizer.json (as a dict) that transformers built from a byte-level GGUF, rebuilt as the
    model's own tokenizer for llama.cpp's pre-tokenizer ``pre_name``; None for a name not in the table."""
    entry = PRE_TOKENIZERS.get(pre_name)
    if entry is None or state.get("model", {}).get("type") != "BPE":
        return None
    pre, ignore_merges = entry
    state = dict(state)
    state["model"] = dict(state["model"], byte_fallback=False, ignore_merges=ignore_merges)
    state["normalizer"] = None
    state["pre_tokenizer"] = pre
    state["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return state
