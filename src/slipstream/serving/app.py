"""The FastAPI app: one engine, one deployment's settings, routes per endpoint.

``create_app(engine, settings)`` wires the pieces: a scheduler chosen for the engine (continuous
batching when it has a stepper, dynamic batching otherwise), the caches, metrics and API keys. The
scheduler's worker thread starts and stops with the app's lifespan.
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
from slipstream.serving.auth import key_checker
from slipstream.serving.caches import Embedder, ExactCache, SemanticCache
from slipstream.serving.errors import ApiError
from slipstream.serving.generation import Service
from slipstream.serving.metrics import Metrics
from slipstream.serving.scheduler import ContinuousScheduler, DynamicScheduler, Scheduler, SequentialScheduler
from slipstream.serving.settings import DeploymentSettings

log = logging.getLogger("slipstream.serving")


@dataclass
class ServerState:
    engine: Any
    settings: DeploymentSettings
    model_name: str
    scheduler: Scheduler
    service: Service
    metrics: Metrics
    created: int


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
                  on_batch=metrics.batch.observe)
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


def create_app(engine: Any, settings: DeploymentSettings, *, model_name: str,
               embedder: Embedder | None = None) -> FastAPI:
    import time

    from slipstream.serving.routes import chat, completions, info

    holder: dict[str, ServerState] = {}

    def live() -> dict[str, Any]:
        st = holder.get("state")
        if st is None:
            return {}
        stepper = getattr(st.scheduler, "stepper", None)
        return {"queue_depth": st.scheduler.queue_depth, "running": len(st.scheduler.running),
                "peak_batch": st.scheduler.peak_batch, **(stepper.stats() if stepper is not None else {})}

    metrics = Metrics(live)
    scheduler = make_scheduler(engine, settings, metrics)
    exact = ExactCache(settings.exact_cache.max_entries) if settings.exact_cache.enabled else None
    semantic = None
    if settings.semantic_cache.enabled:
        if embedder is None:
            from slipstream.serving.embedder import MiniLMEmbedder

            embedder = MiniLMEmbedder(settings.semantic_cache.model)
        semantic = SemanticCache(embedder, settings.semantic_cache.threshold, settings.semantic_cache.max_entries)
    service = Service(engine, scheduler, metrics, exact=exact, semantic=semantic)
    state = ServerState(engine, settings, model_name, scheduler, service, metrics, int(time.time()))
    holder["state"] = state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(title="slipstream", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.slipstream = state
    guarded = [Depends(key_checker(settings.api_keys))]
    app.include_router(info.public)
    app.include_router(info.router, dependencies=guarded)
    app.include_router(completions.router, dependencies=guarded)
    app.include_router(chat.router, dependencies=guarded)
    error_handlers(app)
    return app


def error_handlers(app: FastAPI) -> None:
    """OpenAI-shaped errors for every failure: ApiError, invalid bodies, unknown routes, crashes."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _count(request, exc.status)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            param = param or (loc[0] if loc else None)
            problems.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
        err = ApiError(400, "Invalid request: " + "; ".join(problems), param=param)
        _count(request, 400)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        err = ApiError(exc.status_code, str(exc.detail), type=kind)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        _count(request, 500)
        err = ApiError(500, f"internal error: {exc.__class__.__name__}", type="server_error")
        return JSONResponse(err.body(), status_code=500)


def _count(request: Request, status: int) -> None:
    state: ServerState | None = getattr(request.app.state, "slipstream", None)
    if state is not None and request.url.path.startswith("/v1/"):
        state.metrics.requests.labels(request.url.path, str(status)).inc()
