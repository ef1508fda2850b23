"""Tokens to text as they arrive: incremental decoding and stop sequences.

Text is released only when it is final: a trailing incomplete UTF-8 character (decoded as U+FFFD) or
the start of a possible stop sequence is held back until the next token settles it. When a stop
sequence appears, the text before it is released and the stream is over.
"""

from __future__ import annotations

from typing import Sequence

from slipstream.engines.finishing import first_stop
from slipstream.tokenizer import Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # decoded text of ids, up to a stop sequence once one is seen
        self.sent = 0  # characters of text already released
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the newly final text (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if self.stops:
            cut = first_stop(text, self.stops)
            if cut is not None:
                self.text, self.stopped = text[:cut], True
                return self._release(len(self.text))
        self.text = text
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))
        safe = min(safe, len(text) - self._hold) if self.stops else safe
        return self._release(safe)

    def flush(self) -> str:
        """The generation has ended: release everything left."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent:upto]
        self.sent = upto
        return out

    def token_ids(self) -> list[int]:
        """The ids that make up :attr:`text` (cut at a stop sequence, if one was seen)."""
        if not self.stopped:
            return list(self.ids)
        for n in range(len(self.ids) + 1):
            if len(self.tokenizer.decode(self.ids[:n])) >= len(self.text):
                return self.ids[:n]
        return list(self.ids)
