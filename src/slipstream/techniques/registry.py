"""The one registry of techniques. Specs name their function by import path, so nothing heavy
is imported until a technique actually runs."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from slipstream.errors import InvalidConfig, NotFound
from slipstream.config import TechniqueConfig, coerce

Kind = Literal["transform", "export"]


@dataclass(frozen=True)
class TechniqueSpec:
    name: str
    kind: Kind
    config: type[TechniqueConfig]
    function: str  # "package.module:function"
    output_format: str  # the format of the variant it writes ("hf", "ctranslate2", ...)
    summary: str
    input_formats: tuple[str, ...] = ("hf",)
    extra: str | None = None  # the pip extra that provides its library
    needs_calibration: bool = False
    modules: tuple[str, ...] = ()  # modules the extra provides (default: the extra's name)
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its variants can run

    def load(self) -> Callable[..., Any]:
        return getattr(self.load_module(), self.function.partition(":")[2])

    def load_module(self) -> Any:
        return importlib.import_module(self.function.partition(":")[0])

    def extra_installed(self) -> bool:
        from slipstream.extras import is_available

        if self.extra is None:
            return True
        return all(is_available(m) for m in (self.modules or (self.extra.replace("-", "_"),)))

    def options(self) -> dict[str, Any]:
        """Field name -> (type hint, default) for the technique's config."""
        hints = typing.get_type_hints(self.config)
        return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(self.config)}


_REGISTRY: dict[str, TechniqueSpec] = {}


def register(spec: TechniqueSpec) -> TechniqueSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"technique {spec.name!r} registered twice")
    if spec.config.technique != spec.name:
        raise ValueError(f"{spec.config.__name__}.technique must be {spec.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    importlib.import_module("slipstream.techniques.catalog")


def get(name: str) -> TechniqueSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFound(f"unknown technique {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_techniques() -> list[TechniqueSpec]:
    _ensure_loaded()
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
