"""Incremental detokenizing: text is released once final, stop sequences cut text and tokens."""

from __future__ import annotations

from slipstream.serving.textstream import TextStream
from tests.serving.fakes import FakeTokenizer

TOK = FakeTokenizer()


def feed(stream: TextStream, text: str) -> list[str]:
    return [stream.push(t) for t in TOK.encode(text)]


def test_without_stops_every_token_is_released_at_once():
    s = TextStream(TOK)
    assert feed(s, "hello") == ["h", "e", "l", "l", "o"]
    assert s.flush() == "" and s.text == "hello" and not s.stopped


def test_a_stop_sequence_split_over_tokens_is_held_back_then_cut():
    s = TextStream(TOK, stops=["xyz", "lo w"])
    out = feed(s, "hello world")
    assert "".join(out) == "hel" and s.stopped  # "lo w" never went out, even partly
    assert s.text == "hel" and TOK.decode(s.token_ids()) == "hel"
    assert s.push(0) == ""  # nothing after the stop


def test_held_back_text_is_released_at_the_end():
    s = TextStream(TOK, stops=["xyz"])
    out = feed(s, "abcx")
    assert "".join(out) == "ab"  # "cx" could still become "...xyz"
    assert s.flush() == "cx" and s.text == "abcx"
