"""Which LoRA adapters a server may load: store entries made by ``slipstream adapters import`` whose base is
the served variant or one of its ancestors (an adapter trained on the float model runs over its quantized
variant: float low-rank updates on a quantized base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig


class AdapterCatalog:
    def __init__(self, store: Any, variant: str):
        self.store, self.variant = store, variant
        self.lineage = [variant]
        parent = store.get(variant).parent
        while parent and store.exists(parent):
            self.lineage.append(parent)
            parent = store.get(parent).parent

    def resolve(self, name: str) -> Path:
        """The adapter's directory; a one-line refusal when it is not an adapter of this model."""
        if not self.store.exists(name):
            raise InvalidConfig(f"no adapter {name!r} in the store (slipstream adapters import DIR --base MODEL)")
        entry = self.store.get(name)
        if entry.kind != "adapter":
            raise InvalidConfig(f"{name!r} is a {entry.kind}, not an adapter")
        if entry.parent not in self.lineage:
            raise InvalidConfig(f"adapter {name!r} was trained on {entry.parent!r}; this server serves "
                                f"{self.variant!r} (made from {' <- '.join(self.lineage)})")
        return entry.path


def check_engine(engine: Any, mode: str) -> None:
    if not hasattr(engine, "adapters"):
        raise InvalidConfig(f"LoRA adapters run on the transformers engine; this server runs {engine.name}")
    if mode != "continuous":
        raise InvalidConfig(f"LoRA adapters run in the continuous batch; this server batches {mode!r} "
                            "(batching: auto or continuous)")
