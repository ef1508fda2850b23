"""What an encoder-decoder (seq2seq) model is given to translate: the raw source sentence, behind the task
prefix its family was trained with, never a chat prompt.

T5 (and Flan-T5) learnt translation as ``translate English to German: <sentence>``; Marian (OPUS-MT) and
BART-style models take the bare sentence. Families that pick the target language with a token forced at
the decoder's start (M2M100, NLLB, mBART-50) are refused: nothing here sets that token.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from slipstream.errors import Unsupported
from slipstream.evaluation.datasets import GenerationItem

# model types whose target language is a forced first decoder token (forced_bos_token_id)
_FORCED_LANGUAGE = frozenset({"m2m_100", "nllb-moe", "mbart", "seamless_m4t", "seamless_m4t_v2"})


def model_type(path: Path) -> str:
    from slipstream.engines.seq2seq.model_config import read_config

    return str(read_config(path).get("model_type", ""))


def default_prefix(kind: str, source_lang: str, target_lang: str) -> str:
    """The prefix a ``kind`` model was trained to translate behind ("" for none)."""
    return f"translate {source_lang} to {target_lang}: " if kind in ("t5", "umt5") else ""


def seq2seq_items(items: Sequence[GenerationItem], kind: str, prefix: str | None) -> list[GenerationItem]:
    """``items`` as a seq2seq model reads them. A built-in translation item keeps its bare source in
    ``meta`` and gets ``prefix`` (None: the family's default); a user's item keeps its own prompt, behind
    ``prefix`` when one is given."""
    if kind in _FORCED_LANGUAGE:
        raise Unsupported(f"translation evaluation of a {kind} model needs its target-language token forced at "
                          "the decoder's start, which slipstream does not set; T5, Marian and BART-style "
                          "models are evaluated")
    out = []
    for it in items:
        source = it.meta.get("source")
        if source is None:
            out.append(replace(it, prompt=(prefix or "") + it.prompt))
            continue
        given = prefix if prefix is not None else default_prefix(kind, it.meta["source_lang"], it.meta["target_lang"])
        out.append(replace(it, prompt=given + source))
    return out
