"""Kept for code that imports the tokenizer from its old place; it lives in :mod:`slipstream.tokenizer`."""

from slipstream.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
