"""A spec checked against the store: each model's variant found, its engine and options valid, its
claimed optimization true. What a replica needs to load its model travels as a :class:`ReplicaPlan`
(plain data, so Ray can ship it to a worker).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from slipstream.deploy.spec import DeploySpec, ModelSpec
from slipstream.errors import InvalidConfig
from slipstream.store import Store, Variant

# techniques whose checkpoints vLLM loads (compressed-tensors from llm-compressor), by GALE's name for them
VLLM_TECHNIQUES = {"awq", "gptq", "w8a8", "smoothquant", "fp8", "cast"}


@dataclass(frozen=True)
class ReplicaPlan:
    """Everything one replica of one model needs: where the variant is, which engine, which settings."""

    name: str  # served name
    variant: str
    variant_sha256: str
    store_home: str
    engine: str
    device: str | None
    options: dict[str, Any]
    settings: dict[str, Any]  # ModelSettings fields

    def version(self) -> str:
        """Changes exactly when a replica must be replaced (another variant, engine or setting); scaling
        alone never changes it, so Ray Serve adds or removes replicas without restarting the others."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_model(model: ModelSpec, store: Store) -> ReplicaPlan:
    from slipstream.engines.loading import engine_name
    from slipstream.engines.options import options_class

    try:
        variant = store.get(model.variant)
    except Exception as exc:  # noqa: BLE001 - the store's own message names what is missing
        raise InvalidConfig(f"model {model.name!r}: {exc}") from None
    if model.optimization is not None:  # first: a wrong claim explains more than the engine refusing it
        check_optimization(model, variant)
    recommended = store.recommendation(variant.name) or {}  # what a search measured fastest here
    engine = engine_name(variant, model.engine_name or _engine_for(model, variant) or _recommended_engine(
        recommended, variant))
    try:
        options_class(engine).of(model.engine)  # a typo is refused here, not in a replica
        # the spec's own engine options over those the search measured fastest on this engine (prompt lookup)
        measured = recommended.get("engine_options") if recommended.get("engine") == engine else None
        options = dict(measured or {}) | dict(model.engine)
    except Exception as exc:  # noqa: BLE001
        raise InvalidConfig(f"model {model.name!r}: {exc}") from None
    if model.adapters:
        from slipstream.serving.adapters import AdapterCatalog

        if engine != "transformers":
            raise InvalidConfig(f"model {model.name!r}: LoRA adapters run on the transformers engine, not {engine}")
        catalog = AdapterCatalog(store, variant.name)
        for a in model.adapters:
            try:
                catalog.resolve(a.name)
            except InvalidConfig as exc:
                raise InvalidConfig(f"model {model.name!r}: {exc}") from None
    return ReplicaPlan(name=model.name, variant=variant.name, variant_sha256=variant.sha256,
                       store_home=str(store.home), engine=engine, device=model.device, options=options,
                       settings=_with_batching(model.serving_settings(), recommended))


def plan_spec(spec: DeploySpec, store: Store) -> list[ReplicaPlan]:
    return [plan_model(m, store) for m in spec.models]


def _recommended_engine(recommended: dict, variant: Variant) -> str | None:
    from slipstream.engines.loading import engines_for
    from slipstream.models.tasks import task_of

    engine = recommended.get("engine")
    return engine if engine in engines_for(variant.format, task_of(variant)) else None


def _with_batching(settings: dict, recommended: dict) -> dict:
    """A search's recommended batching where the spec leaves it at auto. Threads stay the scaling section's:
    replicas times threads is the layout's choice (docs/deploy.md)."""
    if settings.get("batching", "auto") == "auto" and recommended.get("batching"):
        return settings | {"batching": recommended["batching"]}
    return settings


def _engine_for(model: ModelSpec, variant: Variant) -> str | None:
    if model.optimization is not None and model.optimization.type.lower() == "vllm":
        return "vllm"
    return None


def check_optimization(model: ModelSpec, variant: Variant) -> None:
    """GALE's optimizationInfo must describe the variant as the store records it."""
    opt = model.optimization
    assert opt is not None
    technique = dict(variant.technique or {})
    name = str(technique.get("technique", "none")).lower()
    claimed = opt.type.lower()
    if claimed == "ctranslate2":
        ok = variant.format == "ctranslate2"
    elif claimed == "vllm":
        ok = variant.format == "hf" and name in VLLM_TECHNIQUES
    else:
        ok = claimed == name
    if not ok:
        raise InvalidConfig(f"model {model.name!r}: optimizationType {opt.type!r} does not match variant "
                            f"{variant.name!r} ({variant.format}, technique {name})")
    if opt.quantization is not None:
        known = {str(v).lower() for k, v in technique.items() if k in ("technique", "quantization", "scheme",
                                                                        "quant_type", "dtype")}
        if "bits" in technique:
            known.add(f"w{technique['bits']}a16")
        if opt.quantization.lower() not in known:
            raise InvalidConfig(f"model {model.name!r}: quantizationType {opt.quantization!r} does not match "
                                f"variant {variant.name!r} (it records {', '.join(sorted(known)) or 'none'})")
