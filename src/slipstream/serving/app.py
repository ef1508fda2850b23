"""The FastAPI app: one engine, one deployment's settings, routes per endpoint.

``create_app(engine, settings)`` wires the pieces: a scheduler chosen for the engine (continuous
batching when it has a stepper, dynamic batching otherwise; an encoder's inputs batched for
/v1/embeddings), the caches, metrics and API keys. The scheduler's worker thread starts and stops with
the app's lifespan.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slipstream.engines.stepping import can_step
from slipstream.errors import InvalidConfig
from slipstream.serving import openapi
from slipstream.serving.auth import key_checker
from slipstream.serving.caches import Embedder, ExactCache, SemanticCache
from slipstream.serving.embeddings import EmbeddingService
from slipstream.serving.errors import ApiError
from slipstream.serving.generation import Service
from slipstream.serving.metrics import Metrics
from slipstream.serving.scheduler import (ContinuousScheduler, DynamicScheduler, EmbeddingScheduler, Scheduler,
                                          SequentialScheduler)
from slipstream.serving.settings import DeploymentSettings

log = logging.getLogger("slipstream.serving")


@dataclass
class ServerState:
    engine: Any
    settings: DeploymentSettings
    model_name: str
    scheduler: Scheduler
    service: Any  # a Service (generation), or an EmbeddingService (an encoder)
    metrics: Metrics
    created: int
    adapters: Any = None  # an AdapterCatalog: the adapters this server may load at run time (None: none)


def batching_mode(engine: Any, settings: DeploymentSettings) -> str:
    mode = settings.batching
    if mode == "auto":
        return "continuous" if can_step(engine) else "dynamic"
    if mode == "continuous" and not can_step(engine):
        raise InvalidConfig(f"the {engine.name} engine has no iteration-level (step) interface, so it cannot do "
                            "continuous batching; use batching 'dynamic' (or 'auto')")
    return mode


def kv_cache_dtype(engine: Any, settings: DeploymentSettings) -> str:
    """The continuous batch's key/value cache dtype: the deployment's ``kv_cache_dtype``, else the engine's
    option of that name ("auto": the model's dtype)."""
    if settings.kv_cache_dtype != "auto":
        return settings.kv_cache_dtype
    return getattr(getattr(engine, "options", None), "kv_cache_dtype", "auto")


def make_scheduler(engine: Any, settings: DeploymentSettings, metrics: Metrics) -> Scheduler:
    common = dict(max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                  max_queued_tokens=settings.max_queued_tokens, on_batch=metrics.batch.observe)
    mode = batching_mode(engine, settings)
    if mode == "continuous":
        prefix = settings.prefix_cache.max_tokens if settings.prefix_cache.enabled else 0
        kv = {} if settings.kv_cache_dtype == "auto" else {"kv_cache_dtype": settings.kv_cache_dtype}
        stepper = engine.stepper(prefix_cache_tokens=prefix, prefill_tokens=settings.prefill_tokens, **kv)
        return ContinuousScheduler(stepper, on_step=metrics.step.observe, **common)
    if mode == "dynamic":
        return DynamicScheduler(engine, window_s=settings.batch_window_ms / 1000,
                                prompt_spread=settings.max_prompt_spread, **common)
    return SequentialScheduler(engine, **common)


def task_of(engine: Any) -> str:
    """What the engine's model does: "embedding" or "classification" for an encoder
    (:class:`~slipstream.engines.protocol.Encoder`), else it generates ("causal-lm", "seq2seq")."""
    return getattr(engine, "task", "causal-lm")


def is_encoder(engine: Any) -> bool:
    return task_of(engine) in ("embedding", "classification")


def make_embedding_scheduler(engine: Any, settings: DeploymentSettings, metrics: Metrics) -> Scheduler:
    """An encoder's scheduler: dynamic batching of inputs (``batching: sequential``: one input at a time)."""
    if task_of(engine) != "embedding":
        raise InvalidConfig(f"a {task_of(engine)} model cannot be served yet: the server answers embedding "
                            "models (/v1/embeddings) and generative ones")
    if settings.batching == "continuous":
        raise InvalidConfig("an encoder runs whole batches: use batching 'auto', 'dynamic' or 'sequential'")
    if settings.adapters:
        raise InvalidConfig("LoRA adapters are served over generative models only, not an embedding model")
    return EmbeddingScheduler(engine, window_s=settings.batch_window_ms / 1000,
                              max_batch_size=1 if settings.batching == "sequential" else settings.max_batch_size,
                              max_queue=settings.max_queue, max_queued_tokens=settings.max_queued_tokens,
                              on_batch=metrics.batch.observe)


def create_app(engine: Any, settings: DeploymentSettings, *, model_name: str,
               embedder: Embedder | None = None, adapters: Any = None) -> FastAPI:
    """``adapters``: an :class:`~slipstream.serving.adapters.AdapterCatalog` for LoRA adapters over the
    model (the settings' ``adapters`` loaded at start, others through /v1/adapters). An encoder (an embedding
    model) is served on /v1/embeddings instead of completions and chat."""
    import time

    from slipstream.serving.routes import adapters as adapter_routes
    from slipstream.serving.routes import chat, completions, embeddings, info

    holder: dict[str, ServerState] = {}

    def live() -> dict[str, Any]:
        st = holder.get("state")
        if st is None:
            return {}
        stepper = getattr(st.scheduler, "stepper", None)
        return {"queue_depth": st.scheduler.queue_depth, "running": len(st.scheduler.running),
                "peak_batch": st.scheduler.peak_batch, **(stepper.stats() if stepper is not None else {})}

    metrics = Metrics(live)
    encoder = is_encoder(engine)
    if encoder:
        scheduler = make_embedding_scheduler(engine, settings, metrics)
        service: Any = EmbeddingService(engine, scheduler, metrics, deadline_s=settings.deadline_s)
        adapters = None
    else:
        scheduler, service, adapters = _generation(engine, settings, metrics, embedder, adapters)
    state = ServerState(engine, settings, model_name, scheduler, service, metrics, int(time.time()), adapters)
    holder["state"] = state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    # FastAPI's own /openapi.json route would be open to all: the schema is served below, behind the key
    app = FastAPI(title="slipstream", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.state.slipstream = state
    guarded = [Depends(key_checker(settings.api_keys))]
    app.include_router(info.public)
    app.include_router(info.router, dependencies=guarded)
    generation_paths = ["/v1/completions", "/v1/chat/completions"]
    bounds = None
    if encoder:
        app.include_router(embeddings.router, dependencies=guarded)
        app.include_router(embeddings.wrong_task(generation_paths, task_of(engine), "/v1/embeddings"),
                           dependencies=guarded)
        bounds = openapi.EmbeddingBounds(max_inputs=scheduler.max_batch_size + scheduler.max_queue,
                                         max_tokens=engine.max_context, dimensions=engine.dimensions,
                                         matryoshka=settings.embeddings.matryoshka)
    else:
        app.include_router(completions.router, dependencies=guarded)
        app.include_router(chat.router, dependencies=guarded)
        app.include_router(embeddings.wrong_task(["/v1/embeddings"], task_of(engine), " and ".join(generation_paths)),
                           dependencies=guarded)
    if adapters is not None:  # the engine and its batching can run adapters
        app.include_router(adapter_routes.router, dependencies=guarded)
    if settings.openapi:
        keyed = any(k for k in settings.api_keys)

        @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
        async def openapi_json() -> JSONResponse:
            return JSONResponse(openapi.schema(app, keyed=keyed, limits=settings.limits,
                                               vocab_size=engine.tokenizer.vocab_size, embeddings=bounds))

    error_handlers(app, settings.max_body_bytes)
    return app


def _generation(engine: Any, settings: DeploymentSettings, metrics: Metrics, embedder: Embedder | None,
                adapters: Any) -> tuple[Scheduler, Service, Any]:
    """A generative model's scheduler and service, and the adapters it can serve (None: none)."""
    if settings.adapters and adapters is None:
        raise InvalidConfig("adapters are listed but this server has no store to load them from")
    if adapters is not None and (settings.adapters or hasattr(engine, "adapters")):
        from slipstream.serving.adapters import check_engine

        if settings.adapters:
            check_engine(engine, batching_mode(engine, settings))
        from slipstream.serving.adapters import can_serve

        if can_serve(engine, batching_mode(engine, settings)) and (
                settings.adapters or getattr(engine, "name", "") != "vllm" or engine.options.max_loras):
            bank = engine.adapters(settings.max_loras)
            for a in settings.adapters:
                try:
                    bank.register(a.name, adapters.resolve(a.name), pinned=a.pinned)
                except (ValueError, OSError) as exc:
                    raise InvalidConfig(f"adapter {a.name!r}: {exc}") from None
        else:
            adapters = None  # nothing here can run one
    scheduler = make_scheduler(engine, settings, metrics)
    exact = ExactCache(settings.exact_cache.max_entries) if settings.exact_cache.enabled else None
    semantic = None
    if settings.semantic_cache.enabled:
        if embedder is None:
            from slipstream.serving.embedder import MiniLMEmbedder

            embedder = MiniLMEmbedder(settings.semantic_cache.model)
        semantic = SemanticCache(embedder, settings.semantic_cache.threshold, settings.semantic_cache.max_entries)
    service = Service(engine, scheduler, metrics, exact=exact, semantic=semantic, deadline_s=settings.deadline_s)
    return scheduler, service, adapters


class BodyLimit:
    """A 413 for a request body above ``limit`` bytes: at the first read when its Content-Length says so, else
    as soon as that many bytes have arrived (a chunked body has no length), before anything parses it.

    (FastAPI's own ``max_body_size`` replaces the app's answer with a plain-text 413 whenever the declared
    length is too large; this one is raised where the body is read, so the error handler shapes it.)"""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((int(v) for k, v in scope["headers"] if k == b"content-length" and v.isdigit()), 0)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            # the body is left unread, so the connection cannot carry another request: close it
            too_large = StarletteHTTPException(413, headers={"Connection": "close"})
            if declared > self.limit:
                raise too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


def _version() -> str:
    """slipstream's version for the schema (from the installed package: this layer may not import the api's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slipstream")
    except PackageNotFoundError:
        return "0"


def error_handlers(app: FastAPI, max_body_bytes: int | None = None) -> None:
    """OpenAI-shaped errors for every failure: ApiError, invalid bodies, unknown routes, crashes
    (``max_body_bytes``: the BodyLimit in front of the app, named in its 413)."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _count(request, exc.status)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # FastAPI locates it at ("body", 0): the body as a whole
                problems.append(f"the body is not valid JSON ({(e.get('ctx') or {}).get('error', e.get('msg'))})")
                continue
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            param = param or (loc[0] if loc else None)
            problems.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
        err = ApiError(400, "Invalid request: " + "; ".join(problems), param=param)
        _count(request, 400)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = str(exc.detail)
        if exc.status_code == 413 and max_body_bytes is not None:  # BodyLimit
            message = (f"The request body is larger than this server's limit of {max_body_bytes} bytes "
                       "(max_body_bytes).")
        elif message == "There was an error parsing the body" and exc.__cause__ is not None:  # FastAPI's: say why
            message = f"the body is not valid JSON ({exc.__cause__.__class__.__name__}: {exc.__cause__})"[:300]
        err = ApiError(exc.status_code, message, type=kind, code="request_too_large" if exc.status_code == 413
                       else None)
        _count(request, exc.status_code)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        _count(request, 500)
        err = ApiError(500, f"internal error: {exc.__class__.__name__}", type="server_error")
        return JSONResponse(err.body(), status_code=500)


def _count(request: Request, status: int) -> None:
    """Count an answer under its route's path: only routes that exist, so unknown paths add no series."""
    state: ServerState | None = getattr(request.app.state, "slipstream", None)
    path = getattr(request.scope.get("route"), "path", "")
    if state is not None and path.startswith("/v1/"):
        state.metrics.requests.labels(path, str(status)).inc()
