"""Errors meant for the user: each carries a one-line message that names the problem."""

from __future__ import annotations


class SlipstreamError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits with status 1."""


class NotFound(SlipstreamError):
    """A model, variant, file or result that was asked for does not exist."""


class InvalidModel(SlipstreamError):
    """A source exists but is not a model slipstream can take in."""


class UnsafeModel(SlipstreamError):
    """A source would run code on load (pickle weights, remote code) and that was not allowed."""


class MissingExtra(SlipstreamError):
    """An optional dependency is not installed."""


class Unsupported(SlipstreamError):
    """A technique, setting or device combination that cannot run here."""


class CorruptVariant(SlipstreamError):
    """A variant's files on disk differ from what its manifest recorded when it was written."""


class InvalidConfig(SlipstreamError):
    """A technique configuration or option that fails validation."""
