"""Which LoRA adapters a server may load: store entries made by ``slipstream adapters import`` whose base is
the served variant or one of its ancestors (an adapter trained on the float model runs over its quantized
variant: float low-rank updates on a quantized base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig  # noqa: F401 - what resolve() raises


class AdapterCatalog:
    def __init__(self, store: Any, variant: str):
        self.store, self.variant = store, variant

    def resolve(self, name: str) -> Path:
        """The adapter's directory; a one-line refusal when it is not an adapter of this model."""
        from slipstream.models.adapters import adapter_for

        return adapter_for(self.store, name, self.variant)


def can_serve(engine: Any, mode: str) -> bool:
    """Whether this engine, batching so, runs adapters: the transformers engine in its continuous batch, or
    vLLM (which batches them itself)."""
    if not hasattr(engine, "adapters"):
        return False
    return mode == "continuous" or getattr(engine, "name", "") == "vllm"


def check_engine(engine: Any, mode: str) -> None:
    if not hasattr(engine, "adapters"):
        raise InvalidConfig(f"LoRA adapters run on the transformers and vllm engines; this server runs {engine.name}")
    if not can_serve(engine, mode):
        raise InvalidConfig(f"LoRA adapters run in the continuous batch; this server batches {mode!r} "
                            "(batching: auto or continuous)")
