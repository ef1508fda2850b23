"""What the registry knows about a technique: its config type, the function that applies it (by import
path, so nothing heavy is imported until it runs), and its needs declared as data."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from slipstream.config import TechniqueConfig

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
    tasks: tuple[str, ...] = ("causal-lm",)  # the model tasks it takes (slipstream.models.tasks)

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
