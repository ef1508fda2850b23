"""Frozen, typed configs: the base every technique config derives from, and the field checks and
string parsing that technique configs and engine options share.

It sits below every layer (techniques, exporters, engines, the CLI), so none of them imports another
layer's module to get it. A value given as a string (a command-line option, an environment variable)
is parsed by the field's annotation with :func:`coerce`, then every field is checked against its
annotation with :func:`check_fields`: a ``Literal`` lists its choices, a typo fails loudly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from slipstream.errors import InvalidConfig

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TechniqueConfig:
    """Subclasses are frozen dataclasses; the config is the identity of the variant it makes."""

    technique: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self)

    def slug(self) -> str:
        """A short name for variants made with this config (``ct2-int8``)."""
        return "-".join([self.technique, *(str(v) for v in dataclasses.astuple(self))])

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, **dataclasses.asdict(self)}

    def stand_in(self) -> "TechniqueConfig | None":
        """A cheaper config whose output has the same format, shapes and size, and so runs exactly as fast: what
        a speed search probes before paying for this one (docs/search.md#stand-ins). ``None``: this step only
        changes weight values (it can be left out); ``self``: there is nothing cheaper."""
        return self


def check_fields(config: Any, owner: str | None = None) -> None:
    """Check every field against its annotation (Literal choices, int, float, bool, str); ``owner`` names
    the config in the message (default: its ``technique``)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _matches(value, hints[f.name]):
            raise InvalidConfig(
                f"{owner or config.technique}: {f.name}={value!r} is not valid; expected {describe(hints[f.name])}"
            )


def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_mapping(cls: type[T], values: typing.Mapping[str, Any], owner: str) -> T:
    """Build the frozen config ``cls`` from ``values`` (typed values, or strings from a command line or the
    environment, parsed by each field's annotation). An unknown key is refused, naming it and listing
    the valid ones; a value outside a ``Literal`` is refused by :func:`check_fields`."""
    hints = field_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in hints:
            raise InvalidConfig(f"{owner} has no option {key!r}; its options: {', '.join(hints) or 'none'}")
        if isinstance(value, str):
            try:
                value = coerce(value, hints[name])
            except ValueError:
                raise InvalidConfig(f"{owner}: {name}={value!r} is not valid; expected {describe(hints[name])}") from None
        elif isinstance(value, list) and get_origin(hints[name]) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return isinstance(value, (tuple, list)) and all(_matches(v, args[0]) for v in value) if args else True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(h) for h in get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def coerce(text: str, hint: Any) -> Any:
    """Turn a command-line string into a value of the annotated type (checked later)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in get_args(hint):
            return None
        for h in get_args(hint):
            if h is type(None):
                continue
            try:
                value = coerce(text, h)
            except ValueError:
                continue
            if _matches(value, h):
                return value
        return text
    if origin is Literal:
        for choice in get_args(hint):
            if str(choice) == text:
                return choice
        return text
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if origin in (tuple, list):
        (inner, *_) = get_args(hint) or (str,)
        return tuple(coerce(t.strip(), inner) for t in text.split(",") if t.strip())
    return text


def modules_named(names: typing.Iterable[str], patterns: typing.Iterable[str], owner: str) -> set[str]:
    """The module ``names`` that ``patterns`` name, each pattern a whole name or its last dotted parts
    (``down_proj``, ``layers.0.mlp.down_proj``); a pattern that names none is an error listing what the
    module names end in, so that a typo never silently quantizes everything."""
    names = list(names)
    found: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if n == pattern or n.endswith("." + pattern)}
        if not hits:
            kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise InvalidConfig(f"{owner}: keep_float {pattern!r} names no weight of this model "
                                f"(module names end in: {', '.join(kinds)})")
        found |= hits
    return found
