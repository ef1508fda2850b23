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
    "hf": {"transformers": "slipstream.engines.transformers:TransformersEngine",
           "vllm": "slipstream.engines.vllm:VLLMEngine"},  # its own interpreter: see engines/vllm_server.py
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
    module, cls = _engine_path(variant, engine)
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


def _engine_path(variant: Variant, engine: str | None) -> tuple[str, str]:
    choices = ENGINES.get(variant.format)
    if not choices:
        raise Unsupported(f"no engine runs variants of format {variant.format!r}")
    engine = engine or next(iter(choices))
    if engine not in choices:
        raise Unsupported(
            f"engine {engine!r} cannot run {variant.name!r} ({variant.format}); use one of: {', '.join(choices)}"
        )
    module, _, cls = choices[engine].partition(":")
    return module, cls


def preflight(variant: Variant | str, *, engine: str | None = None, device: str | None = None,
              store: Store | None = None) -> None:
    """Refuse, in one line and before anything is loaded or started, a variant, engine and device that
    cannot run together (an engine module says so with its own ``preflight(path, device)``)."""
    if isinstance(variant, str):
        variant = (store or Store()).get(variant)
    module, _ = _engine_path(variant, engine)
    check = getattr(importlib.import_module(module), "preflight", None)
    if check is not None:
        check(Path(variant.path), resolve_device(device))
