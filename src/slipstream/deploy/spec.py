"""A deployment spec: the models behind one endpoint, each with its serving settings and its scaling.

A spec extends ``slipstream serve``'s settings (:class:`~slipstream.serving.settings.ModelSettings`, one per
model) with what Ray Serve needs to run replicas of it (:class:`Scaling`, named after Ray Serve's own
``autoscaling_config`` and deployment options). Unknown keys are refused with the key named.

The same loader takes GALE's deploy body (``hyperParameters``, ``scalingParameters``, ``optimizationInfo``,
camelCase, GALE's ranges) and maps it onto these fields: see :mod:`slipstream.deploy.gale`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slipstream.errors import InvalidConfig
from slipstream.serving.settings import ModelSettings, describe, read_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scaling(_Strict):
    """Replicas of one model and how they follow load (Ray Serve's autoscaling_config and deployment options).

    With ``min_replicas == max_replicas`` the model runs that many replicas and autoscaling is off.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: Optional[int] = Field(None, ge=0)  # default: min_replicas
    # Ray Serve adds replicas when requests in flight per replica stay above this
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)  # load must stay high this long before a replica is added
    downscale_delay_s: float = Field(600.0, ge=0)  # ... and low this long before one is removed
    # how often replicas report their load, and over how long the autoscaler averages it
    metrics_interval_s: float = Field(10.0, gt=0)
    look_back_period_s: float = Field(30.0, gt=0)
    # requests one replica takes at once (default: the model's max_batch_size: a replica holds no queue
    # of its own); more wait at the endpoint, up to max_queued_requests per endpoint replica, then 429
    max_ongoing_requests: Optional[int] = Field(None, ge=1)
    max_queued_requests: int = Field(64, ge=0)
    cpus_per_replica: float = Field(1.0, gt=0)  # Ray CPUs reserved per replica (fractions allowed)
    threads_per_replica: Optional[int] = Field(None, ge=1)  # engine threads (default: cpus_per_replica, at least 1)

    @model_validator(mode="after")
    def _ordered(self) -> "Scaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        init = self.initial_replicas
        if init is not None and not self.min_replicas <= init <= self.max_replicas:
            raise ValueError(f"initial_replicas ({init}) is outside [min_replicas, max_replicas] "
                             f"= [{self.min_replicas}, {self.max_replicas}]")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas != self.max_replicas

    def threads(self) -> int:
        return self.threads_per_replica or max(1, int(self.cpus_per_replica))


class Optimization(_Strict):
    """What the deployer believes the variant is (GALE's optimizationInfo); checked against the store."""

    type: str  # "CTranslate2", "vLLM", or any slipstream technique name
    quantization: Optional[str] = None


class ModelSpec(ModelSettings):
    """One model behind the endpoint: a store variant, the name clients ask for, how it is served and scaled."""

    name: str  # the `model` clients send; /v1/models lists it
    variant: str  # a model or variant in the store
    engine_name: Optional[str] = None  # the engine that runs it (default: the variant format's first)
    device: Optional[str] = None
    scaling: Scaling = Field(default_factory=Scaling)
    optimization: Optional[Optimization] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model needs a non-empty name")
        return value

    def serving_settings(self) -> dict[str, Any]:
        """The ModelSettings part, as ``slipstream serve`` takes it (threads from the scaling section)."""
        data = self.model_dump(include=set(ModelSettings.model_fields))
        data["threads"] = self.threads or self.scaling.threads()
        return data


class DeploySpec(_Strict):
    """The whole endpoint: where it listens, its keys, and the models behind it."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, repr=False)  # never printed
    grace_period_s: float = Field(30.0, ge=0)  # a replica being replaced finishes its requests within this
    max_body_bytes: int = Field(2_000_000, ge=1024)  # a larger request body gets 413 at the endpoint
    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "DeploySpec":
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"two models are named {m.name!r}; each model's name must be unique")
            seen.add(m.name)
        for m in self.models:  # a request's model names a model or an adapter: one of them only
            for a in m.adapters:
                if a.name in seen:
                    raise ValueError(f"adapter {a.name!r} of model {m.name!r}: that name is taken by another "
                                     "model or adapter")
                seen.add(a.name)
        return self

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise InvalidConfig(f"the deployment has no model {name!r}; it has: {', '.join(m.name for m in self.models)}")

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "DeploySpec":
        """A spec from a mapping: slipstream's own keys, or GALE's deploy body (camelCase)."""
        from slipstream.deploy.gale import is_gale, from_gale

        if is_gale(data):
            data = from_gale(data)
        data = _with_suggested_scaling(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidConfig(f"invalid deployment spec: {describe(exc)}") from None

    @classmethod
    def load(cls, path: Path | str) -> "DeploySpec":
        return cls.parse(read_mapping(Path(path)))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _with_suggested_scaling(data: dict[str, Any]) -> dict[str, Any]:
    models = data.get("models")
    if not isinstance(models, list):
        return data
    bare = [m for m in models if isinstance(m, dict) and "scaling" not in m]
    if not bare:
        return data
    # the cores the other models' first replicas do not already reserve
    reserved = 0.0
    for m in models:
        if isinstance(m, dict) and isinstance(m.get("scaling"), dict):
            sc = m["scaling"]
            first = sc.get("initial_replicas") or sc.get("min_replicas", 1)
            reserved += float(sc.get("cpus_per_replica", 1)) * float(first)
    cores = max(1, int((os.cpu_count() or 1) - reserved))
    layout = suggested_scaling(cores, models=len(bare)).model_dump()
    return {**data, "models": [{**m, "scaling": layout} if isinstance(m, dict) and "scaling" not in m else m
                               for m in models]}


def suggested_scaling(cpus: int | None = None, models: int = 1) -> Scaling:
    """The layout a model gets when its spec leaves ``scaling`` out: one replica per core (the cores shared
    among the ``models`` that leave it out), each reserving one Ray CPU and running one engine thread.

    Replicas of one thread beat one process of all threads on a small machine: on 2 cores at 16 streams,
    2 replicas x 1 thread served 1.35x the tokens/s of one `slipstream serve` with 2 threads
    (benchmarks/serving/ray_layouts.py, docs/deploy.md#layouts-measured).
    """
    cpus = cpus or os.cpu_count() or 1
    replicas = max(1, cpus // max(1, models))
    return Scaling(min_replicas=replicas, max_replicas=replicas, cpus_per_replica=1, threads_per_replica=1)
