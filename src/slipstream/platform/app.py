"""The platform's FastAPI app: the store, the job runner, the routes, keys, errors, its OpenAPI schema."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI

from slipstream.platform.jobs import Runner
from slipstream.platform.settings import PlatformSettings
from slipstream.serving.app import error_handlers
from slipstream.serving.auth import key_checker
from slipstream.store import Store


@dataclass
class PlatformState:
    store: Store
    settings: PlatformSettings
    jobs: Runner


def create_platform_app(store: Store, settings: PlatformSettings) -> FastAPI:
    from slipstream.platform.routes import jobs, models

    runner = Runner(store, settings.max_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="slipstream platform", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json")
    app.state.platform = PlatformState(store, settings, runner)
    guarded = [Depends(key_checker(settings.api_keys))]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "jobs_running": len(runner.procs)}

    app.include_router(models.router, dependencies=guarded)
    app.include_router(jobs.router, dependencies=guarded)
    error_handlers(app, max_body_bytes=settings.upload_limit_mb << 20)
    return app
