"""Kept for code that imports the technique config base from its old place; it lives in
:mod:`slipstream.config`, below every layer."""

from slipstream.config import TechniqueConfig, check_fields, coerce, describe, modules_named

__all__ = ["TechniqueConfig", "check_fields", "coerce", "describe", "modules_named"]
