"""Open the right engine for a variant, from the format its manifest records."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from slipstream.devices import resolve_device
from slipstream.engines.options import EngineOptions, options_class
from slipstream.engines.protocol import Engine
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.store import Store, Variant

# format -> {engine name: "module:Class"}, the first the default: causal language models
ENGINES: dict[str, dict[str, str]] = {
    "hf": {"transformers": "slipstream.engines.transformers:TransformersEngine",
           "vllm": "slipstream.engines.vllm:VLLMEngine"},  # its own interpreter: see engines/vllm_server.py
    "ctranslate2": {"ctranslate2": "slipstream.engines.ctranslate2:CTranslate2Engine"},
    "onnx": {"onnxruntime": "slipstream.engines.onnxruntime:OnnxRuntimeEngine"},
    "openvino": {"openvino": "slipstream.engines.openvino:OpenVINOEngine"},
    "gguf": {"llamacpp": "slipstream.engines.llamacpp:LlamaCppEngine"},
}
# Encoders (embedding and classification models) speak the Encoder protocol: token ids in, one vector out.
_ENCODERS: dict[str, dict[str, str]] = {
    "hf": {"transformers": "slipstream.engines.encoders.transformers:TransformersEncoder"},
    "ctranslate2": {"ctranslate2": "slipstream.engines.encoders.ctranslate2:CTranslate2Encoder"},
    "onnx": {"onnxruntime": "slipstream.engines.encoders.onnxruntime:OnnxRuntimeEncoder"},
}
# Encoder-decoder (seq2seq) models speak the Engine protocol: source token ids in, target tokens out.
_SEQ2SEQ: dict[str, dict[str, str]] = {
    "hf": {"transformers": "slipstream.engines.seq2seq.transformers:TransformersSeq2Seq"},
    "ctranslate2": {"ctranslate2": "slipstream.engines.seq2seq.ctranslate2:CTranslate2Translator"},
}
# task -> format -> engines
BY_TASK: dict[str, dict[str, dict[str, str]]] = {
    "causal-lm": ENGINES, "embedding": _ENCODERS, "classification": _ENCODERS, "seq2seq": _SEQ2SEQ,
}


def engines_for(fmt: str, task: str = "causal-lm") -> list[str]:
    return list(BY_TASK.get(task, {}).get(fmt, {}))


def open_engine(
    variant: Variant | str,
    *,
    engine: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    store: Store | None = None,
    options: EngineOptions | Mapping[str, Any] | None = None,
    **option_values: Any,
) -> Engine:
    """Load ``variant`` (a store entry or its name) on a fitting engine.

    ``options``: the engine's typed options (:mod:`slipstream.engines.options`), an instance of its class
    or a mapping (values, or strings as a command line gives them); keyword arguments are more of them
    (``gemm="torch"``). Settings the technique recorded for the engine (a cast's dtype) come first and
    what is given here wins (an instance gives the fields it sets to other than their defaults);
    ``threads`` is the option of that name. An option the engine does not take is refused by name.
    """
    if isinstance(variant, str):
        variant = (store or Store()).get(variant)
    name = engine_name(variant, engine)
    module, cls = _engine_path(variant, name)
    from slipstream.store.manifest import verify
    from slipstream.models.tasks import task_of

    extra = verify(Path(variant.path)).extra  # a variant changed on disk is refused before it is loaded
    given = options.given() if isinstance(options, EngineOptions) else dict(options or {})
    given.update(option_values)
    if threads is not None:
        if given.get("threads") not in (None, threads):
            raise InvalidConfig(f"threads given twice: {threads} and engine option threads={given['threads']}")
        given["threads"] = threads
    # Settings the technique recorded for the engines that take them; explicit options win.
    kind = options_class(name)
    recorded = {k: v for k, v in ((extra.get("facts") or {}).get("engine_options") or {}).items() if k in kind.names()}
    opts = kind.of({**recorded, **given})
    if getattr(opts, "beam_size", 1) > 1 and task_of(variant) != "seq2seq":
        raise Unsupported(f"engine option beam_size is for seq2seq models; {variant.name!r} is a "
                          f"{task_of(variant)} model")
    kwargs: dict[str, Any] = {"device": resolve_device(device), "options": opts}
    if variant.format == "hf":
        kwargs["trust_remote_code"] = bool(extra.get("trust_remote_code"))
    factory = getattr(importlib.import_module(module), cls)
    return factory(Path(variant.path), **kwargs)


def engine_name(variant: Variant, engine: str | None = None) -> str:
    """The engine that runs ``variant``: ``engine`` if it can, else the format's default; refused in one
    line when it cannot."""
    from slipstream.models.tasks import task_of

    task = task_of(variant)
    choices = BY_TASK[task].get(variant.format)
    if not choices:
        raise Unsupported(f"no engine runs {task} variants of format {variant.format!r}"
                          + (f" ({variant.name!r})" if getattr(variant, "name", None) else ""))
    engine = engine or next(iter(choices))
    if engine not in choices:
        raise Unsupported(
            f"engine {engine!r} cannot run {variant.name!r} ({task}, {variant.format}); use one of: {', '.join(choices)}"
        )
    return engine


def batching_for(variant: Variant, engine: str | None = None) -> str:
    """How a server batches requests on this engine: ``continuous`` where the engine can step a running batch
    (admit and retire sequences between decoding steps), else ``dynamic`` (whole batches)."""
    module, cls = _engine_path(variant, engine)
    factory = getattr(importlib.import_module(module), cls)
    return "continuous" if callable(getattr(factory, "stepper", None)) else "dynamic"


def _engine_path(variant: Variant, engine: str | None) -> tuple[str, str]:
    from slipstream.models.tasks import task_of

    module, _, cls = BY_TASK[task_of(variant)][variant.format][engine_name(variant, engine)].partition(":")
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
