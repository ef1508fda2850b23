"""Open the right engine for a variant, from the format its manifest records."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from slipstream.devices import resolve_device
from slipstream.engines.protocol import Engine
from slipstream.errors import Unsupported
from slipstream.store import Store, Variant

# format -> (default engine, {engine name: "module:Class"})
ENGINES: dict[str, dict[str, str]] = {
    "hf": {"transformers": "slipstream.engines.transformers:TransformersEngine"},
    "ctranslate2": {"ctranslate2": "slipstream.engines.ctranslate2:CTranslate2Engine"},
    "onnx": {"onnxruntime": "slipstream.engines.onnxruntime:OnnxRuntimeEngine"},
    "gguf": {"llamacpp": "slipstream.engines.llamacpp:LlamaCppEngine"},
}


def engines_for(fmt: str) -> list[str]:
    return list(ENGINES.get(fmt, {}))


def open_engine(
    variant: Variant | str,
    *,
    engine: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    store: Store | None = None,
    **options: Any,
) -> Engine:
    """Load ``variant`` (a store entry or its name) on a fitting engine."""
    if isinstance(variant, str):
        variant = (store or Store()).get(variant)
    choices = ENGINES.get(variant.format)
    if not choices:
        raise Unsupported(f"no engine runs variants of format {variant.format!r}")
    engine = engine or next(iter(choices))
    if engine not in choices:
        raise Unsupported(
            f"engine {engine!r} cannot run {variant.name!r} ({variant.format}); use one of: {', '.join(choices)}"
        )
    module, _, cls = choices[engine].partition(":")
    factory = getattr(importlib.import_module(module), cls)
    kwargs: dict[str, Any] = {"device": resolve_device(device), "threads": threads, **options}
    from slipstream.store.manifest import Manifest

    extra = Manifest.read(Path(variant.path)).extra
    # Settings the technique recorded for the engine (a cast's compute dtype); explicit options win.
    for key, value in ((extra.get("facts") or {}).get("engine_options") or {}).items():
        kwargs.setdefault(key, value)
    if variant.format == "hf":
        kwargs.setdefault("trust_remote_code", bool(extra.get("trust_remote_code")))
    return factory(Path(variant.path), **kwargs)
