"""GALE's deploy body, as its API takes it, mapped onto a slipstream deployment spec.

GALE deploys an optimized model with ``hyperParameters`` (temperature 0-2, maxTokens, topP 0-1, topK 1-100,
stopSequence), ``scalingParameters`` (maxBatchSize 1-256, minReplicas 1-10, maxReplicas 1-50, scaleUpDelay,
scaleDownDelay) and ``optimizationInfo`` (optimizationType CTranslate2 or vLLM, quantizationType). GALE
names the model in the request's URL; here the body names it with ``modelId`` (a store variant) and,
optionally, ``deploymentName`` (the name clients send; default: the modelId). GALE's docs do not give the
delays' unit: they are read as seconds, as Ray Serve's ``upscale_delay_s`` and ``downscale_delay_s`` are.

A body may hold one model (the fields at the top level) or several (``models: [body, ...]``) with the
endpoint's ``host``, ``port``, ``apiKeys`` beside them.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipstream.errors import InvalidConfig
from slipstream.serving.settings import describe

GALE_KEYS = {"hyperParameters", "scalingParameters", "optimizationInfo", "modelId", "deploymentName"}


class _Camel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HyperParameters(_Camel):
    temperature: Optional[float] = Field(None, ge=0, le=2)
    maxTokens: Optional[int] = Field(None, ge=1, le=32768)
    topP: Optional[float] = Field(None, ge=0, le=1)
    topK: Optional[int] = Field(None, ge=1, le=100)
    stopSequence: Optional[Union[str, list[str]]] = None


class ScalingParameters(_Camel):
    maxBatchSize: Optional[int] = Field(None, ge=1, le=256)
    minReplicas: Optional[int] = Field(None, ge=1, le=10)
    maxReplicas: Optional[int] = Field(None, ge=1, le=50)
    scaleUpDelay: Optional[float] = Field(None, ge=0)  # seconds
    scaleDownDelay: Optional[float] = Field(None, ge=0)  # seconds

    @model_validator(mode="after")
    def _ordered(self) -> "ScalingParameters":
        if self.minReplicas and self.maxReplicas and self.minReplicas > self.maxReplicas:
            raise ValueError(f"minReplicas ({self.minReplicas}) is above maxReplicas ({self.maxReplicas})")
        return self


class OptimizationInfo(_Camel):
    optimizationType: Literal["CTranslate2", "vLLM"]
    quantizationType: Optional[str] = None


class GaleModel(_Camel):
    modelId: str
    deploymentName: Optional[str] = None
    hyperParameters: HyperParameters = Field(default_factory=HyperParameters)
    scalingParameters: ScalingParameters = Field(default_factory=ScalingParameters)
    optimizationInfo: Optional[OptimizationInfo] = None


class GaleBody(_Camel):
    host: Optional[str] = None
    port: Optional[int] = None
    apiKeys: Optional[list[str]] = None
    models: list[GaleModel] = Field(min_length=1)


def is_gale(data: dict[str, Any]) -> bool:
    if GALE_KEYS & set(data):
        return True
    models = data.get("models")
    return isinstance(models, list) and any(isinstance(m, dict) and GALE_KEYS & set(m) for m in models)


def from_gale(data: dict[str, Any]) -> dict[str, Any]:
    """A slipstream spec mapping from GALE's body; out-of-range or unknown fields are refused, named."""
    if "models" not in data:
        endpoint = {k: data[k] for k in ("host", "port", "apiKeys") if k in data}
        data = {**endpoint, "models": [{k: v for k, v in data.items() if k not in endpoint}]}
    try:
        body = GaleBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(f"invalid GALE deploy body: {describe(exc)}") from None
    spec: dict[str, Any] = {"models": [_model(m) for m in body.models]}
    for ours, theirs in (("host", body.host), ("port", body.port), ("api_keys", body.apiKeys)):
        if theirs is not None:
            spec[ours] = theirs
    return spec


def _model(m: GaleModel) -> dict[str, Any]:
    h, s = m.hyperParameters, m.scalingParameters
    defaults: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if h.temperature is not None:
        defaults["temperature"] = h.temperature
    if h.maxTokens is not None:  # GALE's maxTokens bounds every answer: the default and the limit
        defaults["max_tokens"] = limits["max_tokens"] = h.maxTokens
    if h.topP is not None:
        if h.topP == 0:  # nothing survives a nucleus of 0: the most likely token only
            defaults["top_k"] = 1
        else:
            defaults["top_p"] = h.topP
    if h.topK is not None:
        defaults["top_k"] = h.topK
    if h.stopSequence:
        defaults["stop"] = [h.stopSequence] if isinstance(h.stopSequence, str) else list(h.stopSequence)
    out: dict[str, Any] = {"name": m.deploymentName or m.modelId, "variant": m.modelId}
    if defaults:
        out["defaults"] = defaults
    if limits:
        out["limits"] = limits
    if s.maxBatchSize is not None:
        out["max_batch_size"] = s.maxBatchSize
    scaling: dict[str, Any] = {}
    if s.minReplicas is not None:
        scaling["min_replicas"] = s.minReplicas
        scaling["max_replicas"] = max(s.minReplicas, s.maxReplicas or s.minReplicas)
    if s.maxReplicas is not None:
        scaling["max_replicas"] = s.maxReplicas
    if s.scaleUpDelay is not None:
        scaling["upscale_delay_s"] = s.scaleUpDelay
    if s.scaleDownDelay is not None:
        scaling["downscale_delay_s"] = s.scaleDownDelay
    if scaling:
        out["scaling"] = scaling
    if m.optimizationInfo is not None:
        out["optimization"] = {"type": m.optimizationInfo.optimizationType,
                               "quantization": m.optimizationInfo.quantizationType}
    return out
