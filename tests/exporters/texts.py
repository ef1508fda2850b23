"""A fixed set of sentences that exported tokenizers must split exactly as the original: FLORES-200
devtest in English, German and French, WikiText-2 test lines, and a few hard cases."""

from __future__ import annotations

from slipstream.evaluation.datasets import flores
from slipstream.evaluation.data import text_set

HARD = [
    "Tabs\tand   three spaces, \u00fcnic\u00f6de \u65e5\u672c and emoji \U0001f642",
    "Numbers: 1234567, 3.14159, \u00bd and \u2153; years 1999-2024.",
    "Apostrophes: don't, it's, we'll, they've, I'd. DON'T SHOUT",
    "  leading spaces\n\nand blank lines\r\nwith CRLF",
    "\u00c7a co\u00fbte 12\u202f\u20ac \u00e0 l'\u00e9t\u00e9 \u2014 \u00ab guillemets \u00bb",
]


def sentences(per_set: int = 12) -> list[str]:
    pairs_de, pairs_fr = flores("en", "de", per_set), flores("en", "fr", per_set)
    # WikiText writes rare words as "<unk>", a special token to transformers and plain text to llama.cpp
    wiki = [line.strip().replace("<unk>", "unk") for line in text_set("wikitext2").splitlines()
            if len(line.strip()) > 40][:per_set]
    return ([en for en, _ in pairs_de] + [de for _, de in pairs_de] + [fr for _, fr in pairs_fr]
            + wiki + HARD)
