"""slipstream: make transformer models fast and cheap to serve, and prove what each speed-up costs.

The public Python API mirrors the CLI. Heavy libraries (torch, transformers, ctranslate2) are
imported only when an operation needs them, so ``import slipstream`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "import_model": "slipstream.models.intake",
    "optimize": "slipstream.pipeline",
    "evaluate": "slipstream.evaluation.run",
    "bench": "slipstream.benchmark.run",
    "compare": "slipstream.comparison",
    "open_engine": "slipstream.engines.loading",
    "Store": "slipstream.store",
    "SamplingParams": "slipstream.engines.protocol",
}

__all__ = sorted(_API) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from slipstream.benchmark.run import bench
    from slipstream.comparison import compare
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.evaluation.run import evaluate
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'slipstream' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
