"""The one registry of techniques: the catalog's specs by name, and configs built from options. Specs
name their function by import path, so nothing heavy is imported until a technique actually runs."""

from __future__ import annotations

import types
import typing
from typing import Any

from slipstream.config import TechniqueConfig, coerce
from slipstream.errors import InvalidConfig, NotFound
from slipstream.techniques.catalog import CATALOG
from slipstream.techniques.spec import Kind, TechniqueSpec

__all__ = ["Kind", "TechniqueSpec", "all_techniques", "config_from_dict", "get", "make_config", "spec_for"]


def _index(specs: typing.Iterable[TechniqueSpec]) -> dict[str, TechniqueSpec]:
    index: dict[str, TechniqueSpec] = {}
    for spec in specs:
        if spec.name in index:
            raise ValueError(f"technique {spec.name!r} listed twice")
        if spec.config.technique != spec.name:
            raise ValueError(f"{spec.config.__name__}.technique must be {spec.name!r}")
        index[spec.name] = spec
    return index


_REGISTRY: dict[str, TechniqueSpec] = _index(CATALOG)


def get(name: str) -> TechniqueSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFound(f"unknown technique {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_techniques() -> list[TechniqueSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def spec_for(config: TechniqueConfig) -> TechniqueSpec:
    return get(config.technique)


def _holds_tuple(hint: Any) -> bool:
    """Whether a field annotated ``hint`` (``tuple[...]``, or a union with one) takes a tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_holds_tuple(h) for h in typing.get_args(hint))
    return typing.get_origin(hint) is tuple


def make_config(name: str, options: dict[str, Any] | None = None) -> TechniqueConfig:
    """Build a technique's config from options given as strings (CLI) or values (Python, files)."""
    spec = get(name)
    fields = spec.options()
    kwargs = {}
    for key, value in (options or {}).items():
        key = key.replace("-", "_")
        if key == "technique":
            continue
        if key not in fields:
            raise InvalidConfig(
                f"technique {name!r} has no option {key!r}; its options: {', '.join(fields) or 'none'}"
            )
        if isinstance(value, str):
            value = coerce(value, fields[key][0])
        elif isinstance(value, list) and _holds_tuple(fields[key][0]):
            value = tuple(value)  # JSON (manifests, recipe files) has lists; frozen configs hold tuples
        kwargs[key] = value
    try:
        return spec.config(**kwargs)
    except TypeError as exc:
        raise InvalidConfig(f"technique {name!r}: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> TechniqueConfig:
    data = dict(data)
    return make_config(data.pop("technique"), data)
